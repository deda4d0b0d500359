"""Layer-stack speaker back-ends (MHFA, CA-MHFA, layer-adapter MFA):
shapes, exact masking of padded frames, gradients, argument checks, state
dicts and parameter counts at the published sizes."""

import hyperpyyaml
import pytest
import torch

from speechbrain_unipet.lobes import CAMHFA, MHFA, LayerAdapterMFA, PETEncoder
from speechbrain_unipet.lobes.backends import (
    MaskedBatchNorm1d,
    frame_mask,
    relative_lengths,
)

D, LAYERS, EMB = 16, 4, 10  # tiny sizes: hidden size, L+1 states, embedding
TINY = {
    "mhfa": (MHFA, {"heads": 4, "compression_dim": 8}),
    # context 5 reaches past the end of the 1- and 4-frame rows below.
    "ca_mhfa": (CAMHFA, {"heads": 4, "compression_dim": 8, "context": 5}),
    "ca_mhfa_groups": (
        CAMHFA,
        {"heads": 4, "compression_dim": 8, "context": 3, "groups": 2},
    ),
    "mfa": (LayerAdapterMFA, {"adapter_dim": 6}),
}


def build(name, seed=0):
    """A tiny back-end with every tensor moved off its init."""
    cls, options = TINY[name]
    torch.manual_seed(seed)
    backend = cls(input_size=D, num_layers=LAYERS, lin_neurons=EMB, **options)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in backend.parameters():
            # Layer weights start at zero (uniform): make them differ.
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return backend


def stack(batch, frames, seed=0):
    return torch.randn(
        LAYERS, batch, frames, D, generator=torch.Generator().manual_seed(seed)
    )


def padded_batch(valid, frames, seed=0):
    """Stack with garbage (not zeros) on padded frames, relative lengths."""
    x = stack(len(valid), frames, seed)
    garbage = 100 * stack(len(valid), frames, seed + 1)
    for b, n in enumerate(valid):
        x[:, b, n:] = garbage[:, b, n:]
    return x, torch.tensor(valid, dtype=torch.float64) / frames


@pytest.fixture(params=list(TINY))
def name(request):
    return request.param


def test_interface_attributes(name):
    backend = build(name)
    assert backend.layer_stack_input is True
    assert backend.exact_with_padding is True
    out = backend(stack(3, 20), torch.tensor([1.0, 0.5, 0.2]))
    assert out.shape == (3, 1, EMB)
    assert torch.isfinite(out).all()


def test_padded_batch_gives_each_utterance_alone(name):
    backend = build(name).eval()
    valid, frames = [23, 15, 4, 1], 23
    x, lengths = padded_batch(valid, frames)
    with torch.no_grad():
        batch = backend(x, lengths)
        for b, n in enumerate(valid):
            alone = backend(x[:, b : b + 1, :n])  # batch 1, no padding
            torch.testing.assert_close(
                batch[b : b + 1], alone, atol=1e-5, rtol=0
            )
        # Relative lengths all 1: the same as no lengths.
        full = x[:, :1]
        torch.testing.assert_close(
            backend(full, torch.ones(1)), backend(full), atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_padding_is_ignored(name, value):
    # Zero weights times NaN would still be NaN: padded frames are zeroed.
    backend = build(name)
    x, lengths = padded_batch([9, 5], 9)
    clean = x.clone()
    x[:, 1, 5:] = value
    for mode in (False, True):
        backend.train(mode)
        torch.testing.assert_close(
            backend(x, lengths), backend(clean, lengths), atol=1e-6, rtol=0
        )


def test_padding_is_irrelevant_in_training_mode(name):
    # Training statistics (MFA's BatchNorm) come from valid frames only.
    backend = build(name).train()
    x, lengths = padded_batch([12, 7], 12, seed=3)
    other = x.clone()
    other[:, 1, 7:] = -other[:, 1, 7:] + 5
    torch.testing.assert_close(
        backend(x, lengths), backend(other, lengths), atol=1e-5, rtol=0
    )


def test_every_parameter_gets_a_gradient(name):
    backend = build(name).train()
    x, lengths = padded_batch([16, 11], 16, seed=5)
    out = backend(x, lengths)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * target).sum().backward()
    for pname, p in backend.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().max() > 0, pname


def test_every_layer_of_the_stack_matters(name):
    backend = build(name).eval()
    x = stack(2, 12)
    with torch.no_grad():
        reference = backend(x)
        for layer in range(LAYERS):
            changed = x.clone()
            changed[layer] += torch.randn(changed[layer].shape)
            diff = (backend(changed) - reference).abs().max()
            assert diff > 1e-4, f"layer {layer} is ignored"


