"""The cost benchmark's FLOP counter (``benchmarks/training_cost.py``), on
one step of a grouped convolution; the benchmarks themselves run end to end
in ``tests/integration/test_benchmarks.py``."""

import importlib.util
import pathlib

import torch

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "training_cost.py"


def test_flop_count_of_a_grouped_conv_step():
    spec = importlib.util.spec_from_file_location("training_cost", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # As WavLM's positional conv: 16 groups, input and weight gradients.
    conv = torch.nn.Conv1d(32, 32, kernel_size=8, groups=16, bias=False)
    x = torch.randn(2, 32, 40, requires_grad=True)

    def step():
        conv(x).sum().backward()

    forward = 2 * 2 * 33 * 32 * (32 // 16) * 8  # 2 per multiply-add
    assert bench.count_flops(step) == 3 * forward
    x.requires_grad_(False)
    assert bench.count_flops(step) == 2 * forward
