"""Learnable prompt tokens for speech encoders (shallow and deep), and the
PET components that place them.

PEFT's prompt methods need ``input_ids``/word embeddings and do not apply to
models fed with waveforms, so prompting is implemented here.

Authors
 * speechbrain-unipet contributors 2026
"""

from dataclasses import dataclass

import torch
from torch import nn

from .component import (
    ComponentOptions,
    PETComponent,
    option,
    pet_layers_option,
    register_component,
    select_layers,
)

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


def _prompt_length():
    return option(
        16, "prompt tokens per prompted layer (N_p)", "int", minimum=1
    )


def _prompt_init():
    return option(
        "xavier", "xavier | normal | zeros", "str", choices=PROMPT_INITS
    )


@register_component
class DeepPromptComponent(PETComponent):
    """Deep Speaker Prompting: fresh prompts before every PET layer, fed to
    its attention as extra keys and values (see ``DeepPrompts``). Child:
    ``deep_prompt``.

    Without autograd (inference) the prompts and the frozen projections are
    constants, so their keys and values are computed once and reused until
    one of those tensors changes. A UniPET gate is applied to the cached,
    gate-free part (``SSLBackbone.prefix_kv_basis``), exactly, on post-LN
    and pre-LN layers alike.

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : DeepPromptComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "deep_prompt"
    branch = "prompt"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the deep prompts."""

        prompt_length: int = _prompt_length()
        prompt_init: str = _prompt_init()
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        layers = select_layers(options.pet_layers, backbone.num_layers)
        self.rows = {layer: row for row, layer in enumerate(layers)}
        self.deep_prompt = DeepPrompts(
            len(layers),
            options.prompt_length,
            backbone.hidden_size,
            options.prompt_init,
        )
        self._kv_cache = {}

    @property
    def prefix_length(self):
        """Prompt tokens a prompted layer attends to."""
        return self.deep_prompt.length

    def prefix_kv(self, layer, x, backbone):
        """Keys and values of this layer's (gated) prompts, or None."""
        row = self.rows.get(layer.index)
        if row is None:
            return None
        prompts = self.deep_prompt.tokens(row).to(x.dtype)
        gate = layer.gates.get(self.branch)
        if torch.is_grad_enabled() or torch.compiler.is_exporting():
            # (An exported graph computes them: it holds no cache.)
            return backbone.prefix_kv(layer.index, prompts, gate)
        # In-place writes (an optimiser step, load_state_dict) bump a
        # tensor's version; merge_lora replaces the tensor; .to() and
        # `.data =` swap its storage. The entry holds the tensors and their
        # storages alive, so that no other tensor can take their id/address.
        tensors = [self.deep_prompt.prompts]
        tensors += backbone.prefix_kv_parameters(layer.index)
        device = prompts.device.type
        key = (
            prompts.dtype,
            torch.get_autocast_dtype(device)
            if torch.is_autocast_enabled(device)
            else None,
            tuple((id(t), t._version, t.data_ptr()) for t in tensors),
        )
        cached = self._kv_cache.get(layer.index)
        if cached is None or cached[0] != key:
            held = [(t, t.detach()) for t in tensors]
            kv = backbone.prefix_kv_basis(layer.index, prompts)
            cached = (key, held, kv)
            self._kv_cache[layer.index] = cached
        return backbone.scale_prefix_kv(cached[2], gate)


@register_component
class ShallowPromptComponent(PETComponent):
    """Shallow prompt: tokens prepended once to the projected CNN features,
    before the positional convolution (Chen et al. 2022, "preinput"); their
    outputs are dropped from every hidden state. Child: ``shallow_prompt``.

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : ShallowPromptComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "shallow_prompt"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the shallow prompt."""

        prompt_length: int = _prompt_length()
        prompt_init: str = _prompt_init()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        self.shallow_prompt = ShallowPrompt(
            options.prompt_length, backbone.hidden_size, options.prompt_init
        )

    def input_tokens(self, batch_size, dtype):
        """The prompt tokens [B, P, D]."""
        return self.shallow_prompt.expand(batch_size).to(dtype)
