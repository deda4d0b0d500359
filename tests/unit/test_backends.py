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
    assert count(MHFA(D_BASE, L_BASE)) == expected
    assert 2.2e6 < expected < 2.4e6  # "2.3 M" in the paper's tables


def test_camhfa_parameter_count_at_published_sizes():
    heads, comp, context, emb = 64, 128, 5, 256

    def expected(context, groups=1):
        return (
            2 * L_BASE
            + 2 * (D_BASE * comp + comp)  # key (with bias) and value
            + heads * (comp // groups) * context  # queries: conv, no bias
            + (heads * comp * emb + emb)
        )

    assert count(CAMHFA(D_BASE, L_BASE)) == expected(context)
    assert 2.2e6 < expected(context) < 2.5e6  # ~2.3 M (paper)
    assert count(CAMHFA(D_BASE, L_BASE, context=9)) == expected(9)
    grouped = CAMHFA(D_BASE, L_BASE, groups=4)
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
    backend = LayerAdapterMFA(D_BASE, L_BASE)
    assert count(backend) == expected


def test_defaults_are_the_published_settings():
    mhfa = MHFA(D_BASE, L_BASE)
    # BUTSpeechFIT/wespeaker_ssl_public, examples/voxceleb/v4/conf/MHFA/
    # MHFA_Base_Frozen.yaml lines 55-56: head_nb: 64, embed_dim: 256;
    # wespeaker/models/ssl_backend.py line 7: compression_dim=128.
    assert (mhfa.heads, mhfa.compression_dim, mhfa.lin_neurons) == (
        64,
        128,
        256,
    )
    ca = CAMHFA(D_BASE, L_BASE)
    # JunyiPeng00/Wespeaker_SSL, examples/voxceleb/v2/conf/CA_MHFA/
    # wavlm_base_MHFA_LR_Pooling_Group4_Conv2D_64_L4.yaml lines 54-56:
    # head_nb: 256, embed_dim: 256, group: 64; wespeaker/models/
    # ssl_backend.py lines 305 and 325-326: compression_dim=128, 64 maps
    # (group_nb), kernel head_nb // group_nb + 1 = 256 // 64 + 1 frames.
    assert (ca.heads, ca.compression_dim, ca.lin_neurons) == (64, 128, 256)
    assert ca.context == 256 // 64 + 1 == 5 and ca.groups == 1
    mfa = LayerAdapterMFA(D_BASE, L_BASE)
    # wenet-e2e/wespeaker, examples/voxceleb/v2/conf/w2vbert_s1_lora.yaml
    # lines 66 and 69: embed_dim: 256, adapter_dim: 128.
    assert (mfa.adapter_dim, mfa.lin_neurons) == (128, 256)


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


def reference_mhfa(x, weights_k, weights_v, wk, bk, wv, bv, wa, ba, wo, bo):
    """MHFA written from Peng et al. (SLT 2022) and the equations of BUT's
    ``ssl_backend.MHFA`` (layout [B, D, T, L] there, [L, B, T, D] here):
    keys and values are softmax-weighted sums over layers, each compressed
    linearly; per head, a softmax over time of a linear read of the keys
    weights the compressed values; heads concatenated, projected. Every
    bias of the reference is an argument (ours drops ``bk`` and ``ba``)."""
    k = torch.einsum("l,lbtd->btd", torch.softmax(weights_k, 0), x)
    v = torch.einsum("l,lbtd->btd", torch.softmax(weights_v, 0), x)
    k = k @ wk.T + bk
    v = v @ wv.T + bv
    att = torch.softmax(k @ wa.T + ba, dim=1)  # [B, T, H], over time
    pooled = torch.einsum("bth,btc->bhc", att, v)
    return pooled.flatten(1) @ wo.T + bo


def test_mhfa_equals_the_reference_equations_with_its_biases():
    backend = build("mhfa").eval()
    x = stack(3, 7, seed=5)
    p = dict(backend.named_parameters())
    gen = torch.Generator().manual_seed(9)
    # The reference's key and logit biases, absent here: any values give
    # the same embeddings (the softmax over time cancels them).
    bk, ba = torch.randn(8, generator=gen), torch.randn(4, generator=gen)
    want = reference_mhfa(
        x,
        p["weights_k"],
        p["weights_v"],
        p["cmp_linear_k.weight"],
        bk,
        p["cmp_linear_v.weight"],
        p["cmp_linear_v.bias"],
        p["att_head.weight"],
        ba,
        p["pooling_fc.weight"],
        p["pooling_fc.bias"],
    )
    with torch.no_grad():
        torch.testing.assert_close(
            backend(x)[:, 0], want.detach(), atol=1e-5, rtol=0
        )


def reference_mfa(x, backend):
    """WeSpeaker's ``W2VBert_Adapter_MFA`` in eval mode, written from its
    equations (``w2vbert_adapter_mfa.py``, ``pooling_layers.ASP``): per
    hidden state ``Linear -> LayerNorm -> ReLU -> Linear``, concatenation
    over layers, channel-wise attention ``Conv1x1 -> ReLU -> BatchNorm ->
    Conv1x1 -> softmax over time``, weighted mean and
    ``sqrt(E[x^2] - mean^2)`` floored at variance 1e-5, then a linear
    bottleneck. The weights are read from ``backend`` by position only."""
    p = [t.detach() for t in backend.parameters()]
    b = [t.detach() for t in backend.buffers()]
    adapted = []
    for layer in range(x.shape[0]):
        w1, b1, g, beta, w2, b2 = p[6 * layer : 6 * layer + 6]
        h = torch.nn.functional.layer_norm(x[layer] @ w1.T + b1, (len(b1),))
        adapted.append(torch.relu(h * g + beta) @ w2.T + b2)
    feats = torch.cat(adapted, dim=-1)  # [B, T, C]
    a1, c1, gn, bn, a2, c2, wo, bo = p[6 * x.shape[0] :]
    running_mean, running_var = b[0], b[1]
    h = torch.relu(feats @ a1.T + c1)
    h = (h - running_mean) / torch.sqrt(running_var + 1e-5) * gn + bn
    w = torch.softmax(h @ a2.T + c2, dim=1)  # over time, per channel
    mu = (feats * w).sum(1)
    sg = ((feats**2 * w).sum(1) - mu**2).clamp(min=1e-5).sqrt()
    return torch.cat([mu, sg], dim=1) @ wo.T + bo


def test_mfa_equals_the_reference_equations():
    backend = build("mfa")
    x = stack(3, 7, seed=6)
    backend.train()(x)  # non-trivial BatchNorm running statistics
    backend.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            backend(x)[:, 0], reference_mfa(x, backend), atol=1e-4, rtol=1e-4
        )


