"""Builds ``samples/voxceleb_demo`` from the LibriSpeech excerpt, and
``samples/cnceleb_demo`` from ``samples/voxceleb_demo`` (maintainers).

    python samples/make_demo_set.py /path/to/librispeech_train_clean_100_251spk
    python samples/make_demo_set.py --cnceleb

Takes the first 12 female and 12 male speakers (sorted by id) whose
utterance lasts at least 12 s, cuts seconds 0-12 into three 4 s segments and
writes them in VoxCeleb layout ``wav/ls<speaker>/<chapter>/<00001..3>.flac``.
The last 4 + 4 speakers are test speakers: ``veri_demo.txt`` lists every pair
of their segments (VoxCeleb trial format). LibriSpeech is CC BY 4.0.
"""

import itertools
import pathlib
import sys

import soundfile as sf

SEGMENTS, SEG_SECONDS, PER_SEX, TEST_PER_SEX = 3, 4.0, 12, 4


def main(source, dest="samples/voxceleb_demo"):
    source, dest = pathlib.Path(source), pathlib.Path(dest)
    sexes = {}
    for line in (source / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        parts = [p.strip() for p in line.split("|")]
        sexes[parts[0]] = parts[1]
    chosen = {"F": [], "M": []}
    for path in sorted(
        source.glob("*.flac"), key=lambda p: int(p.name.split("-")[0])
    ):
        spk, chapter, _ = path.stem.split("-")
        sex = sexes[spk]
        if (
            len(chosen[sex]) < PER_SEX
            and sf.info(path).duration >= SEGMENTS * SEG_SECONDS
        ):
            chosen[sex].append((spk, chapter, path))
    test_ids = []
    for rows in chosen.values():
        for k, (spk, chapter, path) in enumerate(rows):
            audio, rate = sf.read(path)
            seg = int(SEG_SECONDS * rate)
            for i in range(SEGMENTS):
                utt = f"ls{spk}/{chapter}/{i + 1:05d}"
                out = dest / "wav" / f"{utt}.flac"
                out.parent.mkdir(parents=True, exist_ok=True)
                sf.write(out, audio[i * seg : (i + 1) * seg], rate)
                if k >= PER_SEX - TEST_PER_SEX:
                    test_ids.append(utt)
    lines = []
    for a, b in itertools.combinations(test_ids, 2):
        label = int(a.split("/")[0] == b.split("/")[0])
        lines.append(f"{label} {a}.flac {b}.flac")
    (dest / "veri_demo.txt").write_text("\n".join(lines) + "\n")
    speakers = sorted(s for rows in chosen.values() for s, _, _ in rows)
    print(f"{len(speakers)} speakers, {len(lines)} trials -> {dest}")


def make_cnceleb_demo(dest="samples/cnceleb_demo"):
    """Every second speaker of ``voxceleb_demo`` (12, sorted by name), the
    first 8 s of each, in CN-Celeb1's released layout: short pieces of
    1-3.5 s named by invented genres, the last 4 speakers evaluation
    speakers with an ``eval/lists`` protocol
    (``speechbrain_unipet.demo.write_cnceleb_layout``)."""
    import shutil
    import tempfile

    from speechbrain_unipet.demo import demo_speakers, write_cnceleb_layout

    speakers = sorted(demo_speakers().items())[::2]
    dest = pathlib.Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        # Written apart, then moved in: the layout writer refuses a folder
        # that holds files (this one keeps its README.md).
        counts = write_cnceleb_layout(
            pathlib.Path(tmp) / "layout",
            {spk: files[:2] for spk, files in speakers},
            num_eval_speakers=4,
        )
        for part in ("data", "dev", "eval"):
            shutil.rmtree(dest / part, ignore_errors=True)
            shutil.move(pathlib.Path(tmp) / "layout" / part, dest / part)
    print(f"{counts} -> {dest}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--cnceleb"]:
        make_cnceleb_demo()
    else:
        main(*sys.argv[1:])
