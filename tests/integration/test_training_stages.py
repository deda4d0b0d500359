"""The state-of-the-art recipe's mechanics, checked with numbers through the
recipe: speed perturbation's classes, the margin and learning-rate
schedules, sub-centres with inter-top-k, keeping and averaging the last
checkpoints, the large-margin fine-tuning stage and the speaker back-ends
(the same mechanics on their own: ``tests/unit/test_losses.py``,
``test_schedules.py``, ``test_pipelines.py``, ``test_backends.py``)."""

import csv
import re
import shutil

import pytest
import torch
from helpers import (
    FILES,
    RECIPE,
    checkpoints,
    ckpt_state,
    folder_digest,
    labels,
    load_in_fresh_process,
    merged_args,
    recipe_embeddings,
    speakers,
    steps_per_epoch,
    train,
    verify,
)

from speechbrain_unipet.export import export
from speechbrain_unipet.lobes import PETEncoder
from speechbrain_unipet.training.backends import build_backend
from speechbrain_unipet.training.hparams import (
    RecipeError,
    check_recipe_values,
    load_recipe_hparams,
)
from speechbrain_unipet.training.runs import compute_embedding
from speechbrain_unipet.training.warm_start import init_from_export
from speechbrain_unipet.utils.audio import load_audio

# The MFA back-end trains, verifies and exports (LoRA merged too) in
# tests/integration/test_w2v_bert_recipe.py (the w2v_bert yamls use it).
BACKENDS = ["mhfa", "ca_mhfa"]
UNIPET_SMALL = ("--adapter_dim=4", "--prompt_length=2")


# ------------------------------------------------------ speed perturbation
@pytest.fixture(scope="module")
def speed_run(recipe_env, tmp_path_factory):
    """A one-epoch ``unipet`` run with speed perturbation, and its log (the
    first stage of the large-margin test)."""
    out = tmp_path_factory.mktemp("speed") / "stage1"
    done = train(
        recipe_env, "unipet", out, "--speed_perturb=True", *UNIPET_SMALL
    )
    return out, done.stdout + done.stderr


def test_speed_perturbation_triples_the_classes(speed_run, tmp_path):
    out, log = speed_run
    (ckpt,) = checkpoints(out)
    n = speakers(out)
    assert ckpt_state(ckpt, "classifier")["weight"].shape[0] == 3 * n
    assert f"{3 * n} classes for {n} speakers" in log
    # The exported classifier keeps the speakers' own classes.
    hub = export(out, tmp_path / "hub")
    exported = torch.load(hub / "classifier.ckpt", weights_only=True)
    torch.testing.assert_close(
        exported["weight"], ckpt_state(ckpt, "classifier")["weight"][:n]
    )
    # Nothing to average: the run kept no last checkpoints.
    with pytest.raises(RecipeError, match="ckpt_keep_last=0"):
        export(out, tmp_path / "avg", average_last=2)


def test_first_speed_must_be_one(recipe_env, tmp_path):
    done = train(
        recipe_env,
        "frozen",
        tmp_path / "bad",
        "--speed_perturb=True",
        "--speeds=[0.9,1.0,1.1]",
        check=False,
    )
    assert done.returncode != 0
    assert "--speeds=[0.9, 1.0, 1.1]" in done.stderr
    assert "starting with 1.0" in done.stderr
    with pytest.raises(RecipeError, match="whole per cent"):
        check_recipe_values({"speeds": [1.0, 0.925]})


# ------------------------------------------------ margin, sub-centres
def test_recipe_raises_the_margin_every_step(frozen_two_epochs):
    out = frozen_two_epochs  # the margin rising over epochs 1 and 2
    with open(out / "save" / "train.csv", encoding="utf-8") as f:
        steps = len(list(csv.DictReader(f))) // 4  # FAST: batch_size 4
    logged = re.findall(
        r"train loss: [0-9.e+-]+, train margin: ([0-9.e+-]+)",
        (out / "train_log.txt").read_text(),
    )
    # Rising from the start of epoch 1 to the start of epoch 3: the margin
    # of each epoch's last step is 0.2 * (epoch - 1 + (steps - 1) / steps) / 2.
    expected = [0.2 * (e + (steps - 1) / steps) / 2 for e in (0, 1)]
    # (the log keeps 3 significant digits)
    assert [float(m) for m in logged] == pytest.approx(expected, rel=5e-3)


