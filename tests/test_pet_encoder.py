"""Invariants of PETEncoder on tiny random models (no network)."""

import pytest
import torch
from conftest import VARIANTS, variant_id
from transformers import AutoModel

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder

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


def perturb_pet(enc, seed=1, std=0.05):
    """Moves every trainable tensor away from its (often zero) init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("method", IDENTITY_METHODS)
def test_identity_at_init_matches_hf_hidden_states(
    ssl_folder, variant, method, wavs
):
    folder = ssl_folder(*variant)
    hf = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = torch.stack(hf(wavs, output_hidden_states=True).hidden_states)
    enc = PETEncoder(folder, method=method, output_all_hiddens=True).eval()
    with torch.no_grad():
        out = enc(wavs)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    # Default mode: softmax of zero layer weights is the plain mean.
    mix = PETEncoder(folder, method=method).eval()
    with torch.no_grad():
        torch.testing.assert_close(mix(wavs), ref.mean(0), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "variant",
    [("wavlm", False), ("wavlm", True), ("wav2vec2", False)],
    ids=variant_id,
)
@pytest.mark.parametrize("method", list(PET_METHODS))
def test_training_updates_exactly_the_trainable_tensors(
    ssl_folder, variant, method, wavs
):
    torch.manual_seed(0)
    enc = PETEncoder(ssl_folder(*variant), method=method).train()
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    trainable = [p for p in enc.parameters() if p.requires_grad]
    assert trainable, "every method trains something"
    opt = torch.optim.Adam(trainable, lr=1e-2)
    lens = torch.tensor([1.0, 0.8, 0.55])
    target = torch.randn(3, 1, enc.hidden_size)
    for _ in range(3):
        opt.zero_grad()
        loss = ((enc(wavs, lens) - target) ** 2).mean()
        loss.backward()
        for name, p in enc.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"{name} got no gradient"
        opt.step()
    for name, p in enc.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if p.requires_grad:
            assert changed, f"trainable {name} did not change"
        else:
            assert not changed, f"frozen {name} changed"


def test_lora_on_wavlm_attention_really_trains(ssl_folder, wavs):
    """Pitfall 1: WavLM reads q/k/v .weight directly; LoRA must still act."""
    enc = PETEncoder(ssl_folder("wavlm"), method="lora").eval()
    with torch.no_grad():
        base = enc(wavs)
    perturb_pet(enc)
    with torch.no_grad():
        assert not torch.allclose(enc(wavs), base, atol=1e-4)
    enc(wavs).pow(2).mean().backward()
    grads = [p.grad for n, p in enc.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("method", list(PET_METHODS))
def test_count_parameters_is_exact(ssl_folder, method):
    enc = PETEncoder(ssl_folder("wavlm"), method=method)
    trainable, total = enc.count_parameters()
    assert trainable == sum(
        p.numel() for p in enc.parameters() if p.requires_grad
    )
    assert total == sum(p.numel() for p in enc.parameters())
    backbone = sum(p.numel() for p in enc.backbone.parameters())
    assert total >= backbone


def test_count_parameters_matches_hand_formula(ssl_folder):
    enc = PETEncoder(
        ssl_folder("wavlm"),
        method="inner_inter_adapter",
        adapter_dim=4,
        inter_adapter_dim=3,
    )
    d, L = 32, 2
    adapter = lambda r: d * r + r + r * d + d  # noqa: E731
    expected = L * adapter(4) + (L + 1) * adapter(3) + (L + 1)
    assert enc.count_parameters()[0] == expected
    lora = PETEncoder(ssl_folder("wavlm"), method="lora", lora_rank=2)
    # q and v projections, A: r x d, B: d x r, per layer, + layer weights
    assert lora.count_parameters()[0] == L * 2 * (2 * d * 2) + (L + 1)


@pytest.mark.parametrize("method", list(PET_METHODS))
def test_pet_state_dict_roundtrip(ssl_folder, method, wavs, tmp_path):
    folder = ssl_folder("wavlm", True)
    enc = PETEncoder(folder, method=method).eval()
    perturb_pet(enc)
    state = enc.pet_state_dict()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert not frozen & set(state)
    fresh = PETEncoder(folder, method=method).eval()
    with torch.no_grad():
        differs = not torch.allclose(fresh(wavs), enc(wavs), atol=1e-5)
    assert differs or method == "frozen"
    fresh.load_pet_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(wavs), enc(wavs), atol=1e-6, rtol=0)
    # The SpeechBrain checkpoint hooks write the same tensors to disk.
    path = tmp_path / "pet.ckpt"
    enc._save(path)
    third = PETEncoder(folder, method=method).eval()
    third._load(path, end_of_epoch=False)
    with torch.no_grad():
        torch.testing.assert_close(third(wavs), enc(wavs), atol=1e-6, rtol=0)


def test_checkpoint_file_is_small_for_pet(ssl_folder, tmp_path):
    enc = PETEncoder(ssl_folder("wavlm"), method="lora")
    enc._save(tmp_path / "lora.ckpt")
    full = tmp_path / "full.pt"
    torch.save(enc.backbone.model.state_dict(), full)
    assert (tmp_path / "lora.ckpt").stat().st_size < 0.3 * full.stat().st_size


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(
    "method",
    ["unipet", "deep_prompt", "shallow_prompt", "lora", "ipet", "houlsby"],
)
def test_padded_batch_equals_single_utterances(ssl_folder, variant, method):
    torch.manual_seed(0)
    enc = PETEncoder(ssl_folder(*variant), method=method).eval()
    perturb_pet(enc)
    lengths = [4000, 3100, 2205]
    singles = [torch.randn(n) for n in lengths]
    batch = torch.zeros(3, 4000)
    for i, w in enumerate(singles):
        batch[i, : len(w)] = w
    rel = torch.tensor([n / 4000 for n in lengths])
    with torch.no_grad():
        out = enc(batch, rel)
        mask = enc.frame_mask(batch, rel)
        for i, w in enumerate(singles):
            alone = enc(w[None])[0]
            n = alone.shape[0]
            assert int(mask[i].sum()) == n
            torch.testing.assert_close(out[i, :n], alone, atol=1e-4, rtol=0)
            assert torch.count_nonzero(out[i, n:]) == 0


def test_normalize_wav_is_per_utterance(model_root):
    from speechbrain_unipet.testing import tiny_ssl_folder

    folder = tiny_ssl_folder(
        model_root, "wav2vec2", True, do_normalize=True, seed=3
    )
    enc = PETEncoder(str(folder), method="frozen").eval()
    assert enc.backbone.normalize_wav
    torch.manual_seed(0)
    w = torch.randn(2500) * 3 + 1
    batch = torch.zeros(2, 4000)
    batch[0], batch[1, :2500] = torch.randn(4000), w
    with torch.no_grad():
        out = enc(batch, torch.tensor([1.0, 2500 / 4000]))
        alone = enc(w[None])[0]
    torch.testing.assert_close(
        out[1, : alone.shape[0]], alone, atol=1e-4, rtol=0
    )


def test_frozen_parts_are_deterministic_in_train_mode(ssl_folder, wavs):
    # layerdrop=0.1 and dropout=0.1 in the saved config must not matter.
    enc = PETEncoder(
        ssl_folder("hubert"), method="frozen", output_all_hiddens=True
    )
    enc.train()
    with torch.no_grad():
        a, b = enc(wavs), enc(wavs)
    assert a.shape[0] == enc.num_layers + 1
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert enc.backbone.config.layerdrop == 0.0
    assert not enc.backbone.model.training


def test_finetune_uses_dropout_only_where_weights_train(ssl_folder, wavs):
    enc = PETEncoder(ssl_folder("wavlm"), method="finetune").train()
    assert enc.backbone.model.encoder.training
    assert not enc.backbone.model.feature_extractor.training
    enc.eval()
    assert not enc.backbone.model.encoder.training


@pytest.mark.parametrize("method", ["frozen", "inter_adapter"])
def test_methods_without_inner_modules_run_backbone_without_autograd(
    ssl_folder, method, wavs
):
    enc = PETEncoder(ssl_folder("wavlm"), method=method).train()
    hiddens, _ = enc._backbone_hiddens(wavs, None)
    assert not any(h.requires_grad for h in hiddens)  # graph-free backbone
    assert enc(wavs).requires_grad  # but the head still trains


def test_unipet_gates_are_exposed(ssl_folder, wavs):
    enc = PETEncoder(ssl_folder("wavlm"), method="unipet").eval()
    enc(wavs, torch.tensor([1.0, 0.7, 0.5]))
    g = enc.gate_values
    assert set(g) == {"inner_adapter", "prompt", "inter_adapter"}
    assert g["inner_adapter"].shape == (3, enc.num_layers)
    assert g["prompt"].shape == (3, enc.num_layers)
    assert g["inter_adapter"].shape == (3, enc.num_layers + 1)
    for v in g.values():
        assert bool(((v > 0) & (v < 1)).all())
    # A gate that saturates at zero switches its branch off.
    with torch.no_grad():
        for gate in enc.pet["inter_gates"]:
            gate.proj.bias.fill_(-1e4)
        for name, p in enc.named_parameters():
            if "pet.inter." in name and name.endswith("up.weight"):
                p.normal_()
        off = enc(wavs)
        for gate in enc.pet["inter_gates"]:
            gate.proj.bias.fill_(1e4)
        on = enc(wavs)
    assert not torch.allclose(on, off, atol=1e-3)


def test_deep_prompts_keep_length_and_change_output(ssl_folder, wavs):
    folder = ssl_folder("wavlm")
    plain = PETEncoder(folder, method="frozen", output_all_hiddens=True).eval()
    deep = PETEncoder(
        folder, method="deep_prompt", prompt_length=5, output_all_hiddens=True
    ).eval()
    with torch.no_grad():
        a, b = plain(wavs), deep(wavs)
    assert a.shape == b.shape
    torch.testing.assert_close(a[0], b[0])  # layer 0 input has no prompt
    assert not torch.allclose(a[1:], b[1:], atol=1e-4)


def prepended_prompt_reference(enc, wav, wav_lens):
    """Deep prompting the literal way, with HF's own layers and attention:
    prepend the layer's (gated) prompts, run the layer on the longer
    sequence, drop the prompt outputs."""
    from transformers.masking_utils import create_bidirectional_mask

    bb = enc.backbone
    x = enc(wav, wav_lens)[0]  # layer 0 input, from the tested encoder
    frame_mask = enc.frame_mask(wav, wav_lens)
    for layer in bb.layers:
        del layer.attention.forward  # back to HF's attention
    batch, length, _ = x.shape
    deep = enc.pet["deep_prompt"]
    prompted = {i: j for j, i in enumerate(enc.options["pet_layers"])}
    branches = enc._inside_gated_branches()
    hiddens = [x]
    for i, layer in enumerate(bb.layers):
        gates = {}
        if "layer_gates" in enc.pet:
            values = enc.pet["layer_gates"][str(i)](x, frame_mask)
            gates = {b: values[:, k] for k, b in enumerate(branches)}
        n = deep.length if i in prompted else 0
        seq = x
        if n:
            prompts = deep.prompts[prompted[i]].expand(batch, -1, -1)
            if "prompt" in gates:
                prompts = prompts * gates["prompt"][:, None, None]
            seq = torch.cat([prompts, x], dim=1)
        mask = torch.ones(batch, n + length, dtype=torch.bool)
        if frame_mask is not None:
            mask[:, n:] = frame_mask
        enc._layer_gates = gates
        if bb.model_type == "wavlm":
            heads = bb.layers[0].attention.num_heads
            bias = bb.layers[0].attention.compute_bias(n + length, n + length)
            bias = bias.repeat(batch, 1, 1, 1).view(
                batch * heads, n + length, -1
            )
            kwargs = {"attention_mask": mask, "position_bias": bias}
            if not bb.pre_ln:
                kwargs["index"] = i
            out = layer(seq, **kwargs)[0]
        else:
            hf_mask = create_bidirectional_mask(
                config=bb.model.config, inputs_embeds=seq, attention_mask=mask
            )
            out = layer(seq, attention_mask=hf_mask)
        enc._layer_gates = {}
        x = out[:, n:]
        hiddens.append(x)
    return torch.stack(hiddens)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(
    "method, pet_layers",
    [("deep_prompt", None), ("unipet", None), ("ipet", [1])],
)
def test_prompt_prefix_equals_prepending_prompts(
    ssl_folder, variant, method, pet_layers
):
    """Prompts as attention keys/values == prepended prompt tokens whose
    outputs are dropped: every backbone, padding, WavLM's position bias,
    UniPET's gates, a subset of prompted layers."""
    enc = PETEncoder(
        ssl_folder(*variant),
        method=method,
        prompt_length=3,
        pet_layers=pet_layers,
        output_all_hiddens=True,
    ).eval()
    perturb_pet(enc, std=0.2)
    with torch.no_grad():  # sharp attention, so that every key matters
        for layer in enc.backbone.layers:
            layer.attention.q_proj.weight.mul_(20)
            layer.attention.k_proj.weight.mul_(20)
    if "inter" in enc.pet:
        del enc.pet["inter"]  # compare the layer stack itself
    torch.manual_seed(0)
    wav, lens = torch.randn(3, 4000), torch.tensor([1.0, 0.7, 0.45])
    with torch.no_grad():
        ours = enc(wav, lens)
        ref = prepended_prompt_reference(enc, wav, lens)
    mask = enc.frame_mask(wav, lens)[None, :, :, None]
    torch.testing.assert_close(ours * mask, ref * mask, atol=1e-4, rtol=0)


