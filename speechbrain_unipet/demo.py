"""Offline end-to-end demo: prep -> train -> verify on the embedded demo set.

    python -m speechbrain_unipet.demo [--method unipet] [--epochs 3] [--output results/demo] [--own-data | --cnceleb]

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

``write_cnceleb_layout`` rewrites audio (e.g. the demo set,
``demo_speakers()``) into CN-Celeb1's released layout: short utterances of
several genres per speaker, the training speakers' list and the
evaluation lists, for testing the ``cnceleb`` data format offline.
``--cnceleb`` runs the CN-Celeb recipe (``recipes/CNCeleb/SpeakerRec``) on
``samples/cnceleb_demo`` (12 demo speakers rewritten so): preparation with
short utterances combined, training, then verification under the Avg and
the Concat protocols with an EER per genre.
"""

import argparse
import collections
import json
import pathlib
import subprocess
import sys

import numpy as np
import soundfile as sf

from speechbrain_unipet.data.cnceleb import GENRES, _resampled_length
from speechbrain_unipet.data.layouts import (
    AUDIO_EXTENSIONS,
    DataPreparationError,
)
from speechbrain_unipet.data.recordings import listed
from speechbrain_unipet.testing import tiny_ssl_folder
from speechbrain_unipet.utils.audio import (
    audio_info,
    check_sample_rate,
    load_audio,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
SAMPLES = REPO / "samples" / "voxceleb_demo"
CN_RECIPE = REPO / "recipes" / "CNCeleb" / "SpeakerRec"
CN_SAMPLES = REPO / "samples" / "cnceleb_demo"


def demo_speakers(samples=SAMPLES):
    """The audio files of each speaker of the demo set.

    Arguments
    ---------
    samples : path-like
        A VoxCeleb-layout folder (holds ``wav/<speaker>/<video>/``).

    Returns
    -------
    dict
        Speaker -> sorted list of its audio files (``pathlib.Path``).

    Example
    -------
    >>> speakers = demo_speakers()
    >>> len(speakers), speakers["ls83"][0].name
    (24, '00001.flac')
    """
    return {
        spk.name: sorted(
            p
            for p in spk.rglob("*")
            if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        )
        for spk in sorted((pathlib.Path(samples) / "wav").iterdir())
        if spk.is_dir()
    }


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
    demo = demo_speakers()
    for spk in sorted(demo)[:speakers]:
        parts = demo[spk]
        mono = np.concatenate([load_audio(p, rate).numpy() for p in parts])
        if seconds is not None:
            mono = mono[: int(seconds * rate)]
        path = dest / spk / "recording.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.stack([mono, 0.8 * mono], axis=1), rate)
    return dest


def _cut(size, rng, piece_seconds, rate):
    """``(start, stop)`` of consecutive pieces of random lengths in
    ``piece_seconds`` of ``size`` samples; a rest shorter than the
    shortest piece is dropped."""
    low, high = (int(s * rate) for s in piece_seconds)
    pieces, pos = [], 0
    while size - pos >= low:
        length = min(int(rng.integers(low, high + 1)), size - pos)
        pieces.append((pos, pos + length))
        pos += length
    return pieces


def _write_flac(path, signal, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, rate, subtype="PCM_16")


#: Enrolment audio of an evaluation speaker of ``write_cnceleb_layout`` (s).
ENROL_SECONDS = 4.0


def _samples(files, rate):
    """Samples ``load_audio`` gives for ``files`` at ``rate``, from the
    headers: a layout is planned whole before anything is written, and
    holding every speaker's audio would not fit in memory for a corpus."""
    total = 0
    for path in files:
        info = audio_info(path)
        check_sample_rate(path, info.sample_rate)
        if info.frames <= 0:
            raise DataPreparationError(
                f"Audio file '{path}' holds no samples; remove it from its "
                "speaker's files"
            )
        total += _resampled_length(info.frames, info.sample_rate, rate)
    return total


def _plan_speaker(k, name, files, rng, piece_seconds, rate):
    """Speaker ``k``'s id, sample count and named pieces
    (``(stem, start, stop)``), and how many first pieces make its
    enrolment if it can be an evaluation speaker (else None)."""
    size = _samples(files, rate)
    genres = [GENRES[(3 * k + j) % len(GENRES)] for j in range(3)]
    taken = collections.Counter()
    named = []
    for i, (start, stop) in enumerate(_cut(size, rng, piece_seconds, rate)):
        genre = genres[i % len(genres)]
        session = 1 + i // (2 * len(genres))
        taken[genre, session] += 1
        stem = f"{genre}-{session:02d}-{taken[genre, session]:03d}"
        named.append((stem, start, stop))
    enrol, seconds = 0, 0.0
    while enrol < len(named) and seconds < ENROL_SECONDS:
        seconds += (named[enrol][2] - named[enrol][1]) / rate
        enrol += 1
    eligible = seconds >= ENROL_SECONDS and enrol < len(named)
    return {
        "name": name,
        "spk": f"id{k:05d}",
        "size": size,
        "pieces": named,
        "enrol": enrol if eligible else None,
    }


def _check_empty(dest):
    """Refuses a ``dest`` holding anything: a layout written over another
    keeps the other's speaker folders beyond the new ones, and its ids
    name other people."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataPreparationError(
            f"'{dest}' already holds files; write_cnceleb_layout writes a "
            "whole layout into an empty (or new) folder. Delete it (or give "
            "another folder) and run again."
        )


def write_cnceleb_layout(
    dest,
    speakers,
    num_eval_speakers,
    piece_seconds=(1.0, 3.5),
    seed=0,
    rate=16000,
):
    """Writes audio in CN-Celeb1's released layout (``CN-Celeb_flac``).

    Each speaker's audio is concatenated and cut into pieces of random
    lengths, named ``<genre>-<session>-<n>`` with genres cycling over three
    of ``GENRES`` (a different three for each speaker). Speakers get ids
    ``id00000``, ``id00001``... in sorted order of their names, whatever
    their role. The evaluation speakers are the last ``num_eval_speakers``
    (in that order) of those eligible: whose pieces make 4 s of enrolment
    (``ENROL_SECONDS``) and leave at least one test piece, i.e. at least
    4 s plus the shortest piece of audio (more when the enrolment pieces
    overshoot 4 s); a speaker too short trains. An evaluation speaker's
    first pieces (at least 4 s) are enrolment utterances under
    ``data/<spk>/`` (listed in ``enroll.map``, concatenated into
    ``eval/enroll/<spk>-enroll.flac``, listed in ``enroll.lst``), the
    others test files ``eval/test/<spk>-<stem>.flac`` (``test.lst``);
    ``trials.lst`` pairs every model with every test file. The lists say
    ``.wav``, as the released ones do. ``dev/dev.lst`` lists the training
    speakers.

    Everything is decided (from the files' headers) and checked before
    anything is written, so an error leaves ``dest`` as it was (all but
    a file that decodes to another length than its header says, found
    while writing); ``dest`` must be empty or new.

    Arguments
    ---------
    dest : path-like
        The folder to write (``data/``, ``dev/``, ``eval/``); refused if
        it holds anything.
    speakers : dict
        Speaker name -> list of audio files (any format, rate, channels).
    num_eval_speakers : int
        Evaluation speakers (at least 1, fewer than all).
    piece_seconds : tuple of float
        Shortest and longest piece (s).
    seed : int
        Seed of the piece lengths.
    rate : int
        Sample rate of the written (mono, 16-bit FLAC) files.

    Returns
    -------
    dict
        Counts: ``train_speakers``, ``eval_speakers``,
        ``train_utterances``, ``enrol_utterances``, ``test_utterances``,
        ``trials``, ``target_trials``.

    Raises
    ------
    DataPreparationError
        Before writing anything: ``dest`` holds files, ``num_eval_speakers``
        does not fit, fewer than ``num_eval_speakers`` speakers are
        eligible (saying how many are and the audio one needs), a speaker
        shorter than the shortest piece, an empty audio file.

    Example
    -------
    >>> few = dict(list(demo_speakers().items())[:3])
    >>> counts = write_cnceleb_layout(getfixture("tmp_path"), few, 1)
    >>> counts["train_speakers"], counts["eval_speakers"]
    (2, 1)
    """
    dest = pathlib.Path(dest)
    _check_empty(dest)
    names = sorted(speakers)
    if not 0 < num_eval_speakers < len(names):
        raise DataPreparationError(
            f"num_eval_speakers={num_eval_speakers}: give 1 to "
            f"{len(names) - 1} ({len(names)} speakers, at least one trains)"
        )
    # One generator over the speakers in order: the pieces do not depend
    # on which speakers evaluate.
    rng = np.random.default_rng(seed)
    plans = [
        _plan_speaker(k, name, speakers[name], rng, piece_seconds, rate)
        for k, name in enumerate(names)
    ]
    silent = [
        f"'{p['name']}' ({p['spk']}): {p['size'] / rate:.2f} s"
        for p in plans
        if not p["pieces"]
    ]
    if silent:
        raise DataPreparationError(
            f"{len(silent)} speaker(s) have less audio than the shortest "
            f"piece ({piece_seconds[0]} s), so no utterance:"
            + listed(silent)
            + "\nGive them more audio, leave them out of speakers, or "
            "lower piece_seconds; nothing was written."
        )
    eligible = [k for k, p in enumerate(plans) if p["enrol"] is not None]
    if len(eligible) < num_eval_speakers:
        longest = max(plans, key=lambda p: p["size"])
        raise DataPreparationError(
            f"num_eval_speakers={num_eval_speakers}, but only "
            f"{len(eligible)} of the {len(names)} speakers have enough audio "
            f"to be evaluation speakers: one needs {ENROL_SECONDS:g} s of "
            "enrolment pieces and one test piece, at least "
            f"{ENROL_SECONDS + piece_seconds[0]:.1f} s of audio (the longest "
            f"speaker, '{longest['name']}', has {longest['size'] / rate:.1f} "
            "s). Give fewer evaluation speakers or more audio; nothing was "
            "written."
        )
    evaluation = set(eligible[-num_eval_speakers:])

    dev, enroll_lst, enroll_map, tests = [], [], [], []
    counts = collections.Counter()
    for k, plan in enumerate(plans):
        spk, files = plan["spk"], speakers[plan["name"]]
        audio = np.concatenate([load_audio(p, rate).numpy() for p in files])
        if audio.size != plan["size"]:
            raise DataPreparationError(
                f"Speaker '{plan['name']}': its files decode to {audio.size} "
                f"samples, their headers said {plan['size']} ({files}); "
                "convert them to FLAC or WAV. The layout under "
                f"'{dest}' is partial: delete it before running again."
            )
        named = [(stem, audio[a:b]) for stem, a, b in plan["pieces"]]
        if k not in evaluation:
            dev.append(spk)
            for stem, piece in named:
                _write_flac(dest / "data" / spk / f"{stem}.flac", piece, rate)
            counts["train_utterances"] += len(named)
            continue
        enrol, named = named[: plan["enrol"]], named[plan["enrol"] :]
        for stem, piece in enrol:
            _write_flac(dest / "data" / spk / f"{stem}.flac", piece, rate)
        _write_flac(
            dest / "eval" / "enroll" / f"{spk}-enroll.flac",
            np.concatenate([piece for _, piece in enrol]),
            rate,
        )
        model = f"{spk}-enroll"
        enroll_lst.append(f"{model} enroll/{model}.wav")
        enroll_map.append(
            f"{model} " + " ".join(f"{spk}/{stem}.wav" for stem, _ in enrol)
        )
        for stem, piece in named:
            _write_flac(
                dest / "eval" / "test" / f"{spk}-{stem}.flac", piece, rate
            )
            tests.append((spk, f"test/{spk}-{stem}.wav"))
        counts["enrol_utterances"] += len(enrol)
        counts["test_utterances"] += len(named)
    trials = [
        f"{line.split()[0]} {test} {int(line.startswith(spk + '-'))}"
        for line in enroll_lst
        for spk, test in tests
    ]
    lists = dest / "eval" / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    (dest / "dev").mkdir(parents=True, exist_ok=True)
    for path, lines in (
        (dest / "dev" / "dev.lst", dev),
        (lists / "enroll.lst", enroll_lst),
        (lists / "enroll.map", enroll_map),
        (lists / "test.lst", [test for _, test in tests]),
        (lists / "trials.lst", trials),
    ):
        path.write_text(
            "".join(f"{line}\n" for line in lines), encoding="utf-8"
        )
    counts.update(
        train_speakers=len(dev),
        eval_speakers=len(enroll_lst),
        trials=len(trials),
        target_trials=sum(t.endswith(" 1") for t in trials),
    )
    return dict(counts)


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
    parser.add_argument(
        "--cnceleb",
        action="store_true",
        help="the CN-Celeb recipe on samples/cnceleb_demo (Avg and Concat)",
    )
    args = parser.parse_args(argv)
    recipe = CN_RECIPE if args.cnceleb else RECIPE
    if not (recipe / "hparams" / f"{args.method}.yaml").is_file():
        sys.exit(
            f"ERROR: no recipe file {recipe}/hparams/{args.method}.yaml (the "
            "demo runs from a checkout of the repository, installed with "
            "pip install -e .)"
        )
    out = pathlib.Path(args.output).resolve()
    ssl = tiny_ssl_folder(out / "models", "wavlm")
    if args.cnceleb:
        return cnceleb_demo(args, out / f"{args.method}_cnceleb", ssl)
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
            *demo_options(args, ssl, train_out, num_valid_speakers=4),
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


def demo_options(args, ssl, train_out, num_valid_speakers):
    """The training options of both demos: the tiny model, short crops,
    a CPU."""
    return [
        f"--ssl_hub={ssl}",
        f"--output_folder={train_out}",
        f"--number_of_epochs={args.epochs}",
        "--batch_size=8",
        "--sentence_len=2.0",
        "--num_workers=0",
        f"--num_valid_speakers={num_valid_speakers}",
        "--test_segment_len=2.0",
        "--device=cpu",
    ]


def cnceleb_demo(args, train_out, ssl):
    """The ``--cnceleb`` demo: trains on ``samples/cnceleb_demo`` and
    scores its protocol both ways; returns 0."""
    run(
        [
            sys.executable,
            "train_speaker_embeddings.py",
            f"hparams/{args.method}.yaml",
            f"--data_folder={CN_SAMPLES}",
            *demo_options(args, ssl, train_out, num_valid_speakers=2),
        ],
        CN_RECIPE,
    )
    lines = []
    for protocol in ("avg", "concat"):
        run(
            [
                sys.executable,
                "speaker_verification_cosine.py",
                "hparams/verification.yaml",
                f"--output_folder={train_out}",
                f"--protocol={protocol}",
                "--device=cpu",
            ],
            CN_RECIPE,
        )
        with open(
            train_out / f"results_{protocol}.json", encoding="utf-8"
        ) as f:
            result = json.load(f)
        lines.append(
            f"{protocol}: EER {100 * result['eer']:.2f} %, minDCF(0.01) "
            f"{result['min_dcf']:.4f} ({result['num_trials']} trials; per "
            f"genre: genres_{protocol}.md)"
        )
    print(
        f"\nCN-Celeb demo done ({args.method}, tiny random WavLM): "
        + "; ".join(lines)
        + f". Outputs in {train_out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