def test_recipe_with_sub_centers_top_k_and_speeds_exports_speaker_classes(
    recipe_env, tmp_path
):
    out = tmp_path / "sc"
    train(
        recipe_env,
        "frozen",
        out,
        "--sub_centers=3",
        "--top_k=2",
        "--speed_perturb=True",
    )
    (ckpt,) = checkpoints(out)
    n = speakers(out)
    weight = ckpt_state(ckpt, "classifier")["weight"]
    assert weight.shape[0] == 3 * 3 * n  # speeds x sub-centres x speakers
    hub = export(out, tmp_path / "hub")
    exported = torch.load(hub / "classifier.ckpt", weights_only=True)
    torch.testing.assert_close(exported["weight"], weight[: 3 * n])
    got = load_in_fresh_process(hub, recipe_env["data"], tmp_path, tmp_path)
    assert got["labels"][0].startswith("id")


# ------------------------------------- learning rate, last checkpoints
THREE_EPOCHS = (
    "--number_of_epochs=3",
    "--ckpt_keep_last=3",
    "--lr_schedule=warmup_exp",
    "--lr_warmup_epochs=1",
    "--lr_final_ratio=0.01",
    *UNIPET_SMALL,
)


@pytest.fixture(scope="module")
def three_epochs(recipe_env, tmp_path_factory):
    """A three-epoch ``unipet`` run keeping its last 3 checkpoints, its
    learning rate warmed up over epoch 1, then decayed exponentially."""
    out = tmp_path_factory.mktemp("three_epochs") / "keep_last"
    train(recipe_env, "unipet", out, *THREE_EPOCHS)
    return out


def test_warmup_then_exponential_decay_per_step(three_epochs):
    out = three_epochs
    steps = steps_per_epoch(out)
    logged = re.findall(
        r"lr_backend: ([0-9.e+-]+)", (out / "train_log.txt").read_text()
    )
    # The rate of each epoch's last step (WeSpeaker's ExponentialDecrease):
    # 0.001 * 0.01 ** (progress / 3), times the warm-up 0 -> 1 over epoch 1.
    last = [(e + (steps - 1) / steps) for e in range(3)]
    expected = [0.001 * min(p, 1) * 0.01 ** (p / 3) for p in last]
    assert [float(v) for v in logged] == pytest.approx(expected, rel=5e-3)


def test_keep_last_keeps_the_newest_end_of_epoch_checkpoints(three_epochs):
    ckpts = checkpoints(three_epochs)
    assert len(ckpts) == 3
    epochs = [
        int(re.search(r"\d+", (c / "counter.ckpt").read_text()).group())
        for c in ckpts
    ]
    assert sorted(epochs) == [1, 2, 3]


def test_averaged_export_and_verification_use_the_mean(three_epochs, tmp_path):
    ckpts = checkpoints(three_epochs)
    hub = export(three_epochs, tmp_path / "avg", average_last=3)
    for name in ("embedding_model", "ssl_encoder"):
        exported = torch.load(hub / f"{name}.ckpt", weights_only=True)
        exported = exported["state"] if name == "ssl_encoder" else exported
        for key, value in exported.items():
            if not value.is_floating_point():
                continue
            mean = torch.stack(
                [ckpt_state(c, name)[key].float() for c in ckpts]
            ).mean(dim=0)
            torch.testing.assert_close(value, mean, msg=f"{name}.{key}")
    averaged = verify(three_epochs, "--average_last=3")
    best = verify(three_epochs)
    assert averaged["num_trials"] == best["num_trials"] == 6
    log = (three_epochs / "verification_log.txt").read_text()
    assert "Averaged 3 checkpoints" in log
    with pytest.raises(Exception, match="--ckpt_keep_last"):
        export(three_epochs, tmp_path / "four", average_last=4)


