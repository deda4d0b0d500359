"""W2V-BERT 2.0 (Conformer) backbone: the guarantees of the other
backbones (identity at init against HF, padded batches, frozen means
frozen, bf16 autocast, PET state round trip) plus what is its own (the
fbank front-end against HF's extractor, two FFNs, relative positions with
prompt prefixes, a convolution module that never sees prompts). The recipe
on W2V-BERT: ``tests/integration/test_w2v_bert_recipe.py``."""

import pytest
import torch
from helpers import perturb_pet
from transformers import AutoModel, SeamlessM4TFeatureExtractor

from speechbrain_unipet.backbones.w2v_bert import MIN_SAMPLES, fbank_frames
from speechbrain_unipet.lobes import PET_METHODS, PETEncoder
from speechbrain_unipet.pet import LayerContext, select_layers
from speechbrain_unipet.testing import tiny_ssl_folder

IDENTITY_METHODS = [
    "finetune",
    "frozen",
    "inner_adapter",
    "inter_adapter",
    "inner_inter_adapter",
    "lora",
    "bitfit",
    "houlsby",
    "adapterbias",
]
# 0.5 s and shorter: 24 model frames, beyond the tiny config's position clamp
# ([-8, 4]), so clamped distances are exercised.
LENGTHS = [8000, 6100, 4410]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tiny_ssl_folder(tmp_path_factory.mktemp("w2v"), "wav2vec2-bert"))


def padded(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    singles = [torch.randn(n, generator=gen) * 0.1 for n in lengths]
    batch = torch.zeros(len(lengths), max(lengths))
    for i, w in enumerate(singles):
        batch[i, : len(w)] = w
    rel = torch.tensor([n / max(lengths) for n in lengths])
    return singles, batch, rel


def hf_features(folder, singles):
    fe = SeamlessM4TFeatureExtractor.from_pretrained(folder)
    inputs = fe(
        [w.numpy() for w in singles], sampling_rate=16000, return_tensors="pt"
    )
    return inputs["input_features"], inputs["attention_mask"]


def test_fbank_front_end_equals_hf_feature_extractor(folder):
    singles, batch, rel = padded(LENGTHS)
    enc = PETEncoder(folder, method="frozen")
    ref, ref_mask = hf_features(folder, singles)
    lengths = torch.tensor(LENGTHS)
    ours = enc.backbone.extract_features(batch, lengths)
    frames = fbank_frames(lengths)
    assert ref_mask.sum(1).tolist() == frames.tolist()
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(ours[i, :n], ref[i, :n], atol=1e-4, rtol=0)
        assert torch.count_nonzero(ours[i, n:]) == 0
    # Lengths are the backbone's frame lengths, and too short is refused.
    assert enc.frame_mask(batch, rel).sum(1).tolist() == frames.tolist()
    with pytest.raises(ValueError, match=f"at least {MIN_SAMPLES} samples"):
        enc(torch.randn(1, MIN_SAMPLES - 1))


@pytest.mark.parametrize("method", IDENTITY_METHODS)
def test_identity_at_init_matches_hf_hidden_states(folder, method):
    singles, batch, _ = padded([8000, 8000])
    hf = AutoModel.from_pretrained(folder).eval()
    features, _ = hf_features(folder, singles)
    with torch.no_grad():
        ref = torch.stack(hf(features, output_hidden_states=True).hidden_states)
    enc = PETEncoder(folder, method=method, output_all_hiddens=True).eval()
    with torch.no_grad():
        out = enc(batch)
    assert out.shape == ref.shape == (3, 2, 24, 32)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "method",
    ["unipet", "deep_prompt", "shallow_prompt", "lora", "ipet", "houlsby"],
)
def test_padded_batch_equals_single_utterances(folder, method):
    enc = PETEncoder(folder, method=method).eval()
    perturb_pet(enc)
    singles, batch, rel = padded(LENGTHS)
    with torch.no_grad():
        out = enc(batch, rel)
        mask = enc.frame_mask(batch, rel)
        for i, w in enumerate(singles):
            alone = enc(w[None])[0]
            n = alone.shape[0]
            assert int(mask[i].sum()) == n
            torch.testing.assert_close(out[i, :n], alone, atol=1e-4, rtol=0)
            assert torch.count_nonzero(out[i, n:]) == 0