def test_deep_prompts_starting_after_layer_zero(ssl_folder):
    """WavLM's position bias is recomputed when the length changes later."""
    enc = PETEncoder(
        ssl_folder("wavlm"),
        method="deep_prompt",
        pet_layers=[1],
        output_all_hiddens=True,
    ).eval()
    plain = PETEncoder(
        ssl_folder("wavlm"), method="frozen", output_all_hiddens=True
    )
    plain.eval()
    torch.manual_seed(0)
    w = torch.randn(2, 4000)
    with torch.no_grad():
        a, b = (
            enc(w, torch.tensor([1.0, 0.6])),
            plain(w, torch.tensor([1.0, 0.6])),
        )
    torch.testing.assert_close(a[:2], b[:2], atol=1e-5, rtol=0)
    assert not torch.allclose(a[2], b[2], atol=1e-4)


def test_lora_merge_keeps_outputs(ssl_folder, wavs):
    enc = PETEncoder(ssl_folder("wavlm"), method="lora").eval()
    perturb_pet(enc)
    with torch.no_grad():
        before = enc(wavs)
    assert enc.merge_lora() == 2 * enc.num_layers
    with torch.no_grad():
        torch.testing.assert_close(enc(wavs), before, atol=1e-5, rtol=0)
    assert not any("lora_" in n for n, _ in enc.named_parameters())
    with pytest.raises(ValueError, match="no LoRA"):
        enc.merge_lora()


