"""The SUPERB layer mixture: hidden states summed with softmax weights.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch

from speechbrain_unipet.backbones import exporting


def weighted_layer_sum(hiddens, layer_weights):
    """Sums the stacked hidden states with ``softmax(layer_weights)``.

    Arguments
    ---------
    hiddens : torch.Tensor
        The L+1 hidden states, stacked [L+1, B, T, D].
    layer_weights : torch.Tensor
        One logit per hidden state [L+1] (any float dtype: the softmax is
        cast to the hidden states' dtype).

    Returns
    -------
    torch.Tensor
        [B, T, D], in the hidden states' dtype.

    Example
    -------
    >>> stack = torch.stack([torch.zeros(1, 2, 3), torch.ones(1, 2, 3)])
    >>> weighted_layer_sum(stack, torch.zeros(2))[0, 0]
    tensor([0.5000, 0.5000, 0.5000])
    """
    weights = torch.softmax(layer_weights, dim=0).to(hiddens.dtype)
    if exporting():
        # The reshapes of einsum/matmul need a divisibility guard that the
        # exporter cannot prove for every batch and length.
        return (weights.view(-1, 1, 1, 1) * hiddens).sum(dim=0)
    return torch.einsum("l,lbtd->btd", weights, hiddens)