def test_camhfa_equals_the_reference_conv2d_equations():
    # JunyiPeng00/Wespeaker_SSL MHFA_Group_Conv2D: logits from
    # Conv2d(1, heads, (context, C), padding=(context // 2, 0)) over the
    # compressed keys seen as a [T, C] image, softmax over time, as MHFA.
    backend = build("ca_mhfa").eval()
    x = stack(3, 7, seed=7)
    p = dict(backend.named_parameters())
    k = torch.einsum("l,lbtd->btd", torch.softmax(p["weights_k"], 0), x)
    v = torch.einsum("l,lbtd->btd", torch.softmax(p["weights_v"], 0), x)
    k = k @ p["cmp_linear_k.weight"].T + p["cmp_linear_k.bias"]
    v = v @ p["cmp_linear_v.weight"].T + p["cmp_linear_v.bias"]
    # Its kernel [heads, 1, context, C]: query j of head h for offset j - R.
    kernel = p["att_head.weight"].transpose(1, 2).unsqueeze(1)
    logits = torch.nn.functional.conv2d(
        k.unsqueeze(1), kernel, padding=(kernel.shape[2] // 2, 0)
    )  # [B, heads, T, 1]
    att = torch.softmax(logits[..., 0], dim=2)  # over time
    pooled = torch.einsum("bht,btc->bhc", att, v).flatten(1)
    want = pooled @ p["pooling_fc.weight"].T + p["pooling_fc.bias"]
    with torch.no_grad():
        torch.testing.assert_close(
            backend(x)[:, 0], want.detach(), atol=1e-5, rtol=0
        )
