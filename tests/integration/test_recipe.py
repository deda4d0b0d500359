"""End-to-end tests of the VoxCeleb recipe on tiny generated data (the
runs most tests read are the session's shared ``trained`` runs,
``tests/integration/conftest.py``)."""

import csv
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import (
    RATE,
    epochs_logged,
    kill_after_intra_epoch_checkpoint,
    merged_args,
    run_ddp,
    run_script,
    train,
    verify,
)

# One recipe run per kind of PET method: the backbone frozen, fine-tuned,
# its biases tuned, LoRA, and UniPET (inner and inter adapters, deep
# prompts, gates). Every method's yaml loads and builds
# (tests/unit/test_recipe_yamls.py), its PET state holds exactly its
# trainable tensors and round-trips through the checkpoint file
# (tests/unit/test_pet_state.py), and every method gets gradients and
# trains on every backbone family (tests/unit/test_gradient_health.py).
RECIPE_METHODS = ["frozen", "finetune", "bitfit", "lora", "unipet"]


@pytest.mark.parametrize("method", RECIPE_METHODS)
def test_method_trains_and_verifies(trained, method):
    """One epoch, then verification: the run's files, one checkpoint that
    holds no frozen backbone weight, test speakers kept out of training,
    the verification's log, scores and plots of the 6 trials."""
    out = trained(method)
    for name in (
        "train_log.txt",
        "hyperparams.yaml",
        "log.txt",
        "save/train.csv",
        "save/dev.csv",
        "save/label_encoder.txt",
    ):
        assert (out / name).is_file(), name
    ckpts = list((out / "save").glob("CKPT+*"))
    assert len(ckpts) == 1
    # PET checkpoints hold no frozen backbone weight.
    ssl_ckpt = ckpts[0] / "ssl_encoder.ckpt"
    state = torch.load(ssl_ckpt, weights_only=True)["state"]
    assert state["layer_weights"].shape == (3,)
    if method != "finetune":
        assert not any(k.endswith("q_proj.weight") for k in state)
    # Test speakers (id4, id5) never reach training.
    train_csv = (out / "save" / "train.csv").read_text()
    assert "id4" not in train_csv and "id5" not in train_csv
    result = verify(out)
    assert 0.0 <= result["eer"] <= 1.0 and 0.0 <= result["min_dcf"] <= 1.0
    log = (out / "verification_log.txt").read_text()
    assert "EER" in log and "results.json" in log
    assert result["num_trials"] == 6 and result["pet_method"] == method
    for name in ("scores.txt", "det.png", "score_histogram.png"):
        assert (out / name).is_file(), name
    assert len((out / "scores.txt").read_text().splitlines()) == 6


def test_as_norm_scoring(trained):
    out = trained("lora")
    result = verify(
        out, "--score_norm=as-norm", "--cohort_top_n=2", "--cohort_max_files=4"
    )
    assert result["score_norm"] == "as-norm"
    # A capped cohort is dealt over the speakers, not the first in order.
    from speechbrain_unipet.data.preparation import read_csv_rows
    from speechbrain_unipet.scoring.store import EmbeddingStore

    cohort = EmbeddingStore.load(out / "embeddings" / "cohort")
    rows = read_csv_rows(out / "save" / "train.csv")
    speaker_of = {row["wav"]: row["spk_id"] for row in rows}
    covered = {speaker_of[i.rsplit(":", 1)[0]] for i in cohort.ids}
    assert len(cohort) == 4
    assert len(covered) == min(4, len(set(speaker_of.values()))) > 1


