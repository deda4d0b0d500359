"""LoRA as a weight parametrisation, with merge and unmerge.

Written by hand rather than taken from PEFT or ``speechbrain.nnet.adapters``
because both wrap the ``nn.Linear`` *call*, while HF's WavLM attention reads
``q_proj.weight`` etc. directly through ``F.multi_head_attention_forward``:
wrapped LoRA silently gets no gradient there (transformers PR#48773). A
``torch.nn.utils.parametrize`` parametrisation changes what ``.weight``
*returns*, so every code path that reads the weight sees ``W + s * B @ A``.

Scaling follows PEFT: ``s = alpha / rank`` (PEFT's defaults are r=8,
alpha=8, i.e. s=1; SpeechBrain's ``LoRA`` uses rank 16, alpha 1).

Authors
 * speechbrain-unipet contributors 2026
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class LoRAParametrization(nn.Module):
    """``W -> W + (alpha / rank) * B @ A`` with ``B`` zero-initialised.

    Arguments
    ---------
    out_features : int
        Rows of the adapted weight.
    in_features : int
        Columns of the adapted weight.
    rank : int
        LoRA rank ``r``.
    alpha : float
        LoRA alpha; the update is scaled by ``alpha / rank``.

    Example
    -------
    >>> lin = nn.Linear(6, 4)
    >>> add_lora(lin, rank=2, alpha=2)
    >>> torch.allclose(lin.weight, lin.parametrizations.weight.original)
    True
    """

    def __init__(self, out_features, in_features, rank=8, alpha=8.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank

    def delta(self):
        """The low-rank update ``s * B @ A``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, weight):
        """Returns the adapted weight."""
        return weight + self.delta().to(weight.dtype)


def add_lora(linear, rank=8, alpha=8.0):
    """Registers a LoRA parametrisation on ``linear.weight`` (in place)."""
    out_f, in_f = linear.weight.shape
    lora = LoRAParametrization(out_f, in_f, rank, alpha).to(
        device=linear.weight.device, dtype=linear.weight.dtype
    )
    parametrize.register_parametrization(linear, "weight", lora)


def lora_parametrizations(linear):
    """The LoRA parametrisations registered on ``linear.weight``."""
    if not parametrize.is_parametrized(linear, "weight"):
        return []
    return [
        p
        for p in linear.parametrizations.weight
        if isinstance(p, LoRAParametrization)
    ]


def merge_lora(linear):
    """Folds LoRA into ``linear.weight`` and removes the parametrisation.

    Afterwards the module is a plain ``nn.Linear`` again: zero inference
    overhead, and HF ``save_pretrained`` writes ordinary weight names.

    Example
    -------
    >>> lin = nn.Linear(6, 4)
    >>> add_lora(lin, rank=2)
    >>> _ = nn.init.normal_(lin.parametrizations.weight[0].lora_B)
    >>> x = torch.randn(3, 6)
    >>> y = lin(x)
    >>> merge_lora(lin)
    >>> torch.allclose(lin(x), y, atol=1e-6), parametrize.is_parametrized(lin)
    (True, False)
    """
    if not lora_parametrizations(linear):
        raise ValueError("merge_lora: this module has no LoRA parametrisation")
    with torch.no_grad():
        parametrize.remove_parametrizations(
            linear, "weight", leave_parametrized=True
        )
