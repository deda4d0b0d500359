"""PET building blocks on their own (the encoder tests cover them in place)."""

import pytest
import torch

from speechbrain_unipet.pet import OPTIONS
from speechbrain_unipet.pet.adapters import BottleneckAdapter
from speechbrain_unipet.pet.gates import BranchGate


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(8, 3, scale=0.1).eval()
    # A non-zero delta (zero_up starts at 0), so that the sums below mean
    # something.
    for p in adapter.parameters():
        torch.nn.init.normal_(p)
    return adapter


@pytest.mark.parametrize("gated", [False, True])
def test_adapter_add_to_is_residual_plus_gated_delta(adapter, gated):
    x = torch.randn(2, 5, 8, requires_grad=True)
    residual = torch.randn(2, 5, 8, requires_grad=True)
    gate = torch.rand(2, requires_grad=True) if gated else None
    ours = adapter.add_to(residual, x, gate)
    delta = adapter(x)
    ref = residual + (delta * gate[:, None, None] if gated else delta)
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(ours, ref)
    leaves = [x, residual, adapter.down.weight, adapter.up.bias]
    leaves += [gate] if gated else []
    got = torch.autograd.grad(ours.pow(2).sum(), leaves)
    want = torch.autograd.grad(ref.pow(2).sum(), leaves)
    for g_ours, g_ref in zip(got, want, strict=True):
        torch.testing.assert_close(g_ours, g_ref)


def test_adapter_add_to_keeps_residual_dtype_under_autocast(adapter):
    x, residual, gate = (
        torch.randn(2, 5, 8),
        torch.randn(2, 5, 8),
        torch.rand(2),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adapter.add_to(residual, x, gate)
    # The residual stream stays fp32, as HF's own residual additions keep it.
    assert out.dtype == torch.float32
    ref = residual + gate[:, None, None] * adapter(x)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)


def test_gate_is_unipelts_time_mean_of_sigmoids_over_valid_frames():
    # UniPELT (Mao et al. 2022; the adapters library's gating): a gate is
    # mean over time of sigmoid(W x_t + b); here over the valid frames only.
    torch.manual_seed(0)
    gate = BranchGate(input_size=6, num_branches=3, bias_init=0.5)
    with torch.no_grad():
        gate.proj.weight.normal_()
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    x[1, 2:] = 1e3  # padding must not count
    w, b = gate.proj.weight.detach(), gate.proj.bias.detach()
    want = torch.stack(
        [torch.sigmoid(x[i, mask[i]] @ w.T + b).mean(0) for i in range(2)]
    )
    torch.testing.assert_close(gate(x, mask).detach(), want)
    assert torch.allclose(gate.proj.bias, torch.full((3,), 0.5))


def test_inner_adapter_defaults_are_ipets_parallel_adapter():
    # IPET models/adapter.py (after He et al. 2021): s * up(dropout(relu(
    # down(x)))), s = 0.1, dropout 0.1, parallel to the FFN; "lora" init:
    # down kaiming-uniform(a=sqrt 5), up and both biases zero.
    defaults = {k: OPTIONS[k][0] for k in OPTIONS}
    assert defaults["adapter_scale"] == 0.1
    assert defaults["adapter_dropout"] == 0.1
    assert defaults["adapter_activation"] == "relu"
    assert defaults["inner_position"] == "ffn"
    d, r = 12, 5
    adapter = BottleneckAdapter(
        d,
        r,
        scale=defaults["adapter_scale"],
        activation=defaults["adapter_activation"],
        dropout=defaults["adapter_dropout"],
    )
    down, up = adapter.down, adapter.up
    assert not up.weight.any() and not up.bias.any() and not down.bias.any()
    # kaiming_uniform(a=sqrt 5) bounds: sqrt(6 / ((1 + 5) fan_in)).
    assert down.weight.abs().max() <= d**-0.5
    assert down.weight.abs().max() > 0.5 * d**-0.5
    with torch.no_grad():
        up.weight.normal_()
        up.bias.normal_()
        down.bias.normal_()
    x = torch.randn(2, 3, d)
    h = torch.relu(x @ down.weight.T + down.bias)
    want = 0.1 * (h @ up.weight.T + up.bias)
    torch.testing.assert_close(adapter.eval()(x).detach(), want.detach())
    assert adapter.dropout.p == 0.1
