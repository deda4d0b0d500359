"""Data preparation time per 10k files, side by side in one run.

Builds a speaker-folders corpus of ``--files`` entries (symbolic links to
the audio of ``--source``, the embedded demo set by default, spread over
speakers of ``--files-per-speaker`` recordings) and times
``prepare_speaker_data`` on it:

* with the energy check (``amp_th`` > 0: every file decoded) and header only
  (``amp_th: 0``), each with one worker thread and with one per core;
* the cached re-run (same options: the CSVs are reused).

    python benchmarks/data_prep.py [--files 10000] [--source DIR]

Prints seconds per 10k files and the speed-up of the parallel workers.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speechbrain_unipet.data.layouts import AUDIO_EXTENSIONS  # noqa: E402
from speechbrain_unipet.data.preparation import prepare_speaker_data  # noqa: E402


def build_corpus(source, root, files, per_speaker):
    audio = sorted(
        p
        for p in pathlib.Path(source).rglob("*")
        if p.suffix in AUDIO_EXTENSIONS
    )
    if not audio:
        sys.exit(f"ERROR: no audio under {source}")
    for i in range(files):
        link = (
            root / f"spk{i // per_speaker:05d}" / f"utt{i % per_speaker}.flac"
        )
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(audio[i % len(audio)].resolve(), link)
    return len(audio)


def timed(folder, save, **options):
    shutil.rmtree(save, ignore_errors=True)
    start = time.perf_counter()
    stats = prepare_speaker_data(
        folder, save, num_test_speakers=20, num_valid_speakers=20, **options
    )
    return time.perf_counter() - start, stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--files-per-speaker", type=int, default=10)
    parser.add_argument(
        "--source", default=str(REPO / "samples" / "voxceleb_demo")
    )
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        distinct = build_corpus(
            args.source, tmp / "data", args.files, args.files_per_speaker
        )
        per10k = 10000 / args.files
        print(
            f"{args.files} files ({distinct} distinct recordings of "
            f"{args.source}), {cores} cores\n"
        )
        print(f"{'preparation':<44}{'s / 10k files':>14}{'speed-up':>10}")
        for label, amp_th in (
            ("energy check (decodes)", 5e-4),
            ("header only", 0),
        ):
            one, _ = timed(
                tmp / "data", tmp / "save", amp_th=amp_th, num_workers=1
            )
            many, stats = timed(
                tmp / "data", tmp / "save", amp_th=amp_th, num_workers=cores
            )
            print(f"{label + ', 1 worker':<44}{one * per10k:>14.1f}")
            print(
                f"{label + f', {cores} workers':<44}{many * per10k:>14.1f}"
                f"{one / many:>9.2f}x"
            )
        start = time.perf_counter()
        prepare_speaker_data(
            tmp / "data",
            tmp / "save",
            num_test_speakers=20,
            num_valid_speakers=20,
            amp_th=0,
            num_workers=cores,
        )
        cached = time.perf_counter() - start
        print(f"{'cached re-run (same options)':<44}{cached * per10k:>14.2f}")
        print(
            f"\n{stats['train']['rows']} training segments of "
            f"{stats['train']['speakers']} speakers"
        )


if __name__ == "__main__":
    main()
