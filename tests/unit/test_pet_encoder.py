"""Method behaviour of PETEncoder on tiny random models (no network):
what trains, parameter counts, gates, prompts, LoRA merge, options."""

import pytest
import torch
from helpers import perturb_pet, variant_id

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder


@pytest.mark.parametrize(
    "variant",
    [("wavlm", False), ("wavlm", True), ("wav2vec2", False)],
    ids=variant_id,
)
@pytest.mark.parametrize("method", list(PET_METHODS))
def test_training_updates_exactly_the_trainable_tensors(
    ssl_folder, variant, method, wavs
):
    """Every trainable tensor gets a gradient and frozen tensors never
    change in training (train mode, optimiser steps). That the gradients
    are not negligible and lower a loss is tests/unit/test_gradient_health.py's
    job: "a trainable tensor changed" proves nothing (under Adam, rounding
    noise alone makes a full-size step)."""
    torch.manual_seed(0)
    enc = PETEncoder(ssl_folder(*variant), method=method).train()
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    trainable = [p for p in enc.parameters() if p.requires_grad]
    assert trainable, "every method trains something"
    opt = torch.optim.SGD(trainable, lr=0.1)
    lens = torch.tensor([1.0, 0.8, 0.55])
    target = torch.randn(3, 1, enc.hidden_size)
    for _ in range(2):
        opt.zero_grad()
        loss = ((enc(wavs, lens) - target) ** 2).mean()
        loss.backward()
        for name, p in enc.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"{name} got no gradient"
            else:
                assert p.grad is None, f"frozen {name} got a gradient"
        opt.step()
    for name, p in enc.named_parameters():
        if not p.requires_grad:
            assert torch.equal(before[name], p.detach()), (
                f"frozen {name} changed"
            )


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
        options={"adapter_dim": 4, "inter_adapter_dim": 3},
    )
    d, L = 32, 2
    adapter = lambda r: d * r + r + r * d + d  # noqa: E731
    expected = L * adapter(4) + (L + 1) * adapter(3) + (L + 1)
    assert enc.count_parameters()[0] == expected
    lora = PETEncoder(
        ssl_folder("wavlm"), method="lora", options={"lora_rank": 2}
    )
    # q and v projections, A: r x d, B: d x r, per layer, + layer weights
    assert lora.count_parameters()[0] == L * 2 * (2 * d * 2) + (L + 1)


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
    layer_outputs = []
    for layer in enc.backbone.layers:
        layer.register_forward_hook(
            lambda m, args, out: layer_outputs.append(out[0].requires_grad)
        )
    assert enc(wavs).requires_grad  # the head trains
    assert layer_outputs == [False] * enc.num_layers  # graph-free backbone
    assert not enc.grad_through_backbone


def test_unipet_gates_are_exposed(ssl_folder, wavs):
    enc = PETEncoder(ssl_folder("wavlm"), method="unipet").eval()
    _, g = enc(wavs, torch.tensor([1.0, 0.7, 0.5]), return_gates=True)
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
        folder,
        method="deep_prompt",
        options={"prompt_length": 5},
        output_all_hiddens=True,
    ).eval()
    with torch.no_grad():
        a, b = plain(wavs), deep(wavs)
    assert a.shape == b.shape
    torch.testing.assert_close(a[0], b[0])  # layer 0 input has no prompt
    assert not torch.allclose(a[1:], b[1:], atol=1e-4)


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
            options={"adapter_dropout": 0.0},
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


def test_bad_options_give_clear_errors(ssl_folder):
    folder = ssl_folder("wavlm")
    bad = [
        ("inner_adapter", {"inner_position": "ffm"}, "inner_position"),
        ("inner_adapter", {"pet_layers": [5]}, "pet_layers"),
        ("lora", {"lora_targets": ["query"]}, "lora_targets"),
        ("lora", {"lora_targets": []}, "lora_targets"),
        ("unipet", {"gated_branches": ["lora"]}, "gated_branches"),
        ("unipet", {"adapter_dim": 2.5}, r"adapter_dim=2.5 must be an integer"),
        (
            "unipet",
            {"adapter_dim": 0},
            r"adapter_dim=0 must be an integer >= 1",
        ),
        ("unipet", {"adapter_scale": float("nan")}, "adapter_scale=nan"),
        ("unipet", {"adapter_dropout": 1.5}, "adapter_dropout"),
        ("deep_prompt", {"prompt_length": "16"}, "prompt_length"),
        ("unipet", {"pet_layers": [True]}, "pet_layers"),
    ]
    for method, options, message in bad:
        with pytest.raises(ValueError, match=message):
            PETEncoder(folder, method=method, options=options)


def test_options_mapping_is_checked(ssl_folder):
    enc = PETEncoder(
        ssl_folder("wavlm"),
        method="lora",
        options={"lora_rank": 2, "lora_alpha": 4},
    )
    assert enc.options["lora_rank"] == 2 and enc.options["lora_alpha"] == 4.0
    with pytest.raises(
        ValueError, match=r"Unknown PET option\(s\) \['lora_rnk'\]"
    ):
        PETEncoder(ssl_folder("wavlm"), method="lora", options={"lora_rnk": 2})


@pytest.mark.parametrize(
    "variant, method, cached",
    [
        (("wavlm", False), "unipet", True),
        (("wav2vec2", False), "unipet", True),
        (("hubert", True), "deep_prompt", True),
        # Pre-LN: the gate scales the prompts before the LayerNorm; the
        # LayerNorm is factored exactly, so these are cached as well.
        (("hubert", True), "unipet", True),
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
    enc = PETEncoder(
        ssl_folder(*variant), method=method, options={"prompt_length": 3}
    )
    enc.eval()
    perturb_pet(enc, std=0.2)
    prompt_rows = []  # calls of the key projection on the prompts alone
    k_proj = enc.backbone.layers[0].attention.k_proj
    k_proj.register_forward_hook(
        lambda m, args, out: prompt_rows.append(args[0].shape[0] == 1)
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
