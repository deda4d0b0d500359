"""Learnable prompt tokens for speech encoders (shallow and deep).

PEFT's prompt methods need ``input_ids``/word embeddings and do not apply to
models fed with waveforms, so prompting is implemented here. The encoder
loop decides where the tokens go; these modules only hold and emit them.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch
from torch import nn

PROMPT_INITS = ("xavier", "normal", "zeros")


def _init_prompt(tensor, init):
    if init == "xavier":
        nn.init.xavier_uniform_(tensor)
    elif init == "normal":
        nn.init.normal_(tensor, std=0.02)
    elif init == "zeros":
        nn.init.zeros_(tensor)
    else:
        raise ValueError(
            f"Unknown prompt init '{init}'. Valid: {list(PROMPT_INITS)}"
        )


class DeepPrompts(nn.Module):
    """One set of ``length`` prompt vectors per Transformer layer.

    Deep Speaker Prompting / IPET "embedding prompts": before layer ``l`` the
    first ``length`` positions of the sequence are *replaced* by ``P_l``
    (they are prepended before the first prompted layer), so the sequence
    length stays ``length + T`` through the stack and prompts never
    accumulate.

    Arguments
    ---------
    num_layers : int
        Number of prompted layers.
    length : int
        Prompt tokens per layer ``N_p``.
    dim : int
        Model dimension.
    init : str
        ``xavier`` (IPET), ``normal`` or ``zeros``.

    Example
    -------
    >>> prompts = DeepPrompts(num_layers=3, length=4, dim=8)
    >>> prompts.expand(1, batch_size=2).shape
    torch.Size([2, 4, 8])
    """

    def __init__(self, num_layers, length, dim, init="xavier"):
        super().__init__()
        if length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {length}")
        self.length = length
        self.prompts = nn.Parameter(torch.empty(num_layers, length, dim))
        for i in range(num_layers):
            _init_prompt(self.prompts.data[i], init)

    def expand(self, index, batch_size):
        """Prompts of prompted layer ``index`` repeated over the batch."""
        return self.prompts[index].unsqueeze(0).expand(batch_size, -1, -1)


class ShallowPrompt(nn.Module):
    """``length`` prompt vectors prepended once, at the encoder input.

    This is the "preinput" prompt of Chen et al. (2022): the tokens go in
    front of the projected CNN features, before the positional convolution,
    and travel through every layer.

    Arguments
    ---------
    length : int
        Number of prompt tokens.
    dim : int
        Model dimension.
    init : str
        ``xavier``, ``normal`` or ``zeros``.

    Example
    -------
    >>> ShallowPrompt(5, 8).expand(3).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, length, dim, init="xavier"):
        super().__init__()
        if length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {length}")
        self.length = length
        self.prompt = nn.Parameter(torch.empty(length, dim))
        _init_prompt(self.prompt.data, init)

    def expand(self, batch_size):
        """Prompt tokens repeated over the batch: [B, length, dim]."""
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)
