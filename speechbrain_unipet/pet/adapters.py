"""Bottleneck adapters (parallel or sequential) and AdapterBias, and the
PET components that place them: Inner adapters, Inter adapters, Houlsby
adapters and AdapterBias.

These modules compute a *delta* that is added to a sublayer's output by a
hook installed for each layer call, so the HuggingFace module tree (and its
state dict) stays untouched.

Authors
 * speechbrain-unipet contributors 2026
"""

import math
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

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _activation(name):
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"Unknown adapter activation '{name}'. "
            f"Valid choices: {sorted(ACTIVATIONS)}"
        ) from None


class BottleneckAdapter(nn.Module):
    """Down-project, activate, up-project: ``s * up(drop(act(down(x))))``.

    The module returns only the delta; the caller adds it to the residual
    stream. With ``init="zero_up"`` (the LoRA-style init of the IPET and
    He et al. parallel adapters) the delta is exactly zero at start, so the
    adapted model starts as the pretrained one.

    Arguments
    ---------
    input_size : int
        Feature dimension ``d``.
    bottleneck : int
        Bottleneck dimension ``r``.
    scale : float
        Fixed output scale ``s`` (IPET uses 0.1).
    activation : str
        One of ``relu``, ``gelu``, ``silu``.
    dropout : float
        Dropout on the bottleneck activations.
    init : str
        ``zero_up`` (down: kaiming-uniform, up: zeros) or ``normal``
        (both N(0, 0.02), as fairseq's ``init_bert_params``; not a no-op).
    learnable_scale : bool
        If True, ``s`` is a trainable scalar initialised to ``scale``.

    Example
    -------
    >>> adapter = BottleneckAdapter(16, 4)
    >>> x = torch.randn(2, 5, 16)
    >>> adapter(x).abs().max().item()
    0.0
    """

    def __init__(
        self,
        input_size,
        bottleneck,
        scale=1.0,
        activation="relu",
        dropout=0.0,
        init="zero_up",
        learnable_scale=False,
    ):
        super().__init__()
        if bottleneck < 1:
            raise ValueError(
                f"Adapter bottleneck must be >= 1, got {bottleneck}"
            )
        self.down = nn.Linear(input_size, bottleneck)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, input_size)
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer(
                "scale", torch.tensor(float(scale)), persistent=False
            )
        self.reset_parameters(init)

    def reset_parameters(self, init="zero_up"):
        """Initialise the weights (see the class docstring)."""
        if init == "zero_up":
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        elif init == "normal":
            for lin in (self.down, self.up):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        else:
            raise ValueError(
                f"Unknown adapter init '{init}'. Valid: ['zero_up', 'normal']"
            )

    def forward(self, x):
        """Returns the adapter delta for ``x`` (last dimension ``d``)."""
        return self._unscaled(x) * self.scale

    def _unscaled(self, x):
        return self.up(self.dropout(self.act(self.down(x))))

    def add_to(self, residual, x, gate=None):
        """``residual + gate * forward(x)``, the way the encoder uses it.

        The scale and the gate meet the up-projection's output in one
        ``addcmul`` instead of three passes over [B, T, d] (scale, gate,
        add): a measurable share of a small adapter's cost.

        Arguments
        ---------
        residual : torch.Tensor
            What the delta is added to, shaped like ``x``.
        x : torch.Tensor
            Adapter input [B, ..., d].
        gate : torch.Tensor or None
            Per-utterance factor [B] (UniPET's gates).

        Returns
        -------
        torch.Tensor
            In ``residual``'s dtype under autocast too.
        """
        factor = self.scale
        if gate is not None:
            factor = gate.view(-1, *([1] * (x.dim() - 1))) * factor
        return torch.addcmul(residual, self._unscaled(x), factor)


#: AdapterBias initialisations (the ``adapterbias_init`` option).
ADAPTERBIAS_INITS = ("identity", "s3adapter")