def literal_prompted_stack(enc, wav, wav_lens):
    """Deep prompting done literally with HF's modules: the attention runs
    HF's own forward on ``[LN(prompts); LN(frames)]`` (relative-key
    positions over the longer sequence), prompt outputs are dropped; the
    FFNs and the convolution module only ever see frames."""
    from transformers.masking_utils import create_bidirectional_mask

    bb = enc.backbone
    x = enc(wav, wav_lens)[0]
    frame_mask = enc.frame_mask(wav, wav_lens)
    deep = enc.pet["deep_prompt"]
    layers = select_layers(enc.options["pet_layers"], enc.num_layers)
    prompted = {i: j for j, i in enumerate(layers)}
    hiddens = [x]
    batch, length, _ = x.shape
    for i, layer in enumerate(bb.layers):
        context = LayerContext(i, frame_mask)
        for component in enc.components:
            component.before_layer(context, x)
        hooks = [h for c in enc.components for h in c.layer_hooks(context)]
        with bb.layer_hooks(i, hooks):
            h = layer.ffn1(layer.ffn1_layer_norm(x)) * 0.5 + x
            n = deep.length if i in prompted else 0
            seq = layer.self_attn_layer_norm(h)
            if n:
                prompts = deep.prompts[prompted[i]].expand(batch, -1, -1)
                if "prompt" in context.gates:
                    prompts = prompts * context.gates["prompt"][:, None, None]
                seq = torch.cat([layer.self_attn_layer_norm(prompts), seq], 1)
            mask = torch.ones(batch, n + length, dtype=torch.bool)
            mask[:, n:] = frame_mask
            hf_mask = create_bidirectional_mask(
                config=bb.model.config, inputs_embeds=seq, attention_mask=mask
            )
            attn = layer.self_attn
            own_forward = attn.forward  # the backbone's, set per instance
            del attn.forward  # HF's own attention
            try:
                attended = attn(seq, attention_mask=hf_mask)[0][:, n:]
            finally:
                attn.forward = own_forward
            h = attended + h
            h = h + layer.conv_module(h, attention_mask=frame_mask)
            h = layer.ffn2(layer.ffn2_layer_norm(h)) * 0.5 + h
            x = layer.final_layer_norm(h)
        hiddens.append(x)
    return torch.stack(hiddens)


@pytest.mark.parametrize(
    "method, pet_layers",
    [("deep_prompt", None), ("unipet", None), ("ipet", [1])],
)
def test_prompt_prefix_equals_literal_prompting(folder, method, pet_layers):
    enc = PETEncoder(
        folder,
        method=method,
        options={"prompt_length": 3, "pet_layers": pet_layers},
        output_all_hiddens=True,
    ).eval()
    perturb_pet(enc, std=0.2)
    with torch.no_grad():  # sharp attention, so that every key matters
        for layer in enc.backbone.layers:
            layer.self_attn.linear_q.weight.mul_(20)
            layer.self_attn.linear_k.weight.mul_(20)
        for name, p in enc.named_parameters():
            if name.startswith("pet.inter.") and ".up." in name:
                p.zero_()
    _, wav, lens = padded(LENGTHS)
    with torch.no_grad():
        ours = enc(wav, lens)
        ref = literal_prompted_stack(enc, wav, lens)
        plain = PETEncoder(folder, method="frozen", output_all_hiddens=True)
        unprompted = plain.eval()(wav, lens)
    mask = enc.frame_mask(wav, lens)[None, :, :, None]
    torch.testing.assert_close(ours * mask, ref * mask, atol=1e-4, rtol=0)
    assert (ours - unprompted).abs().max() > 1e-2  # the prompts act


def test_convolution_module_never_sees_shallow_prompt_tokens(folder):
    enc = PETEncoder(
        folder, method="shallow_prompt", options={"prompt_length": 5}
    ).eval()
    perturb_pet(enc)
    seen = []
    handle = enc.backbone.layers[
        0
    ].conv_module.layer_norm.register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[1])
    )
    try:
        with torch.no_grad():
            out = enc(torch.randn(1, 8000) * 0.1)
    finally:
        handle.remove()
    assert seen == [out.shape[1]] == [24]  # frames only, not 5 + 24


