"""UniPET-SPK gates: learnable per-layer sigmoid gates on PET branches.

The paper's gate equations are not public. This follows UniPELT as
implemented in the ``adapters`` library: ``g = sigmoid(W x_t + b)``
averaged over the valid time steps, one scalar per utterance, per branch
and per layer, computed from the layer input.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch
from torch import nn


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
