"""A training run saved by the code before the layered package (issue 28)
still verifies, resumes and exports with today's code.

``tests/data/legacy_run_unipet/`` is the output folder of a one-epoch UniPET
run of ``train_speaker_embeddings.py`` at commit 52f2b0a, as the recipe
wrote it, trained as ``/tmp/legacy_run_unipet`` (see tests/data/README.md).
Its ``hyperparams.yaml`` names the former module paths
(``speechbrain_unipet.schedules``, ``.losses``, ``.checkpoints``), now
re-exports. ``legacy_run_unipet_scores.txt`` holds the cosine scores that
code's ``speaker_verification_cosine.py`` gave for the run's 6 trials.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import torch

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
RUN = DATA / "legacy_run_unipet"
SCORES = DATA / "legacy_run_unipet_scores.txt"
RECIPE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "recipes"
    / "VoxCeleb"
    / "SpeakerRec"
)
TRAINED_AS = "/tmp/legacy_run_unipet"
FORMER_PATHS = {
    "speechbrain_unipet.schedules": ["MarginScheduler", "LearningRateSchedule"],
    "speechbrain_unipet.losses": [
        "SubCenterClassifier",
        "InterTopKAdditiveAngularMargin",
    ],
    "speechbrain_unipet.checkpoints": ["AtomicCheckpointer"],
}


@pytest.fixture
def run(tmp_path):
    """A copy of the saved run, elsewhere than it was trained.

    Its ``hyperparams.yaml`` is left as saved: the package relocates a
    copied run's own paths (checkpoints, CSVs, the backbone and audio
    stored inside it). The preparation records (``save/*.csv``,
    ``prepare_options.json``) name the audio where it was at training;
    a user's audio stays there, this one moved with the copy, so they
    are pointed at it, as if it had not moved.
    """
    here = tmp_path / "legacy_run_unipet"
    shutil.copytree(RUN, here)
    for f in [
        *(here / "save").glob("*.csv"),
        here / "save" / "prepare_options.json",
    ]:
        f.write_text(f.read_text().replace(TRAINED_AS, str(here)))
    return here


def run_script(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{args[0]} failed:\n{output[-5000:]}"
    return output


def legacy_scores():
    rows = [line.split() for line in SCORES.read_text().splitlines()]
    return [(a, b, float(s)) for a, b, _, s in rows]


def test_saved_yaml_names_the_former_paths():
    """Else this file would test today's paths, not the saved ones."""
    import importlib

    text = (RUN / "hyperparams.yaml").read_text()
    assert TRAINED_AS in text
    for module, names in FORMER_PATHS.items():
        for name in names:
            assert re.search(
                rf"!(new|name):{re.escape(module)}\.{name}\b", text
            )
            # A re-export at the former path, not the defining module.
            obj = getattr(importlib.import_module(module), name)
            assert obj.__module__ != module
    assert not re.search(r"speechbrain_unipet\.training\.", text)


def test_saved_run_verifies(run):
    output = run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={run}",
        "--device=cpu",
    )
    assert f"was trained as {TRAINED_AS}" in output
    result = json.loads((run / "results.json").read_text())
    assert result["num_trials"] == 6 and result["pet_method"] == "unipet"
    assert result["ssl_hub"] == str(run / "ssl" / "tiny-wavlm-0")
    assert "calibrated" in result  # on the run's validation trials
    scores = [
        line.split() for line in (run / "scores.txt").read_text().splitlines()
    ]
    got = {(a, b): float(s) for a, b, _, s in scores}
    for a, b, expected in legacy_scores():
        assert got[(a, b)] == pytest.approx(expected, abs=1e-6)


def test_saved_run_resumes(run):
    output = run_script(
        "train_speaker_embeddings.py",
        "hparams/unipet.yaml",
        f"--output_folder={run}",
        f"--data_folder={run / 'data'}",
        f"--verification_file={run / 'data' / 'trials.txt'}",
        f"--ssl_hub={run / 'ssl' / 'tiny-wavlm-0'}",
        # The saved run's settings, one more epoch.
        "--number_of_epochs=2",
        "--batch_size=4",
        "--sentence_len=0.5",
        "--ecapa_channels=[16,16,16,16,48]",
        "--emb_dim=8",
        "--num_workers=0",
        "--num_valid_speakers=2",
        "--test_segment_len=0.5",
        "--device=cpu",
        "--noprogressbar",
    )
    (saved,) = (RUN / "save").glob("CKPT+*")
    assert f"Loading a checkpoint from {run / 'save' / saved.name}" in output
    log = (run / "train_log.txt").read_text()
    # Epoch 1 is the saved one (not trained again), epoch 2 trained now.
    assert re.findall(r"^epoch: (\d+)", log, flags=re.M) == ["1", "2"]
    assert log.startswith((RUN / "train_log.txt").read_text())


def test_saved_run_exports(run, tmp_path):
    from speechbrain.inference.speaker import EncoderClassifier

    from speechbrain_unipet.cli import main

    hub = tmp_path / "hub"
    assert main(["export", str(run), str(hub)]) == 0
    model = EncoderClassifier.from_hparams(
        source=str(hub), savedir=str(hub), run_opts={"device": "cpu"}
    )
    trials = legacy_scores()
    ids = sorted({i for a, b, _ in trials for i in (a, b)})
    wavs = torch.stack(
        [
            torch.from_numpy(
                sf.read(run / "data" / "wav" / f"{i}.wav", dtype="float32")[0]
            )
            for i in ids
        ]
    )
    emb = dict(zip(ids, model.encode_batch(wavs).squeeze(1), strict=True))
    for a, b, expected in trials:
        score = torch.nn.functional.cosine_similarity(emb[a], emb[b], dim=0)
        assert score.item() == pytest.approx(expected, abs=1e-5)
