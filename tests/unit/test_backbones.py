"""Backbone guarantees, for every backbone family and layer-norm layout:
identity at init against HF's hidden states, padded batches equal to single
utterances, frozen means deterministic, prompts as attention prefixes equal
to prepended prompts, bf16 autocast, HF's own forward left working, clear
errors for sources that are not SSL speech encoders."""

import pytest
import torch
from helpers import VARIANTS, perturb_pet, variant_id
from transformers import AutoModel

from speechbrain_unipet.lobes import PETEncoder
from speechbrain_unipet.lobes.pet_encoder import sample_lengths
from speechbrain_unipet.pet import LayerContext, select_layers

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
    layers = select_layers(enc.options["pet_layers"], enc.num_layers)
    prompted = {i: j for j, i in enumerate(layers)}
    hiddens = [x]
    for i, layer in enumerate(bb.layers):
        context = LayerContext(i, frame_mask)
        for component in enc.components:
            component.before_layer(context, x)
        gates = context.gates
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
        hooks = [h for c in enc.components for h in c.layer_hooks(context)]
        if bb.model_type == "wavlm":
            heads = bb.layers[0].attention.num_heads
            bias = bb.layers[0].attention.compute_bias(n + length, n + length)
            bias = bias.repeat(batch, 1, 1, 1).view(
                batch * heads, n + length, -1
            )
            kwargs = {"attention_mask": mask, "position_bias": bias}
            if not bb.pre_ln:
                kwargs["index"] = i
            with bb.layer_hooks(i, hooks):
                out = layer(seq, **kwargs)[0]
        else:
            hf_mask = create_bidirectional_mask(
                config=bb.model.config, inputs_embeds=seq, attention_mask=mask
            )
            with bb.layer_hooks(i, hooks):
                out = layer(seq, attention_mask=hf_mask)
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
        options={"prompt_length": 3, "pet_layers": pet_layers},
        output_all_hiddens=True,
    ).eval()
    perturb_pet(enc, std=0.2)
    with torch.no_grad():  # sharp attention, so that every key matters
        for layer in enc.backbone.layers:
            layer.attention.q_proj.weight.mul_(20)
            layer.attention.k_proj.weight.mul_(20)
    with torch.no_grad():  # compare the layer stack itself: no Inter delta
        for name, p in enc.named_parameters():
            if name.startswith("pet.inter.") and ".up." in name:
                p.zero_()
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
        options={"pet_layers": [1]},
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
    samples = sample_lengths(wav, lens)
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


def test_only_the_backbone_package_imports_transformers():
    """HF calling conventions live in one package (``backbones/``)."""
    import ast
    import pathlib

    package = pathlib.Path(__file__).parents[2] / "speechbrain_unipet"
    offenders = []
    for path in package.rglob("*.py"):
        if "backbones" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] == "transformers" for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not offenders