class AdapterBias(nn.Module):
    """AdapterBias (Fu et al. 2022): a token-dependent shift ``v * alpha(h)``.

    ``v`` is a vector over the hidden size and ``alpha`` a
    ``Linear(intermediate -> 1)`` applied to the FFN's intermediate
    activation ``h``; the shift is added to the FFN output.

    Two initialisations (``init``):

    * ``identity`` (default): ``alpha`` is zero, so the shift is zero and
      the model starts as the pretrained one, and ``v`` is a random
      direction orthogonal to the ones vector, scaled to the norm of the
      ones vector (``sqrt(d)``). The shift goes through a LayerNorm before
      anything reads it (post-LN layers of WavLM / HuBERT / wav2vec 2.0
      Base, the Conformer's final LayerNorm of W2V-BERT 2.0), and a
      LayerNorm removes any shift along the ones vector: its input gradient
      ``g`` sums to zero. With ``alpha = 0``, ``dL/dv = alpha(h) g = 0``,
      so ``alpha`` alone must start the training, through
      ``dL/dalpha = (v . g) h``; with ``v = ones`` that is zero too (a
      saddle nothing leaves). A ``v`` orthogonal to the ones vector puts
      all of its norm where a LayerNorm passes gradient through; it is
      random (isotropic otherwise) because no other direction is
      preferred, and as long as the ones vector so that, for a gradient
      with no preferred direction, ``(v . g)^2`` has the size it has with
      ``v = ones`` where nothing normalises the shift (pre-LN layers):
      ``alpha`` learns at the original's rate. ``v`` gets its gradient once
      ``alpha`` is non-zero, as LoRA's A does once B is.
    * ``s3adapter``: the original s3adapter code, ``v = ones`` and
      PyTorch's default ``Linear`` init for ``alpha``: not the pretrained
      model at init, and on post-LN layers ``alpha`` gets no gradient until
      ``v`` has moved away from the ones vector.

    Arguments
    ---------
    hidden_size : int
        Output (model) dimension ``d`` (at least 2).
    intermediate_size : int
        FFN intermediate dimension.
    init : str
        ``identity`` or ``s3adapter`` (see above).

    Example
    -------
    >>> ab = AdapterBias(8, 32)
    >>> ab(torch.randn(2, 3, 32)).abs().max().item()  # identity at init
    0.0
    >>> ab.vector.sum().abs().item() < 1e-5  # orthogonal to the ones vector
    True
    >>> AdapterBias(8, 32, init="s3adapter").vector.tolist() == [1.0] * 8
    True
    """

    def __init__(self, hidden_size, intermediate_size, init="identity"):
        super().__init__()
        if hidden_size < 2:
            # No direction is orthogonal to the ones vector in 1-D.
            raise ValueError(
                f"AdapterBias needs hidden_size >= 2, got {hidden_size}"
            )
        self.vector = nn.Parameter(torch.ones(hidden_size))
        self.alpha = nn.Linear(intermediate_size, 1)
        self.reset_parameters(init)

    def reset_parameters(self, init="identity"):
        """Initialise the tensors (see the class docstring)."""
        if init == "identity":
            with torch.no_grad():
                v = torch.randn_like(self.vector)
                v -= v.mean()
                self.vector.copy_(v * math.sqrt(v.numel()) / v.norm())
            nn.init.zeros_(self.alpha.weight)
            nn.init.zeros_(self.alpha.bias)
        elif init == "s3adapter":
            nn.init.ones_(self.vector)
            self.alpha.reset_parameters()
        else:
            raise ValueError(
                f"Unknown AdapterBias init '{init}'. "
                f"Valid: {list(ADAPTERBIAS_INITS)}"
            )

    def forward(self, intermediate):
        """Returns the shift for the FFN intermediate activation."""
        return self.alpha(intermediate) * self.vector


def _adapter_dim(default=128):
    return option(
        default, "bottleneck of Inner / Houlsby adapters", "int", minimum=1
    )


def _adapter_scale():
    return option(
        0.1, "output scale s of parallel adapters (IPET: 0.1)", "float"
    )


def _adapter_dropout():
    return option(
        0.1,
        "dropout inside adapters (IPET: 0.1)",
        "float",
        minimum=0.0,
        maximum=1.0,
    )


def _adapter_activation():
    return option(
        "relu", "relu | gelu | silu", "str", choices=tuple(ACTIVATIONS)
    )


