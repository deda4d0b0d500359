"""Numerical guards for mixed precision.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch


def grouped_conv_outside_cpu_autocast(conv, x):
    """Runs ``conv(x)`` in fp32 when CPU autocast is on, else as is.

    torch 2.11's oneDNN bf16 kernel for *grouped* 1-D convolutions returns
    wrong values on CPUs with AMX-BF16 (Sapphire Rapids and later) for some
    shapes: with 2 to 8 channels per group and kernels of 8 or more
    (measured: 8 channels x kernel 8, 4 x 16, 2 x 128) the relative error
    against fp32 is near 1, while other shapes stay within bf16 rounding
    (about 0.3 %). No error is raised. The released base/large checkpoints
    (48 or 64 channels per group) were not hit on the machine that found
    it; smaller configurations (the tiny test models, distilled encoders,
    CA-MHFA with many groups) are. HF's positional convolution and
    CA-MHFA's grouped attention head are such convolutions and a small
    share of the compute, so under CPU autocast they always run in fp32;
    CUDA autocast is left alone (it uses cuDNN, not oneDNN).

    Arguments
    ---------
    conv : callable
        A module (or function) containing grouped 1-D convolutions.
    x : torch.Tensor
        Its input.

    Returns
    -------
    torch.Tensor
        ``conv(x)``, in the autocast dtype when CPU autocast is on (as
        autocast would have returned it).

    Example
    -------
    >>> conv = torch.nn.Conv1d(32, 32, 8, padding=4, groups=4)
    >>> x = torch.randn(1, 32, 20)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     y = grouped_conv_outside_cpu_autocast(conv, x)
    >>> y.dtype
    torch.bfloat16
    >>> bool(((y.float() - conv(x)).norm() / conv(x).norm()) < 0.01)
    True
    """
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return conv(x)
    with torch.autocast("cpu", enabled=False):
        out = conv(x.float())
    return out.to(torch.get_autocast_dtype("cpu"))