def test_gradient_checkpointing_gives_same_gradients(ssl_folder, wavs):
    folder = ssl_folder("wavlm")
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        enc = PETEncoder(
            folder,
            method="unipet",
            adapter_dropout=0.0,
            gradient_checkpointing=ckpt,
        ).train()
        perturb_pet(enc)
        enc(wavs, torch.tensor([1.0, 0.7, 0.5])).pow(2).mean().backward()
        grads.append(
            {
                n: p.grad.clone()
                for n, p in enc.named_parameters()
                if p.requires_grad
            }
        )
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-4)


def test_unknown_method_lists_choices(ssl_folder):
    with pytest.raises(ValueError, match="Valid methods: finetune, frozen"):
        PETEncoder(ssl_folder("wavlm"), method="adapters")


def test_non_ssl_source_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a supported SSL speech encoder"):
        PETEncoder(str(tmp_path / "bert"), method="frozen")


def test_bad_source_folders(tmp_path, ssl_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PETEncoder(str(tmp_path / "nope" / "model"), method="frozen")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        PETEncoder(str(tmp_path / "empty"), method="frozen")
    import shutil

    only_cfg = tmp_path / "cfg"
    only_cfg.mkdir()
    shutil.copy(f"{ssl_folder('wavlm')}/config.json", only_cfg)
    with pytest.raises(ValueError, match="no model.safetensors"):
        PETEncoder(str(only_cfg), method="frozen")


def test_bad_options_give_clear_errors(ssl_folder):
    folder = ssl_folder("wavlm")
    with pytest.raises(ValueError, match="inner_position"):
        PETEncoder(folder, method="inner_adapter", inner_position="ffm")
    with pytest.raises(ValueError, match="pet_layers"):
        PETEncoder(folder, method="inner_adapter", pet_layers=[5])
    with pytest.raises(ValueError, match="lora_targets"):
        PETEncoder(folder, method="lora", lora_targets=["query"])
    with pytest.raises(ValueError, match="gated_branches"):
        PETEncoder(folder, method="unipet", gated_branches=["lora"])


def test_mismatched_pet_state_is_rejected(ssl_folder, model_root, tmp_path):
    from speechbrain_unipet.testing import tiny_ssl_folder

    small = PETEncoder(ssl_folder("wavlm"), method="unipet")
    other = tiny_ssl_folder(model_root, "wavlm", seed=7, hidden_size=48)
    big = PETEncoder(str(other), method="unipet")
    with pytest.raises(ValueError, match="shape mismatch"):
        big.load_pet_state_dict(small.pet_state_dict())
    lora = PETEncoder(ssl_folder("wavlm"), method="lora")
    with pytest.raises(ValueError, match="another method"):
        lora.load_pet_state_dict(small.pet_state_dict())
    small._save(tmp_path / "u.ckpt")
    with pytest.raises(ValueError, match="method saved='unipet' here='lora'"):
        lora._load(tmp_path / "u.ckpt", end_of_epoch=False)


def test_options_mapping_is_checked(ssl_folder):
    enc = PETEncoder(
        ssl_folder("wavlm"),
        method="lora",
        options={"lora_rank": 2},
        lora_alpha=4,
    )
    assert enc.options["lora_rank"] == 2 and enc.options["lora_alpha"] == 4
    with pytest.raises(ValueError, match="Unknown PET option 'lora_rnk'"):
        PETEncoder(ssl_folder("wavlm"), method="lora", options={"lora_rnk": 2})


@pytest.mark.parametrize(
    "variant", [("wavlm", False), ("hubert", True)], ids=variant_id
)
@pytest.mark.parametrize("method", ["unipet", "lora", "finetune"])
def test_bf16_autocast_matches_fp32(ssl_folder, variant, method):
    """What ``--precision=bf16`` runs (CPU autocast here, CUDA on GPUs):
    padded batches stay finite and close to fp32, and gradients flow."""
    enc = PETEncoder(ssl_folder(*variant), method=method).train()
    perturb_pet(enc)
    torch.manual_seed(0)
    wav, lens = torch.randn(3, 4000) * 0.1, torch.tensor([1.0, 0.7, 0.45])
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


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_hf_forward_still_works_with_our_attention(ssl_folder, variant):
    """The attention ``forward`` swap must not break HF's own encoder loop
    (users may call ``enc.backbone.model`` directly)."""
    folder = ssl_folder(*variant)
    hf = AutoModel.from_pretrained(folder).eval()
    enc = PETEncoder(folder, method="frozen").eval()
    torch.manual_seed(0)
    wav = torch.randn(2, 4000)
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[1, 2500:] = 0
    with torch.no_grad():
        ref = hf(wav, attention_mask=mask, output_hidden_states=True)
        ours = enc.backbone.model(
            wav, attention_mask=mask, output_hidden_states=True
        )
    torch.testing.assert_close(
        torch.stack(ours.hidden_states),
        torch.stack(ref.hidden_states),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize(
    "variant, method, cached",
    [
        (("wavlm", False), "unipet", True),
        (("wav2vec2", False), "unipet", True),
        (("hubert", True), "deep_prompt", True),
        # Pre-LN: the gate scales the prompts before the LayerNorm, so the
        # keys and values depend on the input and are computed every time.
        (("hubert", True), "unipet", False),
    ],
    ids=[
        "wavlm-unipet",
        "wav2vec2-unipet",
        "hubert-preln-deep",
        "hubert-preln-unipet",
    ],
)
def test_inference_reuses_prompt_keys_values_until_a_tensor_changes(
    ssl_folder, variant, method, cached, wavs, tmp_path
):
    enc = PETEncoder(ssl_folder(*variant), method=method, prompt_length=3)
    enc.eval()
    perturb_pet(enc, std=0.2)
    prompt_rows = []
    k_proj = enc.backbone.layers[0].attention.k_proj
    k_proj.register_forward_hook(
        lambda m, args, out: prompt_rows.append(args[0].shape[-2] == 3)
    )

    def fresh():  # with autograd on, nothing is reused
        with torch.enable_grad():
            return enc(wavs).detach()

    with torch.no_grad():
        first, second = enc(wavs), enc(wavs)
    assert sum(prompt_rows) == (1 if cached else 2)
    torch.testing.assert_close(first, fresh(), atol=1e-6, rtol=0)
    torch.testing.assert_close(second, first, atol=0, rtol=0)

    # Every way the inputs of the cached keys/values change is seen.
    saved = {k: v.clone() for k, v in enc.pet_state_dict().items()}
    with torch.no_grad():
        prompts = enc.pet["deep_prompt"].prompts
        prompts.add_(torch.randn_like(prompts))  # an optimiser step
        after_step = enc(wavs)
    torch.testing.assert_close(after_step, fresh(), atol=1e-6, rtol=0)
    assert not torch.allclose(after_step, first, atol=1e-4)
    v_proj = enc.backbone.layers[0].attention.v_proj
    v_weight = v_proj.weight.detach().clone()
    with torch.no_grad():
        v_proj.weight.add_(torch.randn_like(v_weight))  # a backbone tensor
        after_weight = enc(wavs)
    torch.testing.assert_close(after_weight, fresh(), atol=1e-6, rtol=0)
    assert not torch.allclose(after_weight, after_step, atol=1e-4)
    with torch.no_grad():
        v_proj.weight.copy_(v_weight)
    enc.load_pet_state_dict(saved)  # a checkpoint load
    with torch.no_grad():
        torch.testing.assert_close(enc(wavs), first, atol=1e-5, rtol=0)
    # `.data =` (what .to() does) keeps the tensor and its version.
    prompts.data = prompts.data + torch.randn_like(prompts)
    with torch.no_grad():
        after_data = enc(wavs)
    torch.testing.assert_close(after_data, fresh(), atol=1e-6, rtol=0)
    assert not torch.allclose(after_data, first, atol=1e-4)


@pytest.mark.parametrize(
    "variant", [("wavlm", False), ("wav2vec2", True)], ids=variant_id
)
@pytest.mark.parametrize("group", [1, 2])
def test_cpu_cnn_groups_give_the_batched_features(ssl_folder, variant, group):
    enc = PETEncoder(
        ssl_folder(*variant), method="frozen", output_all_hiddens=True
    )
    enc.eval()
    bb = enc.backbone
    torch.manual_seed(0)
    wav, lens = torch.randn(5, 4000), torch.tensor([1.0, 0.7, 1.0, 0.45, 0.9])
    samples = enc._sample_lengths(wav, lens)
    with torch.no_grad():
        bb.cpu_cnn_group_bytes = None
        batched = bb.extract_features(wav, samples)
        whole = enc(wav, lens)
        # First-layer output per utterance: conv_dim[0] x frames x 4 bytes.
        frames = (4000 - bb.config.conv_kernel[0]) // bb.config.conv_stride[
            0
        ] + 1
        bb.cpu_cnn_group_bytes = group * bb.config.conv_dim[0] * frames * 4
        calls = []
        hook = bb.model.feature_extractor.conv_layers[-1].register_forward_hook(
            lambda m, args, out: calls.append(len(out))
        )
        grouped = bb.extract_features(wav, samples)
        hook.remove()
        # Same numbers up to the conv kernels' batch-size-dependent rounding.
        torch.testing.assert_close(grouped, batched, atol=1e-5, rtol=0)
        torch.testing.assert_close(enc(wav, lens), whole, atol=1e-5, rtol=0)
    assert calls == [group] * (5 // group) + ([5 % group] if 5 % group else [])