def test_ffn_placements_of_adapters(folder, ssl_folder):
    def adapters(position):
        enc = PETEncoder(
            folder, method="inner_adapter", options={"inner_position": position}
        )
        return sorted(n for n, _ in enc.pet.named_children())

    assert adapters("ffn") == ["inner_ffn1", "inner_ffn2"]
    assert adapters("ffn1") == ["inner_ffn1"]
    assert adapters("ffn2") == ["inner_ffn2"]
    assert adapters("mhsa") == ["inner_mhsa"]
    assert adapters("both") == ["inner_ffn1", "inner_ffn2", "inner_mhsa"]
    # Each placement acts where it says: an adapter on FFN1 alone changes
    # the output, and it is not the one on FFN2.
    torch.manual_seed(0)
    wav = torch.randn(1, 8000) * 0.1
    outs = {}
    for position in ("ffn1", "ffn2"):
        enc = PETEncoder(
            folder, method="inner_adapter", options={"inner_position": position}
        ).eval()
        perturb_pet(enc, std=0.2)
        with torch.no_grad():
            outs[position] = enc(wav)
    base = PETEncoder(folder, method="frozen").eval()
    with torch.no_grad():
        ref = base(wav)
    assert (outs["ffn1"] - ref).abs().max() > 1e-3
    assert (outs["ffn1"] - outs["ffn2"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="two FFNs per layer"):
        PETEncoder(
            ssl_folder("wavlm"),
            method="inner_adapter",
            options={"inner_position": "ffn1"},
        )


def test_frozen_means_frozen(folder):
    """Dropout / layerdrop / masking of the config do nothing; an
    optimiser step of unipet changes no backbone tensor."""
    enc = PETEncoder(folder, method="unipet").train()
    assert enc.backbone.config.layerdrop == 0.0
    with torch.no_grad():
        frozen = {n: p.clone() for n, p in enc.backbone.named_parameters()}
    wav = torch.randn(2, 8000) * 0.1
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], 1.0)
    enc(wav).pow(2).mean().backward()
    opt.step()
    for name, p in enc.backbone.named_parameters():
        assert torch.equal(p, frozen[name]), name
    plain = PETEncoder(folder, method="frozen", output_all_hiddens=True).train()
    with torch.no_grad():
        torch.testing.assert_close(plain(wav), plain(wav), atol=0, rtol=0)


@pytest.mark.parametrize("method", ["unipet", "lora", "finetune"])
def test_bf16_autocast_matches_fp32(folder, method):
    enc = PETEncoder(folder, method=method).train()
    perturb_pet(enc)
    _, wav, lens = padded(LENGTHS)
    ref = enc.eval()(wav, lens).detach()
    enc.train()
    for module in enc.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(wav, lens)
    assert out.dtype == torch.bfloat16
    out = out.float()
    assert torch.isfinite(out).all()
    error = (out - ref).norm() / ref.norm()
    assert error < 0.05, f"relative error {error:.3f} under bf16 autocast"
    out.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("method", list(PET_METHODS))
def test_pet_state_round_trip(folder, method, tmp_path):
    wav = torch.randn(2, 8000) * 0.1
    enc = PETEncoder(folder, method=method).eval()
    perturb_pet(enc)
    state = enc.pet_state_dict()
    assert set(state) == {
        n for n, p in enc.named_parameters() if p.requires_grad
    }
    enc.save_pet_file(tmp_path / "pet.ckpt")
    fresh = PETEncoder(folder, method=method).eval()
    fresh.load_pet_file(tmp_path / "pet.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(fresh(wav), enc(wav), atol=1e-6, rtol=0)


def test_hf_forward_still_works_with_our_attention(folder):
    singles, _, _ = padded([8000, 5000])
    features, mask = hf_features(folder, singles)
    hf = AutoModel.from_pretrained(folder).eval()
    enc = PETEncoder(folder, method="frozen").eval()
    with torch.no_grad():
        ref = hf(features, attention_mask=mask, output_hidden_states=True)
        ours = enc.backbone.model(
            features, attention_mask=mask, output_hidden_states=True
        )
    valid = mask.bool()[None, :, :, None]
    torch.testing.assert_close(
        torch.stack(ours.hidden_states) * valid,
        torch.stack(ref.hidden_states) * valid,
        atol=1e-5,
        rtol=0,
    )


def test_a_state_of_other_weights_is_refused(folder, tmp_path):
    other = tiny_ssl_folder(tmp_path, "wav2vec2-bert", seed=5)
    enc = PETEncoder(folder, method="lora")
    enc.save_pet_file(tmp_path / "lora.ckpt")
    with pytest.raises(ValueError, match="backbone_fingerprint"):
        PETEncoder(str(other), method="lora").load_pet_file(
            tmp_path / "lora.ckpt"
        )