@register_component
class InnerAdapterComponent(PETComponent):
    """Inner adapters: a zero-initialised bottleneck adapter parallel to the
    FFN and/or the self-attention of every PET layer (Sang & Hansen 2024;
    He et al. 2021): ``out + g * s * up(act(down(in)))``, ``g`` the UniPET
    gate when there is one. Children: ``inner_ffn`` / ``inner_mhsa``.

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : InnerAdapterComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "inner_adapter"
    branch = "inner_adapter"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the Inner adapters."""

        adapter_dim: int = _adapter_dim()
        adapter_scale: float = _adapter_scale()
        adapter_dropout: float = _adapter_dropout()
        adapter_activation: str = _adapter_activation()
        inner_position: str = option(
            "ffn",
            "Inner adapter parallel to: ffn | mhsa | both (ffn and mhsa); "
            "W2V-BERT: ffn is both FFNs, or ffn1 | ffn2",
            "str",
            choices=("ffn", "mhsa", "both", "ffn1", "ffn2"),
        )
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        o = options
        self.targets = inner_adapter_places(o.inner_position, backbone)
        layers = select_layers(o.pet_layers, backbone.num_layers)
        self.places = {}
        for place in self.targets:
            self.places[place] = nn.ModuleDict(
                {
                    str(i): BottleneckAdapter(
                        backbone.hidden_size,
                        o.adapter_dim,
                        scale=o.adapter_scale,
                        activation=o.adapter_activation,
                        dropout=o.adapter_dropout,
                    )
                    for i in layers
                }
            )
            self.add_module(f"inner_{place}", self.places[place])

    def layer_hooks(self, layer):
        """A parallel adapter on each place of this layer."""
        hooks = []
        gate = layer.gates.get(self.branch)
        for place, adapters in self.places.items():
            if str(layer.index) not in adapters:
                continue
            adapter = adapters[str(layer.index)]
            hooks.append((self.targets[place], _parallel(adapter, gate)))
        return hooks


def inner_adapter_places(position, backbone):
    """Inner adapter places (child name suffix -> backbone hook place) for
    an ``inner_position``.

    A Transformer layer has one FFN (``ffn``); a Conformer (W2V-BERT) has
    two, and ``ffn`` then means an adapter parallel to each (``ffn1``,
    ``ffn2``), which may also be chosen alone.

    Arguments
    ---------
    position : str
        ``ffn``, ``mhsa``, ``both``, ``ffn1`` or ``ffn2``.
    backbone : SSLBackbone
        Gives its ``FFN_PLACES``.

    Returns
    -------
    dict

    Example
    -------
    >>> from types import SimpleNamespace
    >>> conformer = SimpleNamespace(FFN_PLACES=("ffn1", "ffn2"))
    >>> inner_adapter_places("both", conformer)
    {'ffn1': 'ffn1', 'ffn2': 'ffn2', 'mhsa': 'attention'}
    """
    ffns = tuple(backbone.FFN_PLACES)
    if len(ffns) == 1:
        by_name = {"ffn": ffns[0]}
    else:
        by_name = {f"ffn{i + 1}": place for i, place in enumerate(ffns)}
    if position in ("ffn1", "ffn2") and position not in by_name:
        raise ValueError(
            f"inner_position={position!r} needs a backbone with two FFNs "
            "per layer (W2V-BERT's Conformer); this one has one: use 'ffn'"
        )
    if position in by_name:
        return {position: by_name[position]}
    places = {} if position == "mhsa" else dict(by_name)
    if position in ("mhsa", "both"):
        places["mhsa"] = "attention"
    return places


def _parallel(adapter, gate):
    return lambda inputs, output: adapter.add_to(output, inputs, gate)