# --------------------------------------------- large-margin fine-tuning
def test_large_margin_stage_starts_from_the_run_and_changes_what_it_should(
    recipe_env, speed_run, tmp_path
):
    first = tmp_path / "stage1"
    shutil.copytree(speed_run[0], first)  # moved below
    before = folder_digest(first)
    (stage1,) = checkpoints(first)
    second = tmp_path / "stage2"
    # Learning rates 0: what the stage loaded is what it saves.
    done = train(
        recipe_env,
        "unipet",
        second,
        f"--init_from={first}",
        "--speed_perturb=False",
        "--sentence_len=1.0",
        "--margin=0.5",
        "--lr=0",
        "--lr_pet=0",
        "--adapter_dim=4",
        "--prompt_length=2",
        "--num_valid_speakers=3",  # one training speaker fewer
    )
    assert "speakers, 1 speed(s))" in done.stderr + done.stdout
    assert folder_digest(first) == before  # the first run is only read
    (stage2,) = checkpoints(second)
    n = speakers(second)
    for name in ("ssl_encoder", "embedding_model"):
        old, new = ckpt_state(stage1, name), ckpt_state(stage2, name)
        assert set(old) == set(new)
        for key, value in old.items():
            if "running_" in key or "num_batches" in key:
                continue  # BatchNorm statistics follow the new data
            torch.testing.assert_close(new[key], value, msg=f"{name}.{key}")
    old = ckpt_state(stage1, "classifier")["weight"]
    new = ckpt_state(stage2, "classifier")["weight"]
    assert old.shape[0] == 3 * speakers(first) and new.shape[0] == n
    # Each speaker of both runs keeps its speed-1.0 class, matched by name.
    first_idx, second_idx = labels(first), labels(second)
    assert len(second_idx) < len(first_idx)
    for spk, row in second_idx.items():
        if spk in first_idx:
            torch.testing.assert_close(new[row], old[first_idx[spk]])
        else:
            assert not any(torch.allclose(new[row], r) for r in old)
    log = (second / "train_log.txt").read_text()
    assert re.search(r"train margin: 0?\.5\b|train margin: 5\.00e-01", log)
    with open(second / "save" / "train.csv", encoding="utf-8") as f:
        crops = [
            (int(r["stop"]) - int(r["start"])) / int(r["sample_rate"])
            for r in csv.DictReader(f)
        ]
    assert max(crops) == pytest.approx(1.0)  # the stage's longer crops
    # Re-running the stage resumes from its own checkpoint, even with the
    # first run gone.
    first.rename(tmp_path / "stage1-moved")
    train(
        recipe_env,
        "unipet",
        second,
        f"--init_from={first}",
        "--speed_perturb=False",
        "--sentence_len=1.0",
        "--margin=0.5",
        "--adapter_dim=4",
        "--prompt_length=2",
        "--num_valid_speakers=3",
        "--number_of_epochs=2",
    )
    assert (
        len(
            re.findall(
                r"^epoch: ", (second / "train_log.txt").read_text(), flags=re.M
            )
        )
        == 2
    )


def test_init_from_its_own_output_folder_is_refused(recipe_env, three_epochs):
    done = train(
        recipe_env,
        "unipet",
        three_epochs,
        f"--init_from={three_epochs}",
        *merged_args(THREE_EPOCHS, ["--number_of_epochs=4"]),
        check=False,
    )
    assert done.returncode != 0
    assert "own output_folder" in done.stderr


# ------------------------------------------------------------ back-ends
BACKEND_SIZES = (
    "--mhfa_heads=4",
    "--mhfa_compression_dim=8",
    "--mfa_adapter_dim=8",
)


