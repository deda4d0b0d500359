"""End-to-end tests of the VoxCeleb recipe on tiny generated data."""

import csv
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from speechbrain_unipet.testing import tiny_ssl_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
METHOD_YAMLS = sorted(
    p.stem
    for p in (RECIPE / "hparams").glob("*.yaml")
    if p.stem != "verification"
)
RATE = 16000
FAST = [
    "--number_of_epochs=1",
    "--batch_size=4",
    "--sentence_len=0.5",
    "--ecapa_channels=[16,16,16,16,48]",
    "--emb_dim=8",
    "--num_workers=0",
    "--num_valid_speakers=2",
    "--test_segment_len=0.5",
    "--device=cpu",
    "--noprogressbar",
]


def write_speaker_data(root):
    """8 speakers x 2 videos x 1 utterance (1.2 s) of speaker-specific tones;
    trials over speakers 4 and 5."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * RATE)) / RATE
    for s in range(8):
        for v in range(2):
            f0 = 110 + 40 * s
            x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
            x = 0.1 * x + 0.01 * rng.standard_normal(t.size)
            path = root / "wav" / f"id{s}" / f"vid{v}" / "00001.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.astype(np.float32), RATE)
    test = [f"id{s}/vid{v}/00001.wav" for s in (4, 5) for v in (0, 1)]
    lines = []
    for i, a in enumerate(test):
        for b in test[i + 1 :]:
            lines.append(f"{int(a[:3] == b[:3])} {a} {b}")
    (root / "trials.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def recipe_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    data = write_speaker_data(root / "data")
    ssl = tiny_ssl_folder(root / "models", "wavlm")
    return {
        "root": root,
        "data": data,
        "args": [
            f"--data_folder={data}",
            f"--verification_file={data / 'trials.txt'}",
            f"--ssl_hub={ssl}",
            *FAST,
        ],
    }


def run_script(script, *args, check=True, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, script, *map(str, args)],
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


def merged_args(base, extra):
    """``base`` command-line options with those in ``extra`` replaced."""
    keys = {e.split("=")[0] for e in extra}
    return [a for a in base if a.split("=")[0] not in keys] + list(extra)


def train(env, method, out, *extra, check=True):
    return run_script(
        "train_speaker_embeddings.py",
        f"hparams/{method}.yaml",
        *merged_args(env["args"], [f"--output_folder={out}", *extra]),
        check=check,
    )


def verify(out, *extra):
    run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        "--device=cpu",
        *extra,
    )
    with open(out / "results.json", encoding="utf-8") as f:
        return json.load(f)


def test_every_method_yaml_is_tested():
    from speechbrain_unipet.pet import PET_METHODS

    assert set(METHOD_YAMLS) == set(PET_METHODS)


@pytest.mark.parametrize("method", METHOD_YAMLS)
def test_method_trains_and_verifies(recipe_env, method):
    out = recipe_env["root"] / f"run_{method}"
    train(recipe_env, method, out)
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
    import torch

    state = torch.load(ssl_ckpt, weights_only=True)["state"]
    assert state["layer_weights"].shape == (3,)
    if method != "finetune":
        assert not any(k.endswith("q_proj.weight") for k in state)
    # Test speakers (id4, id5) never reach training.
    train_csv = (out / "save" / "train.csv").read_text()
    assert "id4" not in train_csv and "id5" not in train_csv
    result = verify(out)
    assert 0.0 <= result["eer"] <= 1.0 and 0.0 <= result["min_dcf"] <= 1.0
    assert result["num_trials"] == 6 and result["pet_method"] == method
    for name in ("scores.txt", "det.png", "score_histogram.png"):
        assert (out / name).is_file(), name
    assert len((out / "scores.txt").read_text().splitlines()) == 6


def test_as_norm_scoring(recipe_env):
    out = recipe_env["root"] / "run_lora"
    if not (out / "hyperparams.yaml").is_file():
        train(recipe_env, "lora", out)
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


def epochs_logged(out):
    text = (out / "train_log.txt").read_text()
    return [int(m) for m in re.findall(r"^epoch: (\d+)", text, flags=re.M)]


def test_rerun_resumes_epoch_count(recipe_env):
    out = recipe_env["root"] / "resume"
    train(recipe_env, "frozen", out)
    assert epochs_logged(out) == [1]
    done = train(recipe_env, "frozen", out, "--number_of_epochs=2")
    assert epochs_logged(out) == [1, 2]
    assert "Loading a checkpoint" in done.stdout + done.stderr


def test_sigkill_mid_epoch_resumes_from_intra_epoch_checkpoint(recipe_env):
    out = recipe_env["root"] / "killed"
    cmd = [
        sys.executable,
        "train_speaker_embeddings.py",
        "hparams/lora.yaml",
        *merged_args(
            recipe_env["args"],
            [
                f"--output_folder={out}",
                "--batch_size=2",
                "--number_of_epochs=2",
                "--ckpt_interval_minutes=0",
                "--ckpt_interval_steps=2",
            ],
        ),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=RECIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            ckpts = list((out / "save").glob("CKPT+*/CKPT.yaml"))
            if any("brain_intra_epoch_ckpt" in c.read_text() for c in ckpts):
                break
            if proc.poll() is not None:
                pytest.fail("training ended before an intra-epoch checkpoint")
            time.sleep(0.2)
        else:
            pytest.fail("no intra-epoch checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args, out, *extra):
    """Trains ``unipet`` with 2-process gloo torchrun; fails on an error."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "train_speaker_embeddings.py",
        "hparams/unipet.yaml",
        *args,
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        *extra,
    ]
    done = subprocess.run(
        cmd,
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return done


@pytest.mark.parametrize("checkpointing", [False, True])
def test_two_process_gloo_ddp(recipe_env, checkpointing):
    """DDP needs no find_unused_parameters, also with non-reentrant
    activation checkpointing (layers recomputed in backward)."""
    out = recipe_env["root"] / f"ddp_{checkpointing}"
    # Two epochs: checkpoints are deleted, which every process must agree
    # on (a mismatch left both waiting for ever).
    run_ddp(
        merged_args(recipe_env["args"], ["--number_of_epochs=2"]),
        out,
        f"--gradient_checkpointing={checkpointing}",
    )
    assert epochs_logged(out) == [1, 2]
    assert 1 <= len(list((out / "save").glob("CKPT+*"))) <= 2


def test_unknown_method_fails_before_training(recipe_env):
    done = train(
        recipe_env,
        "unipet",
        recipe_env["root"] / "bad1",
        "--pet_method=adapters",
        check=False,
    )
    assert done.returncode != 0
    assert "Unknown PET method 'adapters'" in done.stderr
    assert "Valid methods: finetune, frozen" in done.stderr


def test_unknown_override_is_rejected(recipe_env):
    done = train(
        recipe_env,
        "frozen",
        recipe_env["root"] / "bad2",
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
    import shutil

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


def test_train_log_shows_the_rates_each_epoch_used(recipe_env, tmp_path):
    out = tmp_path / "lr"
    train(recipe_env, "frozen", out, "--number_of_epochs=2")
    text = (out / "train_log.txt").read_text()
    rates = re.findall(r"lr_backend: ([0-9.e+-]+)", text)
    with open(out / "save" / "train.csv", encoding="utf-8") as f:
        steps = len(list(csv.DictReader(f))) // 4  # FAST: batch_size 4
    # lr 0.001 and lr_final_ratio 0.1, linear over 2 epochs, set every
    # step: the rate of each epoch's last step.
    progress = [(e + (steps - 1) / steps) / 2 for e in (0, 1)]
    expected = [0.001 * (1 - 0.9 * p) for p in progress]
    assert [float(r) for r in rates] == pytest.approx(expected, rel=5e-3)


def test_verification_logs_and_names_bad_trial_lists(recipe_env, tmp_path):
    out = recipe_env["root"] / "run_frozen"
    if not (out / "hyperparams.yaml").is_file():
        train(recipe_env, "frozen", out)
    verify(out)
    log = (out / "verification_log.txt").read_text()
    assert "EER" in log and "results.json" in log
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


def test_tensorboard_logging(recipe_env, tmp_path):
    out = tmp_path / "tb"
    train(recipe_env, "frozen", out, "--use_tensorboard=True")
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    tags = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
    assert {"EER/valid", "minDCF/valid", "ErrorRate/valid"} <= set(tags)


def test_a_copied_run_uses_its_own_files(recipe_env, tmp_path):
    """``cp -r run copy`` then verify/export ``copy``: the copy's checkpoint
    and CSVs are read, even when the original is gone."""
    import shutil

    from speechbrain_unipet.training.runs import load_trained_model

    out = recipe_env["root"] / "run_frozen"
    if not (out / "hyperparams.yaml").is_file():
        train(recipe_env, "frozen", out)
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
    recipe_env, tmp_path
):
    out = tmp_path / "rerun"
    train(recipe_env, "frozen", out)
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
