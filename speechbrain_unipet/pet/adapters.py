"""Bottleneck adapters (parallel or sequential) and AdapterBias.

These modules compute a *delta* that the encoder adds to a sublayer's output
through a forward hook, so the HuggingFace module tree (and its state dict)
stays untouched.

Authors
 * speechbrain-unipet contributors 2026
"""

import math

import torch
from torch import nn

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
        """Returns the adapter delta for ``x`` [..., d]."""
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


class AdapterBias(nn.Module):
    """AdapterBias (Fu et al. 2022): a token-dependent shift ``v * alpha(h)``.

    ``v`` is a vector over the hidden size (initialised to ones, as in the
    s3adapter code) and ``alpha`` a ``Linear(intermediate -> 1)`` applied to
    the FFN's intermediate activation ``h``. ``alpha`` is zero-initialised
    so the shift starts at zero (the original uses the default init; this is
    exposed as ``zero_init``).

    Arguments
    ---------
    hidden_size : int
        Output (model) dimension.
    intermediate_size : int
        FFN intermediate dimension.
    zero_init : bool
        Zero-initialise ``alpha`` so the model starts as the pretrained one.

    Example
    -------
    >>> ab = AdapterBias(8, 32)
    >>> ab(torch.randn(2, 3, 32)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, hidden_size, intermediate_size, zero_init=True):
        super().__init__()
        self.vector = nn.Parameter(torch.ones(hidden_size))
        self.alpha = nn.Linear(intermediate_size, 1)
        if zero_init:
            nn.init.zeros_(self.alpha.weight)
            nn.init.zeros_(self.alpha.bias)

    def forward(self, intermediate):
        """Returns the shift for the FFN intermediate activation."""
        return self.alpha(intermediate) * self.vector
