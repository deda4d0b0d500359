"""init_from across PET methods (``carry_encoder_state``), on tiny random
models: a ``finetune`` encoder started from a ``frozen``, ``bitfit`` or
``lora`` one (LoRA merged) computes what that one computed; method changes
that cannot carry exactly are refused, naming both methods."""

import pytest
import torch
from helpers import perturb_pet, variant_id

from speechbrain_unipet.lobes import PETEncoder
from speechbrain_unipet.training.hparams import RecipeError
from speechbrain_unipet.training.warm_start import (
    INIT_CHAINS,
    carry_encoder_state,
    check_init_from,
)

VARIANTS = [("wavlm", False), ("wav2vec2", True)]


def padded_batch():
    torch.manual_seed(0)
    return torch.randn(3, 4000), torch.tensor([1.0, 0.7, 0.45])


def outputs(encoder):
    wav, lens = padded_batch()
    with torch.no_grad():
        return encoder.eval()(wav, lens)


def state_bytes(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("method", ["lora", "frozen", "bitfit", "finetune"])
def test_finetune_starts_from_what_the_earlier_method_computed(
    ssl_folder, variant, method
):
    folder = ssl_folder(*variant)
    options = (
        {"lora_targets": ["q_proj", "k_proj", "v_proj", "out_proj"]}
        if method == "lora"
        else None
    )
    theirs = PETEncoder(folder, method=method, options=options)
    perturb_pet(theirs, std=0.2)  # LoRA B, biases, layer weights: non-zero
    before = state_bytes(theirs)
    expected = outputs(theirs)
    mine = PETEncoder(folder, method="finetune")
    assert not torch.allclose(outputs(mine), expected, atol=1e-3)
    names = set(mine.pet_state_dict())

    carried = carry_encoder_state(theirs, mine)

    torch.testing.assert_close(outputs(mine), expected, atol=1e-5, rtol=0)
    if method == "lora":
        assert "LoRA merged" in carried
    # A plain fine-tuning encoder: the same tensors train, no LoRA.
    assert set(mine.pet_state_dict()) == names
    assert not any("lora_" in n for n, _ in mine.named_parameters())
    # The earlier encoder is only read (its LoRA is not merged in place).
    after = theirs.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_same_method_takes_the_pet_state(ssl_folder):
    folder = ssl_folder("wavlm")
    options = {"adapter_dim": 4}
    theirs = PETEncoder(folder, method="inner_adapter", options=options)
    perturb_pet(theirs, std=0.2)
    mine = PETEncoder(folder, method="inner_adapter", options=options)
    assert carry_encoder_state(theirs, mine) == "PET weights"
    torch.testing.assert_close(outputs(mine), outputs(theirs))
    other = PETEncoder(
        folder, method="inner_adapter", options={"adapter_dim": 8}
    )
    with pytest.raises(RecipeError, match="adapter_dim"):
        carry_encoder_state(theirs, other)


@pytest.mark.parametrize(
    "theirs, mine",
    [
        ("inner_adapter", "finetune"),  # parallel adapters cannot be folded
        ("unipet", "finetune"),
        ("finetune", "lora"),  # lora keeps the fine-tuned weights frozen
        ("lora", "frozen"),
    ],
)
def test_other_method_changes_are_refused_naming_both(ssl_folder, theirs, mine):
    folder = ssl_folder("wavlm")
    earlier = PETEncoder(folder, method=theirs, options={"adapter_dim": 4})
    perturb_pet(earlier)
    this = PETEncoder(folder, method=mine)
    before = state_bytes(this)
    with pytest.raises(RecipeError) as err:
        carry_encoder_state(earlier, this, "init_from 'x'")
    message = str(err.value)
    assert f"holds method '{theirs}'" in message
    assert f"trains method '{mine}'" in message
    assert (
        "'finetune' run from a model of method 'frozen', 'bitfit', 'lora'"
        in (message)
    )
    assert all(torch.equal(this.state_dict()[k], v) for k, v in before.items())
    assert INIT_CHAINS["finetune"] == ("frozen", "bitfit", "lora", "finetune")


def test_frozen_weights_that_differ_are_refused_not_dropped(ssl_folder):
    """An encoder that ran on other Transformer weights (an export with
    --merge-lora is a 'frozen' one): 'frozen' would keep this run's
    pretrained weights, so it is refused; 'finetune' takes them."""
    folder = ssl_folder("wavlm")
    lora = PETEncoder(folder, method="lora")
    perturb_pet(lora, std=0.2)
    lora.merge_lora()
    merged = PETEncoder(folder, method="frozen")
    with torch.no_grad():
        for name, param in merged.named_parameters():
            param.copy_(dict(lora.named_parameters())[name])
    expected = outputs(merged)
    with pytest.raises(RecipeError, match="keeps frozen.*q_proj"):
        carry_encoder_state(merged, PETEncoder(folder, method="frozen"))
    mine = PETEncoder(folder, method="finetune")
    carry_encoder_state(merged, mine)
    torch.testing.assert_close(outputs(mine), expected, atol=1e-5, rtol=0)


def test_other_backbone_or_pretrained_weights_are_refused(ssl_folder):
    theirs = PETEncoder(ssl_folder("wavlm"), method="frozen")
    with pytest.raises(RecipeError, match="wavlm backbone.*hubert backbone"):
        carry_encoder_state(
            theirs, PETEncoder(ssl_folder("hubert"), method="finetune")
        )
    with pytest.raises(RecipeError, match="other pretrained weights"):
        carry_encoder_state(
            theirs, PETEncoder(ssl_folder("wavlm", True), method="finetune")
        )


def test_early_check_reads_the_method_of_a_run_folder(ssl_folder, tmp_path):
    """What the training script runs before the data preparation."""
    hparams = {"ssl_encoder": PETEncoder(ssl_folder("wavlm"), "finetune")}
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    (run / "hyperparams.yaml").write_text(
        "pet_method: inner_adapter\nssl_encoder: !new:x.Y\n"
    )
    with pytest.raises(RecipeError, match="'inner_adapter'.*'finetune'"):
        check_init_from(hparams, run)
    (run / "hyperparams.yaml").write_text("recipe:\n    pet_method: lora\n")
    check_init_from(hparams, run)
    with pytest.raises(RecipeError, match="does not exist"):
        check_init_from(hparams, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="lacks"):
        check_init_from(hparams, tmp_path / "empty")


def test_loading_a_run_keeps_the_callers_random_stream(tmp_path):
    """A run's saved yaml seeds every generator when it is loaded (its
    ``__set_seed``): a warm start or transfer that loads it keeps its own
    seed and draws (a user's transfer with --seed=7 went on with 1986)."""
    import shutil

    from helpers import DATA

    from speechbrain_unipet.training.runs import load_trained_model

    run = tmp_path / "run"
    shutil.copytree(DATA / "legacy_run_unipet", run)
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    load_trained_model(run)
    assert torch.initial_seed() == 7
    assert torch.equal(torch.rand(4), expected)


def test_init_from_a_folder_that_does_not_exist_says_so(tmp_path):
    from speechbrain_unipet.training.warm_start import check_init_from

    with pytest.raises(RecipeError, match="no_such_run' does not exist"):
        check_init_from({}, tmp_path / "no_such_run")
