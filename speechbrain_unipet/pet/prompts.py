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
    """One set of ``length`` prompt vectors per prompted Transformer layer.

    Deep Speaker Prompting / IPET "embedding prompts": layer ``l`` sees
    ``P_l`` prepended to its input, and the outputs at the prompt positions
    are dropped, so the next layer gets fresh prompts and the sequence
    length never changes. Because those outputs are dropped, the encoder
    feeds the prompts to the layer's attention as extra keys and values
    only (the same result, without running queries and the FFN over prompt
    positions); layers not listed in ``pet_layers`` see no prompts.

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
    >>> prompts.tokens(1).shape
    torch.Size([1, 4, 8])
    """

    def __init__(self, num_layers, length, dim, init="xavier"):
        super().__init__()
        if length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {length}")
        self.length = length
        self.prompts = nn.Parameter(torch.empty(num_layers, length, dim))
        for i in range(num_layers):
            _init_prompt(self.prompts.data[i], init)

    def tokens(self, index):
        """Prompts of prompted layer ``index``, [1, length, dim]."""
        return self.prompts[index].unsqueeze(0)


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