@register_component
class HoulsbyAdapterComponent(PETComponent):
    """Houlsby adapters: a sequential bottleneck adapter after the FFN of
    every PET layer, ``y + up(act(down(y)))`` (Houlsby et al. 2019; the
    s3adapter code of Chen et al. 2022). Child: ``houlsby``.

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : HoulsbyAdapterComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "houlsby"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the Houlsby adapters."""

        adapter_dim: int = _adapter_dim()
        adapter_dropout: float = _adapter_dropout()
        adapter_activation: str = _adapter_activation()
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        o = options
        layers = select_layers(o.pet_layers, backbone.num_layers)
        self.backbone_ffn = backbone.FFN_PLACES[-1]
        self.houlsby = nn.ModuleDict(
            {
                str(i): BottleneckAdapter(
                    backbone.hidden_size,
                    o.adapter_dim,
                    scale=1.0,
                    activation=o.adapter_activation,
                    dropout=o.adapter_dropout,
                )
                for i in layers
            }
        )

    def layer_hooks(self, layer):
        """The adapter on the FFN output of this layer."""
        key = str(layer.index)
        if key not in self.houlsby:
            return ()
        adapter = self.houlsby[key]
        # After the layer's last FFN (a Conformer's FFN2).
        place = self.backbone_ffn
        return [(place, lambda inputs, out: adapter.add_to(out, out))]


@register_component
class AdapterBiasComponent(PETComponent):
    """AdapterBias on the FFN of every PET layer: its output gets
    ``v * alpha(h)``, ``h`` the FFN's intermediate activation (Fu et al.
    2022). Child: ``adapterbias``. Option ``adapterbias_init``: see
    ``AdapterBias`` (``identity``, the default, starts as the pretrained
    model with a non-zero gradient behind LayerNorms; ``s3adapter`` is the
    original code's init).

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : AdapterBiasComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "adapterbias"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of AdapterBias."""

        adapterbias_init: str = option(
            "identity",
            "identity (alpha 0, v orthogonal to ones: zero shift, real "
            "gradient) | s3adapter (v ones, default alpha init: not identity "
            "at init)",
            "str",
            choices=ADAPTERBIAS_INITS,
        )
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        layers = select_layers(options.pet_layers, backbone.num_layers)
        # On the layer's last FFN (a Conformer's FFN2).
        self.place = backbone.FFN_INTERMEDIATE[backbone.FFN_PLACES[-1]]
        self.adapterbias = nn.ModuleDict(
            {
                str(i): AdapterBias(
                    backbone.hidden_size,
                    backbone.intermediate_size,
                    init=options.adapterbias_init,
                )
                for i in layers
            }
        )

    def layer_hooks(self, layer):
        """The shift on the FFN output projection of this layer."""
        key = str(layer.index)
        if key not in self.adapterbias:
            return ()
        shift = self.adapterbias[key]
        return [(self.place, lambda inter, out: out + shift(inter))]


@register_component
class InterAdapterComponent(PETComponent):
    """Inter adapters: a parallel bottleneck adapter on every hidden state
    (the L+1 of them) before the layer-weighted sum (Sang & Hansen 2024).
    Child: ``inter``. Nothing here is inside the Transformer, so a method
    made only of Inter adapters runs the backbone without autograd.

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : InterAdapterComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "inter_adapter"
    branch = "inter_adapter"
    gate_stage = "hiddens"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the Inter adapters."""

        inter_adapter_dim: int = option(
            128, "bottleneck of the Inter adapters", "int", minimum=1
        )
        adapter_scale: float = _adapter_scale()
        adapter_dropout: float = _adapter_dropout()
        adapter_activation: str = _adapter_activation()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        o = options
        self.inter = nn.ModuleList(
            [
                BottleneckAdapter(
                    backbone.hidden_size,
                    o.inter_adapter_dim,
                    scale=o.adapter_scale,
                    activation=o.adapter_activation,
                    dropout=o.adapter_dropout,
                )
                for _ in range(backbone.num_layers + 1)
            ]
        )

    @property
    def needs_backbone_grad(self):
        """Inter adapters act after the backbone."""
        return False

    def process_hiddens(self, hiddens, frame_mask, gates):
        """Adds each hidden state's adapter delta (gated if gated)."""
        gate = gates.get(self.branch)
        return [
            adapter.add_to(h, h, None if gate is None else gate[:, idx])
            for idx, (h, adapter) in enumerate(
                zip(hiddens, self.inter, strict=True)
            )
        ]
