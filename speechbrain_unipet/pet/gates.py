"""UniPET-SPK gates: learnable per-layer sigmoid gates on PET branches.

The paper's gate equations are not public. This follows UniPELT as
implemented in the ``adapters`` library: ``g = sigmoid(W x_t + b)``
averaged over the valid time steps, one scalar per utterance, per branch
and per layer, computed from the layer input.

Authors
 * speechbrain-unipet contributors 2026
"""

from dataclasses import dataclass

import torch
from torch import nn

from .component import (
    ComponentOptions,
    PETComponent,
    gate_branches,
    option,
    pet_layers_option,
    register_component,
    select_layers,
)


def masked_time_mean(x, frame_mask):
    """Mean over time of ``x`` [B, T, D] using ``frame_mask`` [B, T] (bool).

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_time_mean(x, torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    if frame_mask is None:
        return x.mean(dim=1)
    m = frame_mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class BranchGate(nn.Module):
    """Sigmoid gates for ``num_branches`` PET branches of one layer.

    Arguments
    ---------
    input_size : int
        Dimension of the layer input.
    num_branches : int
        How many branches this gate controls.
    bias_init : float
        Initial gate bias; 0 gives gates of 0.5 at start (UniPELT).

    Example
    -------
    >>> gate = BranchGate(8, num_branches=2)
    >>> g = gate(torch.randn(3, 5, 8), None)
    >>> g.shape, bool(((g > 0) & (g < 1)).all())
    (torch.Size([3, 2]), True)
    """

    def __init__(self, input_size, num_branches, bias_init=0.0):
        super().__init__()
        self.proj = nn.Linear(input_size, num_branches)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.constant_(self.proj.bias, bias_init)

    def forward(self, x, frame_mask=None):
        """Gate values [B, num_branches] in (0, 1) for input ``x`` [B, T, D].

        The mean over time is taken of the per-frame gates, as in UniPELT.
        """
        return masked_time_mean(torch.sigmoid(self.proj(x)), frame_mask)


@register_component
class UniPETGateComponent(PETComponent):
    """UniPET-SPK gates on the branches of the components built before it.

    Branches inside a layer (``gate_stage = "layer"``: Inner adapters,
    deep prompts) share one ``BranchGate`` per PET layer, computed from the
    layer input (child ``layer_gates``); branches on the hidden-state stack
    (Inter adapters) get one gate per hidden state (child ``inter_gates``).

    Arguments
    ---------
    backbone : SSLBackbone
        The backbone (sizes).
    options : UniPETGateComponent.Options
        Its options.
    built : sequence
        The method's components built before this one.
    """

    name = "gates"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the UniPET gates."""

        gate_bias_init: float = option(
            0.0, "initial gate bias (0 -> gates start at 0.5)", "float"
        )
        gated_branches: tuple = option(
            ("inner_adapter", "prompt", "inter_adapter"),
            "UniPET branches multiplied by a gate",
            "str_list",
            choices=gate_branches,
        )
        pet_layers: tuple = pet_layers_option()

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        o = options
        present = {c.branch: c.gate_stage for c in built if c.branch}
        self.layer_branches = tuple(
            b for b in o.gated_branches if present.get(b) == "layer"
        )
        hidden = [b for b in o.gated_branches if present.get(b) == "hiddens"]
        if self.layer_branches:
            layers = select_layers(o.pet_layers, backbone.num_layers)
            self.layer_gates = nn.ModuleDict(
                {
                    str(i): BranchGate(
                        backbone.hidden_size,
                        len(self.layer_branches),
                        o.gate_bias_init,
                    )
                    for i in layers
                }
            )
        self.hidden_branch = hidden[0] if hidden else None
        if self.hidden_branch:
            self.inter_gates = nn.ModuleList(
                [
                    BranchGate(backbone.hidden_size, 1, o.gate_bias_init)
                    for _ in range(backbone.num_layers + 1)
                ]
            )

    @property
    def needs_backbone_grad(self):
        """Layer gates scale branches inside the Transformer."""
        return bool(self.layer_branches)

    def before_layer(self, layer, x):
        """Puts this layer's gates [B] per branch into ``layer.gates``."""
        if not self.layer_branches or str(layer.index) not in self.layer_gates:
            return
        values = self.layer_gates[str(layer.index)](x, layer.frame_mask)
        for k, branch in enumerate(self.layer_branches):
            layer.gates[branch] = values[:, k]

    def hidden_gates(self, hiddens, frame_mask):
        """One gate per hidden state for the hidden-stage branch, [B, L+1]."""
        if self.hidden_branch is None:
            return {}
        values = [
            gate(h, frame_mask)[:, 0]
            for gate, h in zip(self.inter_gates, hiddens, strict=True)
        ]
        return {self.hidden_branch: torch.stack(values, dim=1)}