@pytest.fixture(scope="module")
def lora_mhfa(recipe_env, tmp_path_factory):
    """A LoRA run with the MHFA back-end (WeSpeaker's W2V-BERT stage 1)."""
    out = tmp_path_factory.mktemp("lora_mhfa") / "run"
    train(recipe_env, "lora", out, "--backend=mhfa", *BACKEND_SIZES)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_trains_verifies_and_exports(
    recipe_env, backend, tmp_path, request
):
    if backend == "mhfa":
        out = request.getfixturevalue("lora_mhfa")
    else:
        out = tmp_path / backend
        train(recipe_env, "lora", out, f"--backend={backend}", *BACKEND_SIZES)
    (ckpt,) = checkpoints(out)
    # The encoder returns all hidden states: its layer weights do not train.
    assert "layer_weights" not in ckpt_state(ckpt, "ssl_encoder")
    result = verify(out)
    assert result["num_trials"] == 6 and 0.0 <= result["eer"] <= 1.0
    hub = export(out, tmp_path / "hub")
    got = load_in_fresh_process(hub, recipe_env["data"], tmp_path, tmp_path)
    ref = recipe_embeddings(out, recipe_env["data"])
    torch.testing.assert_close(got["single"], ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(got["padded"], got["single"], atol=1e-4, rtol=0)
    if backend != "mhfa":
        # LoRA is merged in the encoder, whatever reads its hidden states:
        # merged exports embed alike with MHFA (below), ECAPA-TDNN
        # (test_export.py) and MFA (test_w2v_bert_recipe.py).
        return
    # LoRA merged into the backbone: the same embeddings.
    merged = export(out, tmp_path / "merged", merge_lora=True)
    got = load_in_fresh_process(merged, recipe_env["data"], tmp_path, tmp_path)
    torch.testing.assert_close(got["single"], ref, atol=1e-4, rtol=0)


# ------------------------------ a method change: joint fine-tuning after LoRA
def test_finetune_stage_starts_from_a_lora_run_with_lora_merged(
    recipe_env, lora_mhfa, tmp_path
):
    """WeSpeaker's W2V-BERT chain: LoRA, merged into the backbone, then full
    fine-tuning; from the run and from an export with --merge-lora."""
    first = lora_mhfa
    (ssl,) = [
        a.split("=", 1)[1]
        for a in recipe_env["args"]
        if a.startswith("--ssl_hub=")
    ]
    mhfa = ("--backend=mhfa", *BACKEND_SIZES)
    # A method LoRA cannot carry into fails before the data preparation.
    refused = train(
        recipe_env,
        "frozen",
        tmp_path / "refused",
        f"--init_from={first}",
        *mhfa,
        check=False,
    )
    assert refused.returncode != 0
    assert "holds method 'lora'" in refused.stderr
    assert "trains method 'frozen'" in refused.stderr
    assert not (tmp_path / "refused" / "save" / "train.csv").exists()

    before = folder_digest(first)
    second = tmp_path / "finetune"
    # The encoder's rate 0: what it starts from is what it saves.
    done = train(
        recipe_env,
        "finetune",
        second,
        f"--init_from={first}",
        "--lr_pet=0",
        *mhfa,
    )
    assert (
        "Initialised the encoder (the Transformer weights (LoRA merged) of a "
        "'lora' encoder) and the speaker back-end from the run"
    ) in done.stderr + done.stdout
    assert folder_digest(first) == before  # the first run is only read
    (stage1,) = checkpoints(first)
    (stage2,) = checkpoints(second)
    lora = PETEncoder(ssl, method="lora", output_all_hiddens=True)
    lora.load_pet_state_dict(ckpt_state(stage1, "ssl_encoder"))
    lora.merge_lora()
    merged = dict(lora.named_parameters())
    carried = ckpt_state(stage2, "ssl_encoder")
    assert any(".q_proj.weight" in k for k in carried)
    for key, value in carried.items():
        torch.testing.assert_close(value, merged[key], rtol=0, atol=0)
    # The stage trained: an epoch with a finite loss, the back-end moved.
    (loss,) = re.findall(
        r"^epoch: 1,.* train loss: ([0-9.e+-]+)",
        (second / "train_log.txt").read_text(),
        flags=re.M,
    )
    assert torch.isfinite(torch.tensor(float(loss)))
    old = ckpt_state(stage1, "embedding_model")
    new = ckpt_state(stage2, "embedding_model")
    assert any(not torch.equal(new[k], v) for k, v in old.items())

    # From an export with LoRA merged (a 'frozen' model on its backbone/):
    # the new run embeds exactly as the LoRA run.
    hub = export(first, tmp_path / "merged", merge_lora=True)
    hparams, _ = load_recipe_hparams(
        str(RECIPE / "hparams/finetune.yaml"),
        {
            "data_folder": str(recipe_env["data"]),
            "ssl_hub": ssl,
            "output_folder": str(tmp_path / "from_export"),
            "ecapa_channels": [16, 16, 16, 16, 48],
            "emb_dim": 8,
            "backend": "mhfa",
            "mhfa_heads": 4,
            "mhfa_compression_dim": 8,
            "mfa_adapter_dim": 8,
        },
    )
    build_backend(hparams, num_speakers=speakers(first))
    init_from_export(hparams, hub)
    modules = torch.nn.ModuleDict(hparams["modules"]).eval()
    mine = torch.cat(
        [
            compute_embedding(
                modules, load_audio(recipe_env["data"] / "wav" / f)[None]
            )
            for f in FILES
        ]
    )
    ref = recipe_embeddings(first, recipe_env["data"])
    torch.testing.assert_close(mine, ref, atol=1e-4, rtol=0)