def test_state_dict_round_trip(name):
    backend = build(name, seed=0)
    x, lengths = padded_batch([10, 6], 10)
    backend.train()(x, lengths)  # moves MFA's running statistics
    fresh = build(name, seed=7)
    fresh.load_state_dict(backend.state_dict())
    backend.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(x, lengths), backend(x, lengths), atol=0, rtol=0
        )


def test_bf16_autocast(name):
    backend = build(name).eval()
    x, lengths = padded_batch([12, 5], 12)
    with torch.no_grad():
        full = backend(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = backend(x, lengths)
    assert torch.isfinite(half).all()
    # Relative to the fp32 output: bf16 rounding gives about 0.01; the
    # grouped-convolution kernel bug worked around in precision.py gave ~1.
    assert (half.float() - full).norm() < 0.05 * full.norm()


@pytest.mark.parametrize(
    "cls, options, argument",
    [
        (MHFA, {"input_size": 0}, "input_size"),
        (MHFA, {"num_layers": -1}, "num_layers"),
        (MHFA, {"heads": 0}, "heads"),
        (MHFA, {"compression_dim": 2.5}, "compression_dim"),
        (MHFA, {"lin_neurons": True}, "lin_neurons"),
        (CAMHFA, {"context": 4}, "context"),
        (CAMHFA, {"context": 0}, "context"),
        (CAMHFA, {"heads": 6, "groups": 4}, "groups"),
        (CAMHFA, {"compression_dim": 6, "groups": 4}, "groups"),
        (CAMHFA, {"groups": "2"}, "groups"),
        (LayerAdapterMFA, {"adapter_dim": 0}, "adapter_dim"),
        (LayerAdapterMFA, {"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_arguments_name_the_argument(cls, options, argument):
    kwargs = {"input_size": D, "num_layers": LAYERS, **options}
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)


def test_wrong_stack_shapes_are_rejected(name):
    backend = build(name)
    with pytest.raises(ValueError, match="num_layers"):
        backend(torch.randn(LAYERS + 1, 2, 10, D))
    with pytest.raises(ValueError, match="input_size"):
        backend(torch.randn(LAYERS, 2, 10, D + 1))
    with pytest.raises(ValueError, match="lengths"):
        backend(torch.randn(LAYERS, 2, 10, D), torch.ones(3))


def test_frame_mask_rounds_and_keeps_one_frame():
    mask = frame_mask(torch.tensor([1.0, 0.44, 0.46, 0.0]), 10)
    assert mask.sum(1).tolist() == [10, 4, 5, 1]
    assert frame_mask(None, 10) is None


def test_camhfa_with_context_1_is_mhfa():
    mhfa = build("mhfa").eval()
    ca = CAMHFA(
        D, LAYERS, heads=4, compression_dim=8, context=1, lin_neurons=EMB
    )
    state = dict(mhfa.state_dict())
    state["att_head.weight"] = state["att_head.weight"].unsqueeze(-1)
    # CA-MHFA's key bias only acts at utterance ends: with one-frame windows
    # it is cancelled, like the bias MHFA leaves out.
    state["cmp_linear_k.bias"] = torch.randn(8)
    ca.load_state_dict(state)
    x, lengths = padded_batch([9, 4], 9)
    with torch.no_grad():
        torch.testing.assert_close(
            ca.eval()(x, lengths), mhfa(x, lengths), atol=1e-5, rtol=0
        )


def test_a_logit_bias_would_change_nothing():
    # Why MHFA has no logit (or key) bias: a per-head constant added to the
    # logits of every frame is cancelled by the softmax over time.
    backend = build("mhfa").eval()
    x, lengths = padded_batch([9, 4], 9)
    with torch.no_grad():
        reference = backend(x, lengths)
        plain = backend.attention
        backend.attention = lambda k, m: plain(k, m) + torch.randn(4, 1)
        torch.testing.assert_close(
            backend(x, lengths), reference, atol=1e-5, rtol=0
        )


def test_masked_batch_norm_statistics_use_valid_frames():
    norm = MaskedBatchNorm1d(3, momentum=1.0)
    x = torch.randn(2, 6, 3)
    mask = frame_mask(torch.tensor([1.0, 0.5]), 6)
    x[1, 3:] = 1e3  # padding that would dominate the statistics
    norm.train()(x, mask)
    torch.testing.assert_close(norm.running_mean, x[mask].mean(0))
    torch.testing.assert_close(norm.running_var, x[mask].var(0))
    # Eval: running statistics, batch 1 works.
    assert norm.eval()(x[:1, :1]).shape == (1, 1, 3)


# Parameter counts at the published sizes: WavLM Base+ (D=768, 12 layers +
# the CNN output = 13 hidden states), 256-dimensional embeddings.
D_BASE, L_BASE = 768, 13


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_mhfa_parameter_count_at_published_sizes():
    heads, comp, emb = 64, 128, 256
    expected = (
        2 * L_BASE  # key and value layer weights
        + D_BASE * comp  # key compression, no bias
        + (D_BASE * comp + comp)  # value compression
        + comp * heads  # attention logits, no bias
        + (heads * comp * emb + emb)  # output projection
    )
    # The reference: the same plus the two biases the softmax cancels.
    reference = (
        2 * L_BASE
        + 2 * (D_BASE * comp + comp)
        + (comp * heads + heads)
        + (heads * comp * emb + emb)
    )
    assert reference - expected == comp + heads
    assert count(MHFA(D_BASE, L_BASE, lin_neurons=emb)) == expected
    assert 2.2e6 < expected < 2.4e6  # "2.3 M" in the paper's tables


def test_camhfa_parameter_count_at_published_sizes():
    heads, comp, context, emb = 64, 128, 9, 256

    def expected(context, groups=1):
        return (
            2 * L_BASE
            + 2 * (D_BASE * comp + comp)  # key (with bias) and value
            + heads * (comp // groups) * context  # queries: conv, no bias
            + (heads * comp * emb + emb)
        )

    assert count(CAMHFA(D_BASE, L_BASE, lin_neurons=emb)) == expected(context)
    assert 2.2e6 < expected(context) < 2.5e6  # ~2.3 M (paper)
    # The reference's VoxCeleb configuration (head_nb 256, group 64): 64
    # attention maps, kernel 256 // 64 + 1 = 5 frames.
    ref = CAMHFA(D_BASE, L_BASE, context=5, lin_neurons=emb)
    assert count(ref) == expected(5)
    grouped = CAMHFA(D_BASE, L_BASE, groups=4, lin_neurons=emb)
    assert count(grouped) == expected(context, groups=4)


def test_mfa_parameter_count_at_published_sizes():
    adapter, emb = 128, 256
    channels = L_BASE * adapter
    per_adapter = (
        (D_BASE * adapter + adapter)  # Linear(D, adapter_dim)
        + 2 * adapter  # LayerNorm
        + (adapter * adapter + adapter)  # Linear(adapter_dim, adapter_dim)
    )
    pooling = (
        (channels * adapter + adapter)  # attention bottleneck in
        + 2 * adapter  # its BatchNorm
        + (adapter * channels + channels)  # attention out, per channel
    )
    bottleneck = 2 * channels * emb + emb
    expected = L_BASE * per_adapter + pooling + bottleneck
    backend = LayerAdapterMFA(D_BASE, L_BASE, lin_neurons=emb)
    assert count(backend) == expected


def test_built_from_yaml_and_fed_by_the_encoder(ssl_folder):
    # As the recipe: a !name: partial, completed with the encoder's sizes.
    hparams = hyperpyyaml.load_hyperpyyaml(
        """
        backend: !name:speechbrain_unipet.lobes.CAMHFA
            heads: 4
            compression_dim: 8
            context: 3
            groups: 2
            lin_neurons: 12
        """
    )
    enc = PETEncoder(ssl_folder("wavlm"), method="frozen").eval()
    enc.set_output_all_hiddens(True)
    backend = hparams["backend"](
        input_size=enc.hidden_size, num_layers=enc.num_layers + 1
    ).eval()
    assert backend.layer_stack_input
    wavs = torch.randn(2, 4000)
    with torch.no_grad():
        hiddens = enc(wavs, torch.tensor([1.0, 0.7]))
        out = backend(hiddens, torch.tensor([1.0, 0.7]))
    assert hiddens.shape[:2] == (enc.num_layers + 1, 2)
    assert out.shape == (2, 1, 12)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_padded_waveforms_through_the_encoder(ssl_folder, pre_ln, name):
    # The embedding path: a padded batch of waveforms, the encoder's frame
    # lengths, one embedding per utterance as if it ran alone.
    enc = PETEncoder(ssl_folder("wavlm", pre_ln), method="frozen").eval()
    enc.set_output_all_hiddens(True)
    cls, options = TINY[name]
    torch.manual_seed(0)
    backend = cls(enc.hidden_size, enc.num_layers + 1, **options).eval()
    wavs = torch.randn(3, 8000, generator=torch.Generator().manual_seed(0))
    # 0.3: the CNN gives 14 of 49 frames, round(0.3 * 49) would be 15.
    wav_lens = torch.tensor([1.0, 0.61, 0.3])
    with torch.no_grad():
        lengths = relative_lengths(enc.frame_mask(wavs, wav_lens))
        batch = backend(enc(wavs, wav_lens), lengths)
        for b, rel in enumerate(wav_lens.tolist()):
            alone = backend(enc(wavs[b : b + 1, : round(rel * 8000)]))
            torch.testing.assert_close(batch[b], alone[0], atol=1e-5, rtol=0)
