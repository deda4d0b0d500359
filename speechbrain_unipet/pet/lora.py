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
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .component import (
    ComponentOptions,
    PETComponent,
    option,
    pet_layers_option,
    register_component,
    select_layers,
)

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


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


@register_component
class LoRAComponent(PETComponent):
    """LoRA on attention projections of every PET layer, as a weight
    parametrisation (its factors live in the backbone's state dict, under
    ``...<proj>.parametrizations.weight.0.lora_A/B``).

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone whose projections get LoRA.
    options : LoRAComponent.Options
        Its options.
    built : sequence
        Unused.
    """

    name = "lora"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of LoRA."""

        lora_rank: int = option(8, "LoRA rank r", "int", minimum=1)
        lora_alpha: float = option(
            8.0, "LoRA alpha; scaling = alpha / rank (PEFT)", "float"
        )
        lora_targets: tuple = option(
            ("q_proj", "v_proj"),
            "attention projections: any of q_proj, k_proj, v_proj, out_proj",
            "str_list",
            choices=ATTENTION_PROJECTIONS,
            minimum=1,
        )
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        o = options
        # A plain list: the projections belong to the backbone, not here.
        self.targets = []
        for i in select_layers(o.pet_layers, backbone.num_layers):
            for name in o.lora_targets:
                linear = backbone.attention_projection(i, name)
                add_lora(linear, rank=o.lora_rank, alpha=o.lora_alpha)
                self.targets.append(linear)
        self.merged = False

    @property
    def needs_backbone_grad(self):
        """LoRA factors train inside the attention until merged."""
        return not self.merged

    def merge(self):
        """Folds every LoRA update into its weight (see ``merge_lora``)."""
        if self.merged:
            return 0
        for linear in self.targets:
            merge_lora(linear)
        self.merged = True
        return len(self.targets)
