"""Offline end-to-end demo: prep -> train -> verify on the embedded demo set.

    python -m speechbrain_unipet.demo [--method unipet] [--epochs 3] [--output results/demo] [--own-data]

Runs the VoxCeleb recipe (``recipes/VoxCeleb/SpeakerRec``) on the embedded
LibriSpeech excerpt (``samples/voxceleb_demo``, 24 speakers in VoxCeleb
layout) with a *tiny random-weight* WavLM created on the fly and saved like
a hub checkpoint, so it works on a fresh machine without network in a few
minutes on 2 CPU cores. The EER it prints only shows that the pipeline
works: real results need a pretrained hub model (e.g.
``--ssl_hub=microsoft/wavlm-base-plus``) and VoxCeleb.

``--own-data`` runs it the way most in-house data looks instead: the demo
set rewritten to ``<output>/own_speakers/<speaker>/recording.flac``, one
12 s recording per speaker at 22.05 kHz stereo, with no trial list (the
recipe holds out speakers and writes one).
"""

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import soundfile as sf

from speechbrain_unipet.testing import tiny_ssl_folder
from speechbrain_unipet.utils.audio import load_audio

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
SAMPLES = REPO / "samples" / "voxceleb_demo"


def write_own_speakers(dest, speakers=None, seconds=None, rate=22050):
    """The demo set as users' data often is: one recording per speaker
    (its segments concatenated), in speaker folders, stereo, at ``rate``.

    Arguments
    ---------
    dest : path-like
        Folder to write ``<speaker>/recording.flac`` into.
    speakers : int or None
        How many speakers (sorted by name); None: all 24.
    seconds : float or None
        Cut each recording to this length; None: whole (12 s).
    rate : int
        Sample rate of the written files.

    Returns
    -------
    pathlib.Path
        ``dest``.
    """
    dest = pathlib.Path(dest)
    names = sorted(p.name for p in (SAMPLES / "wav").iterdir())[:speakers]
    for spk in names:
        parts = sorted((SAMPLES / "wav" / spk).rglob("*.flac"))
        mono = np.concatenate([load_audio(p, rate).numpy() for p in parts])
        if seconds is not None:
            mono = mono[: int(seconds * rate)]
        path = dest / spk / "recording.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.stack([mono, 0.8 * mono], axis=1), rate)
    return dest


def run(cmd, cwd):
    """Runs a recipe script; stops with its exit status on failure.

    Arguments
    ---------
    cmd : list
        The command line (``sys.executable``, the script, its arguments).
    cwd : str or pathlib.Path
        The folder it runs in (the recipe's).
    """
    print("$", " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, check=False)
    if done.returncode != 0:
        sys.exit(f"ERROR: {cmd[1]} failed with exit status {done.returncode}")


def main(argv=None):
    """Runs the demo: tiny WavLM, training recipe, then cosine verification.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (see the module docstring); ``None`` reads
        ``sys.argv``.

    Returns
    -------
    int
        The exit status, 0 on success (a failing recipe step exits the
        process with its own status instead).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="unipet", help="recipe yaml name")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", default="results/demo")
    parser.add_argument(
        "--own-data",
        action="store_true",
        help="one 22.05 kHz stereo recording per speaker, no trial list",
    )
    args = parser.parse_args(argv)
    if not (RECIPE / "hparams" / f"{args.method}.yaml").is_file():
        sys.exit(
            f"ERROR: no recipe file {RECIPE}/hparams/{args.method}.yaml (the "
            "demo runs from a checkout of the repository, installed with "
            "pip install -e .)"
        )
    out = pathlib.Path(args.output).resolve()
    ssl = tiny_ssl_folder(out / "models", "wavlm")
    train_out = out / args.method
    if args.own_data:
        train_out = out / f"{args.method}_own_data"
        data = [
            f"--data_folder={write_own_speakers(out / 'own_speakers')}",
            "--num_test_speakers=6",
        ]
    else:
        data = [
            f"--data_folder={SAMPLES}",
            f"--verification_file={SAMPLES / 'veri_demo.txt'}",
        ]
    run(
        [
            sys.executable,
            "train_speaker_embeddings.py",
            f"hparams/{args.method}.yaml",
            *data,
            f"--ssl_hub={ssl}",
            f"--output_folder={train_out}",
            f"--number_of_epochs={args.epochs}",
            "--batch_size=8",
            "--sentence_len=2.0",
            "--num_workers=0",
            "--num_valid_speakers=4",
            "--test_segment_len=2.0",
            "--device=cpu",
        ],
        RECIPE,
    )
    run(
        [
            sys.executable,
            "speaker_verification_cosine.py",
            "hparams/verification.yaml",
            f"--output_folder={train_out}",
            "--device=cpu",
        ],
        RECIPE,
    )
    with open(train_out / "results.json", encoding="utf-8") as f:
        result = json.load(f)
    print(
        f"\nDemo done ({args.method}, tiny random WavLM, {result['num_trials']} "
        f"trials): EER {100 * result['eer']:.2f} %, minDCF(0.01) "
        f"{result['min_dcf']:.4f}. Outputs in {train_out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