def test_rerun_resumes_epoch_count(recipe_env, trained, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(trained("frozen"), out)  # a one-epoch run
    assert epochs_logged(out) == [1]
    done = train(recipe_env, "frozen", out, "--number_of_epochs=2")
    assert epochs_logged(out) == [1, 2]
    assert "Loading a checkpoint" in done.stdout + done.stderr


def test_sigkill_mid_epoch_resumes_from_intra_epoch_checkpoint(recipe_env):
    out = recipe_env["root"] / "killed"
    kill_after_intra_epoch_checkpoint(
        "hparams/lora.yaml",
        merged_args(
            recipe_env["args"],
            [
                f"--output_folder={out}",
                "--batch_size=2",
                "--number_of_epochs=2",
                "--ckpt_interval_minutes=0",
                "--ckpt_interval_steps=2",
            ],
        ),
        out,
    )
    assert not (out / "train_log.txt").is_file() or epochs_logged(out) == []
    done = train(
        recipe_env,
        "lora",
        out,
        "--batch_size=2",
        "--number_of_epochs=2",
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=2",
    )
    log = done.stdout + done.stderr
    assert "Loading a checkpoint" in log
    assert epochs_logged(out) == [1, 2]


def test_two_process_gloo_ddp_with_activation_checkpointing(
    recipe_env, tmp_path
):
    """DDP needs no find_unused_parameters, also with non-reentrant
    activation checkpointing (layers recomputed in backward). Without
    activation checkpointing: test_own_data_recipe.py's
    test_one_recording_speakers_two_process_gloo."""
    out = tmp_path / "ddp"
    # Two epochs: checkpoints are deleted, which every process must agree
    # on (a mismatch left both waiting for ever).
    run_ddp(
        merged_args(recipe_env["args"], ["--number_of_epochs=2"]),
        out,
        "--gradient_checkpointing=True",
    )
    assert epochs_logged(out) == [1, 2]
    assert 1 <= len(list((out / "save").glob("CKPT+*"))) <= 2


def test_unknown_method_fails_before_training(recipe_env, tmp_path):
    done = train(
        recipe_env,
        "unipet",
        tmp_path / "bad1",
        "--pet_method=adapters",
        check=False,
    )
    assert done.returncode != 0
    assert "Unknown PET method 'adapters'" in done.stderr
    assert "Valid methods: finetune, frozen" in done.stderr


def test_unknown_override_is_rejected(recipe_env, tmp_path):
    done = train(
        recipe_env,
        "frozen",
        tmp_path / "bad2",
        "--data_foldr=/x",
        check=False,
    )
    assert (
        done.returncode != 0
        and "--data_foldr: did you mean --data_folder" in done.stderr
    )


def test_missing_data_folder(recipe_env, tmp_path):
    done = train(
        recipe_env,
        "frozen",
        tmp_path / "o",
        f"--data_folder={tmp_path / 'none'}",
        check=False,
    )
    assert done.returncode != 0
    assert f"data_folder '{tmp_path / 'none'}' does not exist" in done.stderr


def test_trial_naming_absent_file(recipe_env, tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 id4/vid0/00001.wav id9/vid0/00001.wav\n")
    done = train(
        recipe_env,
        "frozen",
        tmp_path / "o",
        f"--verification_file={trials}",
        check=False,
    )
    assert done.returncode != 0
    assert "id9/vid0/00001" in done.stderr and str(trials) in done.stderr


def test_bad_audio_is_skipped_or_named(recipe_env, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(recipe_env["data"], data)
    corrupt = data / "wav" / "id0" / "vid9" / "00001.wav"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"RIFF not really audio")
    short = data / "wav" / "id1" / "vid9" / "00001.wav"
    short.parent.mkdir()
    sf.write(short, np.zeros(100, np.float32), RATE)
    out = tmp_path / "o"
    done = train(
        recipe_env,
        "frozen",
        out,
        f"--data_folder={data}",
        f"--verification_file={data / 'trials.txt'}",
        check=False,
    )
    assert done.returncode != 0  # the corrupt file cannot even be inspected
    assert str(corrupt) in done.stderr
    corrupt.unlink()
    done = train(
        recipe_env,
        "frozen",
        out,
        f"--data_folder={data}",
        f"--verification_file={data / 'trials.txt'}",
    )
    assert (
        "Skipped 0 empty recording(s) and 1 shorter than a 0.5 s"
        in done.stdout + done.stderr
    )
    wrong_rate = data / "wav" / "id2" / "vid9" / "00001.wav"
    wrong_rate.parent.mkdir()
    sf.write(wrong_rate, np.zeros(4000, np.float32), 4000)
    done = train(
        recipe_env,
        "frozen",
        tmp_path / "o2",
        f"--data_folder={data}",
        f"--verification_file={data / 'trials.txt'}",
        check=False,
    )
    assert done.returncode != 0
    assert (
        "sampled at 4000 Hz, below 8000" in done.stderr
        and str(wrong_rate) in done.stderr
    )


def test_batch_size_one_is_refused_up_front(recipe_env, tmp_path):
    done = train(
        recipe_env, "frozen", tmp_path / "o", "--batch_size=1", check=False
    )
    assert done.returncode != 0
    assert "--batch_size=1 must be an integer >= 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_train_log_shows_the_rates_each_epoch_used(frozen_two_epochs):
    out = frozen_two_epochs
    text = (out / "train_log.txt").read_text()
    rates = re.findall(r"lr_backend: ([0-9.e+-]+)", text)
    with open(out / "save" / "train.csv", encoding="utf-8") as f:
        steps = len(list(csv.DictReader(f))) // 4  # FAST: batch_size 4
    # lr 0.001 and lr_final_ratio 0.1, linear over 2 epochs, set every
    # step: the rate of each epoch's last step.
    progress = [(e + (steps - 1) / steps) / 2 for e in (0, 1)]
    expected = [0.001 * (1 - 0.9 * p) for p in progress]
    assert [float(r) for r in rates] == pytest.approx(expected, rel=5e-3)


def test_verification_names_bad_trial_lists_and_options(trained, tmp_path):
    """A trial listed twice is named with both lines, a mistyped option
    gets a suggestion (what a verification logs:
    test_method_trains_and_verifies)."""
    out = trained("frozen")
    trials = tmp_path / "dup.txt"
    line = "1 id4/vid0/00001.wav id4/vid1/00001.wav\n"
    trials.write_text(line + "0 id4/vid0/00001.wav id5/vid0/00001.wav\n" + line)
    done = run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        f"--verification_file={trials}",
        "--device=cpu",
        check=False,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{trials}:3: the trial" in done.stderr
    assert "already on line 1" in done.stderr
    done = run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        "--max_chunk_secs=5",
        "--device=cpu",
        check=False,
    )
    assert "did you mean --max_chunk_seconds" in done.stderr


def test_noise_and_reverb_augmentation_from_local_folders(recipe_env, tmp_path):
    rng = np.random.default_rng(1)
    noise, rir = tmp_path / "noise", tmp_path / "rir"
    noise.mkdir()
    rir.mkdir()
    for i in range(2):
        sf.write(
            noise / f"n{i}.wav",
            (0.1 * rng.standard_normal(RATE)).astype(np.float32),
            RATE,
        )
        impulse = np.zeros(800, np.float32)
        impulse[0], impulse[200 + 100 * i] = 1.0, 0.3
        sf.write(rir / f"r{i}.wav", impulse, RATE)
    out = tmp_path / "aug"
    train(
        recipe_env,
        "lora",
        out,
        f"--noise_folder={noise}",
        f"--rir_folder={rir}",
    )
    assert (out / "save" / "noise.csv").read_text().count("\n") == 3
    assert (out / "save" / "rir.csv").is_file()
    assert epochs_logged(out) == [1]


def test_tensorboard_logging(frozen_two_epochs):
    out = frozen_two_epochs
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    tags = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
    assert {"EER/valid", "minDCF/valid", "ErrorRate/valid"} <= set(tags)


def test_a_copied_run_uses_its_own_files(trained, tmp_path):
    """``cp -r run copy`` then verify/export ``copy``: the copy's checkpoint
    and CSVs are read, even when the original is gone."""
    from speechbrain_unipet.training.runs import load_trained_model

    out = trained("frozen")
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(out, first)
    shutil.copytree(first, second)
    shutil.rmtree(first)
    hparams, _ = load_trained_model(second)
    assert hparams["save_folder"] == str(second / "save")
    assert str(out) not in str(hparams["train_annotation"])
    result = verify(second)
    assert result["num_trials"] == 6
    assert (second / "results.json").is_file()


def test_rerun_on_other_data_is_refused_before_anything_is_written(
    recipe_env, trained, tmp_path
):
    out = tmp_path / "rerun"
    shutil.copytree(trained("frozen"), out)  # a one-epoch run
    saved = (out / "hyperparams.yaml").read_text()
    checkpoints = sorted(p.name for p in (out / "save").glob("CKPT+*"))
    done = train(
        recipe_env, "frozen", out, "--num_valid_speakers=3", check=False
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "num_valid_speakers: prepared 2, now 3" in done.stderr
    assert "--overwrite_prep=True" in done.stderr
    assert (out / "hyperparams.yaml").read_text() == saved
    assert sorted(p.name for p in (out / "save").glob("CKPT+*")) == checkpoints
    train(
        recipe_env,
        "frozen",
        out,
        "--num_valid_speakers=3",
        "--overwrite_prep=True",
    )
    (aside,) = out.glob("save.replaced-*")
    assert sorted(p.name for p in aside.glob("CKPT+*")) == checkpoints
    assert epochs_logged(out)[-1] == 1  # a fresh run
