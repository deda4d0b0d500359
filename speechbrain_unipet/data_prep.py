"""Speaker data preparation for the layouts users have.

``prepare_speaker_data`` turns a speaker corpus into the CSVs of the
training recipe. It reads four layouts, chosen by ``data_format``:

* ``voxceleb``: ``<data_folder>/wav/<speaker>/<video>/<utterance>.<ext>``;
  utterance ids ``speaker/video/utterance`` (what VoxCeleb trial lists use);
* ``speaker_folders``: ``<data_folder>/<speaker>/**/<file>.<ext>``; ids are
  the paths relative to ``data_folder`` without extension;
* ``csv``: a CSV or TSV manifest (``data_folder`` is the file, or a folder
  holding exactly one ``*.csv``/``*.tsv``) with a header naming a path
  column (``path``, ``wav``, ``file`` or ``audio``) and a speaker column
  (``speaker``, ``spk_id``, ``spk`` or ``speaker_id``), optionally ``id``
  and ``start``/``stop`` in seconds. Relative paths are relative to the
  manifest. Ids: the ``id`` column, else the path as written, without
  extension;
* ``kaldi``: ``wav.scp`` and ``utt2spk`` (optionally ``segments``), as
  WeSpeaker and ESPnet use; ids are Kaldi's utterance ids.

``data_format: null`` detects the layout: a ``.csv``/``.tsv`` file or a
folder with one is ``csv``, a folder with ``wav.scp`` is ``kaldi``, one with
a ``wav/`` folder is ``voxceleb``, one with speaker sub-folders of audio is
``speaker_folders``. Several folders can be combined with commas.

Splits (written to ``save_folder``):

* ``test.csv`` + the trial list. With a ``verification_file`` (VoxCeleb
  format ``label enrol test``), its utterances are the test set and every
  speaker in it leaves training. Without one, ``num_test_speakers`` speakers
  (seeded) are held out and ``trials.txt`` is written: every target pair of
  up to ``trial_utts_per_speaker`` utterances per speaker and as many
  non-target pairs with other held-out speakers (balanced per speaker).
* ``valid_verif.csv`` + ``valid_trials.txt``: ``num_valid_speakers`` more
  held-out speakers whose EER is measured at every validation, on segments
  of ``test_segment_len`` seconds, trials made the same way.
* ``train.csv`` / ``dev.csv``: segments of ``seg_dur`` seconds of the other
  speakers. Dev audio never overlaps training audio and comes only from
  speakers that keep training data: a speaker with at least
  ``1 / dev share`` recordings gives whole recordings (about the dev share
  of them); any other speaker gives the last segments of its longest
  recording, the dev share of its segments, rounded so that these
  speakers together give the dev share of their segments (largest
  remainders, ties drawn with ``seed``; so a speaker with few segments may
  give none), always keeping one for training; if that recording is too
  short to spare them (short clips), whole clips go instead. So
  one-recording speakers are split in time.

A held-out speaker's trial utterances are its recordings when it has at
least two of ``test_segment_len`` seconds; otherwise its recording is cut
into non-overlapping ``test_segment_len`` segments, whose ids are
``<utterance id>_<start>_<stop>`` (samples at the file's rate). Same-session
segments make an easier test than VoxCeleb's cross-session trials.

Audio: every file is inspected by parallel worker processes (header, and
segment energies when ``amp_th`` > 0, which decodes the audio). Unreadable
files and rates below 8 kHz are errors naming the file; empty files and
files shorter than a segment are skipped with a logged count. Files at
other rates are resampled on the fly and multi-channel files down-mixed
(``speechbrain_unipet.audio``); the counts are logged once. Re-running
with the same options reuses the CSVs.

CSV columns: ``ID, duration, wav, start, stop, spk_id, sample_rate,
utt_start, utt_stop``: ``start``/``stop`` is the segment and
``utt_start``/``utt_stop`` the region a random training crop may come from,
in samples at the file's own ``sample_rate``; ``duration`` is the region's
length in seconds.

Authors
 * speechbrain-unipet contributors 2026
"""

import collections
import concurrent.futures
import csv
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import random
import re
import time

from speechbrain.utils.logger import get_logger

from speechbrain_unipet.audio import MIN_SAMPLE_RATE, probe_audio
from speechbrain_unipet.scoring import read_trials

logger = get_logger(__name__)

DATA_FORMATS = ("voxceleb", "speaker_folders", "csv", "kaldi")
AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".sph",
)
CSV_HEADER = [
    "ID",
    "duration",
    "wav",
    "start",
    "stop",
    "spk_id",
    "sample_rate",
    "utt_start",
    "utt_stop",
]
OPTIONS_FILE = "prepare_options.json"
TRIALS_FILE = "trials.txt"
VALID_TRIALS_FILE = "valid_trials.txt"
PATH_COLUMNS = ("path", "wav", "file", "audio", "filename")
SPEAKER_COLUMNS = ("speaker", "spk_id", "spk", "speaker_id")
ID_COLUMNS = ("id", "utt", "utt_id", "utterance")
_SEGMENT_ID = re.compile(r"^(.*)_(\d+)_(\d+)$")
_WHITESPACE = re.compile(r"\s+")


class DataPreparationError(ValueError):
    """Raised for data that cannot be used, with the file and the fix."""


@dataclasses.dataclass
class Recording:
    """One utterance of the corpus: a file, or a region of it (seconds)."""

    uid: str
    path: str
    speaker: str
    start: float | None = None
    stop: float | None = None
    origin: str = ""


# ---------------------------------------------------------------- layouts
def audio_files(root):
    """``(relative path without extension, full path)`` of every audio file
    under ``root``, sorted (string operations: this runs once per file)."""
    root = str(root)
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS:
                # Trial lists are whitespace-separated: no spaces in ids.
                uid = _WHITESPACE.sub("_", prefix + stem)
                yield uid, os.path.join(dirpath, name)


def list_voxceleb(folder):
    """Recordings of ``<folder>/wav/<spk>/<video>/<utt>.<ext>``.

    Arguments
    ---------
    folder : str or pathlib.Path
        The corpus folder (holds ``wav/``).

    Returns
    -------
    list of Recording
        One per utterance.

    Raises
    ------
    DataPreparationError
        Naming what is missing or malformed.
    """
    root = pathlib.Path(folder) / "wav"
    if not root.is_dir():
        raise DataPreparationError(
            f"'{root}' does not exist. The voxceleb layout is "
            "<data_folder>/wav/<speaker>/<video>/<utterance>.wav; set "
            "data_format (speaker_folders, csv, kaldi) for other layouts."
        )
    recordings = []
    for rel, path in audio_files(root):
        if rel.count("/") == 2:
            recordings.append(Recording(rel, path, rel.split("/")[0]))
    if not recordings:
        raise DataPreparationError(
            f"No audio files in the voxceleb layout under '{root}' (expected "
            "wav/<speaker>/<video>/<utterance>.wav)"
        )
    return recordings


def list_speaker_folders(folder):
    """Recordings of ``<folder>/<speaker>/**/<file>.<ext>``.

    Arguments
    ---------
    folder : str or pathlib.Path
        The folder of speaker folders.

    Returns
    -------
    list of Recording
        One per utterance.

    Raises
    ------
    DataPreparationError
        Naming what is missing or malformed.
    """
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise DataPreparationError(f"data_folder '{root}' does not exist")
    recordings, loose = [], 0
    for rel, path in audio_files(root):
        if "/" not in rel:
            loose += 1
            continue
        recordings.append(Recording(rel, path, rel.split("/")[0]))
    if loose:
        logger.warning(
            "%d audio file(s) directly in %s have no speaker folder: ignored",
            loose,
            root,
        )
    if not recordings:
        raise DataPreparationError(
            f"No audio in speaker folders under '{root}' (expected "
            "<data_folder>/<speaker>/**/<file>.wav). For a flat folder, write "
            "a CSV manifest with path,speaker columns and set data_format: csv."
        )
    return recordings


def _manifest_file(path):
    path = pathlib.Path(path)
    if path.is_file():
        return path
    found = (
        sorted(
            p for p in path.glob("*") if p.suffix.lower() in (".csv", ".tsv")
        )
        if path.is_dir()
        else []
    )
    if len(found) != 1:
        raise DataPreparationError(
            f"data_format csv needs data_folder to be a .csv/.tsv manifest or "
            f"a folder holding exactly one; '{path}' holds {len(found)}"
            + (f": {[p.name for p in found]}" if found else "")
        )
    return found[0]


def _column(header, names, path, what, required=True):
    lowered = {h.strip().lower(): h for h in header}
    for name in names:
        if name in lowered:
            return lowered[name]
    if required:
        raise DataPreparationError(
            f"Manifest '{path}' has no {what} column (its columns: "
            f"{', '.join(header)}). Name it one of: {', '.join(names)}."
        )
    return None


def _seconds(value, path, lineno, name):
    if value is None or not str(value).strip():
        return None
    try:
        seconds = float(value)
    except ValueError as err:
        raise DataPreparationError(
            f"{path}:{lineno}: {name} must be a number of seconds, got "
            f"{value!r}"
        ) from err
    if not math.isfinite(seconds) or seconds < 0:
        raise DataPreparationError(
            f"{path}:{lineno}: {name} must be >= 0 seconds, got {value!r}"
        )
    return seconds


def list_manifest(path):
    """Recordings of a CSV/TSV manifest (see the module docstring).

    Arguments
    ---------
    path : str or pathlib.Path
        The manifest, or a folder holding one.

    Returns
    -------
    list of Recording
        One per utterance.

    Raises
    ------
    DataPreparationError
        Naming what is missing or malformed.
    """
    path = _manifest_file(path)
    text = _read_text(path)
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = reader.fieldnames or []
    if not header:
        raise DataPreparationError(f"Manifest '{path}' is empty")
    col_path = _column(header, PATH_COLUMNS, path, "path")
    col_spk = _column(header, SPEAKER_COLUMNS, path, "speaker")
    col_id = _column(header, ID_COLUMNS, path, "id", required=False)
    col_start = _column(header, ("start",), path, "start", required=False)
    col_stop = _column(header, ("stop", "end"), path, "stop", required=False)
    recordings, seen = [], {}
    for row in reader:
        lineno = reader.line_num
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank or all-empty row (",,")
        where = f"{path}:{lineno}"
        wav = (row.get(col_path) or "").strip()
        speaker = (row.get(col_spk) or "").strip()
        if not wav or not speaker:
            raise DataPreparationError(
                f"{where}: empty {col_path if not wav else col_spk} value"
            )
        start = _seconds(row.get(col_start), path, lineno, "start")
        stop = _seconds(row.get(col_stop), path, lineno, "stop")
        if start is not None and stop is not None and stop <= start:
            raise DataPreparationError(f"{where}: stop must be after start")
        uid = (row.get(col_id) or "").strip() if col_id else ""
        if not uid:
            uid = os.path.splitext(wav)[0]
            if start is not None or stop is not None:
                uid += f"_{start or 0:g}-{stop if stop is not None else 'end'}"
        uid = _WHITESPACE.sub("_", uid)
        if uid in seen:
            raise DataPreparationError(
                f"{where}: utterance id '{uid}' repeats line {seen[uid]}; "
                "add an id column to tell them apart"
            )
        seen[uid] = lineno
        full = pathlib.Path(wav)
        if not full.is_absolute():
            full = path.parent / full
        recordings.append(
            Recording(uid, str(full), speaker, start, stop, origin=where)
        )
    if not recordings:
        raise DataPreparationError(
            f"Manifest '{path}' has a header but no rows: list one audio "
            "file per line (path,speaker)"
        )
    return recordings


def _read_text(path):
    """A text file's content; a wrong encoding is an error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise DataPreparationError(
            f"'{path}' is not UTF-8 text ({err}); save it as UTF-8"
        ) from err


def _kaldi_table(path, min_fields=2):
    table = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1 if min_fields == 2 else -1)
        if len(parts) < min_fields:
            raise DataPreparationError(
                f"{path}:{lineno}: expected at least {min_fields} fields, "
                f"got {line.strip()!r}"
            )
        if parts[0] in table:
            raise DataPreparationError(
                f"{path}:{lineno}: '{parts[0]}' repeats line "
                f"{table[parts[0]][1]}"
            )
        table[parts[0]] = (parts[1:], lineno)
    if not table:
        raise DataPreparationError(f"'{path}' is empty")
    return table


def list_kaldi(folder):
    """Recordings of a Kaldi data folder (``wav.scp``, ``utt2spk``,
    optional ``segments``).

    Arguments
    ---------
    folder : str or pathlib.Path
        The Kaldi data folder.

    Returns
    -------
    list of Recording
        One per utterance.

    Raises
    ------
    DataPreparationError
        Naming what is missing or malformed.
    """
    folder = pathlib.Path(folder)
    scp, utt2spk = folder / "wav.scp", folder / "utt2spk"
    for needed in (scp, utt2spk):
        if not needed.is_file():
            raise DataPreparationError(
                f"data_format kaldi needs '{needed}' (wav.scp and utt2spk)"
            )
    wavs = _kaldi_table(scp)
    for key, ((value,), lineno) in wavs.items():
        if value.rstrip().endswith("|"):
            raise DataPreparationError(
                f"{scp}:{lineno}: '{key}' is a command pipe, not a file. "
                "Write the audio to files first (e.g. run the command into a "
                ".wav) and list their paths in wav.scp."
            )
    speakers = _kaldi_table(utt2spk)
    segments_file = folder / "segments"
    if segments_file.is_file():
        units = {}
        for seg, (fields, lineno) in _kaldi_table(
            segments_file, min_fields=4
        ).items():
            rec, start, stop = fields[0], fields[1], fields[2]
            if rec not in wavs:
                raise DataPreparationError(
                    f"{segments_file}:{lineno}: recording '{rec}' is not in "
                    f"{scp}"
                )
            units[seg] = (
                wavs[rec][0][0],
                _seconds(start, segments_file, lineno, "start"),
                # Kaldi's end time -1: to the end of the recording
                None
                if stop.strip() == "-1"
                else _seconds(stop, segments_file, lineno, "end"),
                f"{segments_file}:{lineno}",
            )
    else:
        units = {
            utt: (value[0], None, None, f"{scp}:{lineno}")
            for utt, (value, lineno) in wavs.items()
        }
    recordings = []
    for utt, (path, start, stop, where) in sorted(units.items()):
        if utt not in speakers:
            raise DataPreparationError(
                f"{where}: utterance '{utt}' has no line in {utt2spk}"
            )
        full = pathlib.Path(path.strip())
        if not full.is_absolute():
            # Relative to the data folder, or (ESPnet's convention) to the
            # working directory if only there.
            here = folder / full
            full = (
                here if here.exists() or not full.exists() else full.resolve()
            )
        speaker = speakers[utt][0][0].strip()
        recordings.append(
            Recording(utt, str(full), speaker, start, stop, origin=where)
        )
    return recordings


LISTERS = {
    "voxceleb": list_voxceleb,
    "speaker_folders": list_speaker_folders,
    "csv": list_manifest,
    "kaldi": list_kaldi,
}


def detect_format(folder):
    """The layout of ``folder`` (see the module docstring).

    Arguments
    ---------
    folder : str or pathlib.Path
        The data folder (or manifest file).

    Returns
    -------
    str
        One of ``DATA_FORMATS``.

    Raises
    ------
    DataPreparationError
        If no layout matches.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> _ = (root / "wav.scp").write_text("u1 /a.wav\\n")
    >>> detect_format(root)
    'kaldi'
    """
    path = pathlib.Path(folder)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            return "csv"
        raise DataPreparationError(
            f"data_folder '{path}' is a file but not a .csv/.tsv manifest"
        )
    if not path.is_dir():
        raise DataPreparationError(f"data_folder '{path}' does not exist")
    if (path / "wav.scp").is_file():
        return "kaldi"
    if (path / "wav").is_dir():
        return "voxceleb"
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    if any(next(audio_files(d), None) is not None for d in subdirs):
        return "speaker_folders"
    if any(p.suffix.lower() in (".csv", ".tsv") for p in path.iterdir()):
        return "csv"
    loose = any(p.suffix.lower() in AUDIO_EXTENSIONS for p in path.iterdir())
    raise DataPreparationError(
        f"Cannot tell the layout of data_folder '{path}'"
        + (
            ": its audio files have no speaker folders. Write a CSV manifest "
            "(path,speaker) and set data_format: csv"
            if loose
            else ". Set data_format to one of " + ", ".join(DATA_FORMATS)
        )
    )


def list_recordings(data_folder, data_format=None):
    """Every recording of ``data_folder`` (comma-separated folders are
    combined) in the given or detected layout.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        One folder, or several separated by commas.
    data_format : str, optional
        One of ``DATA_FORMATS``; ``None`` detects it per folder.

    Returns
    -------
    list of Recording
        The recordings of all folders; an utterance id found in two folders
        is an error.
    """
    recordings, owner = [], {}
    for folder in str(data_folder).split(","):
        folder = folder.strip()
        fmt = data_format or detect_format(folder)
        if fmt not in LISTERS:
            raise DataPreparationError(
                f"data_format must be one of {', '.join(DATA_FORMATS)} or "
                f"null (detect), got {fmt!r}"
            )
        for rec in LISTERS[fmt](folder):
            if rec.uid in owner:
                raise DataPreparationError(
                    f"Utterance id '{rec.uid}' appears twice ({owner[rec.uid]} "
                    f"and {rec.origin or rec.path})"
                )
            owner[rec.uid] = rec.origin or rec.path
            recordings.append(rec)
    return recordings


# ------------------------------------------------------------- inspection
def _probe_without_torch(task):
    return probe_audio(task, fallback=False)


def probe_recordings(recordings, seg_dur, amp_th, num_workers=None):
    """Inspects every recording (``speechbrain_unipet.audio.probe_audio``)
    in parallel worker processes.

    Processes, not threads: reading a header is mostly Python work in
    soundfile, which threads cannot run in parallel (two threads were
    slower than one). The workers are forked, the cheapest start, and run
    only soundfile and numpy: torch's thread pools do not survive a fork,
    so the few files only torchaudio decodes are inspected afterwards in
    this process.

    Arguments
    ---------
    recordings : list of Recording
        What to inspect.
    seg_dur : float
        Segment length (s) of the silence check.
    amp_th : float
        Mean absolute amplitude below which a segment counts as silent;
        0 skips reading the samples.
    num_workers : int, optional
        Worker processes (at most one per 32 recordings); ``None`` uses
        ``os.cpu_count()``.

    Returns
    -------
    list of AudioProbe
        One per recording, in order.
    """
    tasks = [(r.path, r.start, r.stop, seg_dur, amp_th) for r in recordings]
    workers = min(num_workers or os.cpu_count() or 1, len(tasks) // 32)
    if workers <= 1:
        return [probe_audio(t) for t in tasks]
    chunk = max(1, min(1024, len(tasks) // (4 * workers)))
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, context) as pool:
        probes = list(pool.map(_probe_without_torch, tasks, chunksize=chunk))
    return [
        probe_audio(task) if probe.needs_fallback else probe
        for task, probe in zip(tasks, probes, strict=True)
    ]


def _check_probes(recordings, probes):
    """Errors for unreadable audio and unusable rates, naming files."""
    bad = [
        (r, p.error) for r, p in zip(recordings, probes, strict=True) if p.error
    ] + [
        (r, f"'{r.path}' is sampled at {p.rate} Hz, below {MIN_SAMPLE_RATE}")
        for r, p in zip(recordings, probes, strict=True)
        if not p.error and p.rate < MIN_SAMPLE_RATE
    ]
    if bad:
        shown = "\n  ".join(
            f"{r.origin + ': ' if r.origin else ''}{msg}" for r, msg in bad[:5]
        )
        raise DataPreparationError(
            f"{len(bad)} recording(s) cannot be used:\n  {shown}"
            + (f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "\nFix or remove them from the data."
        )
    rates = collections.Counter(p.rate for p in probes)
    multi = sum(p.channels > 1 for p in probes)
    return rates, multi


# ------------------------------------------------------------------ trials
def make_trials(utts_by_speaker, seed):
    """Balanced trials: per speaker, every target pair of its utterances and
    as many non-target pairs (one of its utterances against another
    speaker's), drawn with ``seed``.

    Arguments
    ---------
    utts_by_speaker : dict
        Speaker -> list of its utterance ids.
    seed : int
        Seed of the non-target draw (the same seed gives the same trials).

    Returns
    -------
    list of (label, enrol, test)

    Example
    -------
    >>> trials = make_trials({"a": ["a1", "a2"], "b": ["b1", "b2"]}, seed=0)
    >>> sorted(label for label, _, _ in trials)
    [0, 0, 1, 1]
    """
    rng = random.Random(seed)
    speakers = sorted(utts_by_speaker)
    trials, used = [], set()
    for spk in speakers:
        own = sorted(utts_by_speaker[spk])
        targets = list(itertools.combinations(own, 2))
        others = sorted(
            u for s in speakers if s != spk for u in utts_by_speaker[s]
        )
        candidates = [(a, b) for a in own for b in others]
        rng.shuffle(candidates)
        non_targets = []
        for a, b in candidates:
            if len(non_targets) == len(targets):
                break
            if frozenset((a, b)) not in used:
                used.add(frozenset((a, b)))
                non_targets.append((a, b))
        if len(non_targets) < len(targets):  # few others: keep it balanced
            targets = sorted(rng.sample(targets, len(non_targets)))
        trials += [(1, a, b) for a, b in targets]
        trials += [(0, a, b) for a, b in non_targets]
    return trials


def _write_trials(path, trials):
    tmp = pathlib.Path(f"{path}.tmp")
    tmp.write_text(
        "".join(f"{label} {a} {b}\n" for label, a, b in trials),
        encoding="utf-8",
    )
    os.replace(tmp, path)


# ------------------------------------------------------------------- rows
def _row(uid, rec, probe, start, stop, region):
    a, b = region
    return [
        uid,
        f"{(b - a) / probe.rate:.3f}",
        rec.path,
        start,
        stop,
        rec.speaker,
        probe.rate,
        a,
        b,
    ]


def _segments(probe, region, seg_dur):
    """Start frames of the non-quiet ``seg_dur`` segments in ``region``
    (a grid from the recording's start)."""
    seg = int(round(seg_dur * probe.rate))
    a, b = region
    first = (a - probe.start + seg - 1) // seg
    quiet = set(probe.quiet)
    return [
        probe.start + k * seg
        for k in range(first, (b - probe.start) // seg)
        if k not in quiet
    ], seg


def _num_segments(probe, seg_dur):
    seg = int(round(seg_dur * probe.rate))
    return (probe.stop - probe.start) // seg if seg > 0 else 0


def _trial_utterances(items, seg_dur, max_utts, whole):
    """Trial utterances of a held-out speaker: ``(id, rec, probe, start,
    stop)``. Whole recordings (or their first ``seg_dur`` when not
    ``whole``) if two or more are long enough, else ``seg_dur`` segments of
    its longest recording."""
    long = [(r, p) for r, p in items if _num_segments(p, seg_dur) >= 1]
    out = []
    if len(long) >= 2:
        for rec, probe in long[:max_utts]:
            seg = int(round(seg_dur * probe.rate))
            stop = probe.stop if whole else probe.start + seg
            uid = rec.uid if whole else f"{rec.uid}_{probe.start}_{stop}"
            out.append((uid, rec, probe, probe.start, stop))
        return out
    rec, probe = max(items, key=lambda rp: rp[1].stop - rp[1].start)
    seg = int(round(seg_dur * probe.rate))
    for k in range(min(max_utts, _num_segments(probe, seg_dur))):
        a = probe.start + k * seg
        out.append((f"{rec.uid}_{a}_{a + seg}", rec, probe, a, a + seg))
    return out


def _eligible(items, seg_dur):
    """Whether a speaker gives at least two trial utterances."""
    counts = [_num_segments(p, seg_dur) for _, p in items]
    return sum(c >= 1 for c in counts) >= 2 or max(counts, default=0) >= 2


def _tail_shares(candidates, dev_share, rng):
    """Dev segments per speaker for speakers split in time: the dev share
    of each one's segments, rounded so that the total is the dev share of
    all of them (largest remainders first, ties in ``rng`` order), and at
    least one segment overall."""
    order = list(candidates)
    rng.shuffle(order)
    exact = {spk: total * dev_share for spk, total in order}
    shares = {spk: math.floor(x) for spk, x in exact.items()}
    extra = max(1, round(sum(exact.values()))) - sum(shares.values())
    by_remainder = sorted(
        exact, key=lambda spk: exact[spk] - shares[spk], reverse=True
    )
    for spk in by_remainder[: max(0, extra)]:
        shares[spk] += 1
    return shares


def _train_dev_rows(by_speaker, seg_dur, dev_share, seed):
    """Training and dev rows; see the module docstring for the split."""
    rng = random.Random(seed)
    plans, tail_candidates = {}, []
    for spk in sorted(by_speaker):
        items = [
            (r, p)
            for r, p in by_speaker[spk]
            if _segments(p, (p.start, p.stop), seg_dur)[0]
        ]
        if not items:
            continue
        rng.shuffle(items)
        regions = {id(r): (p.start, p.stop) for r, p in items}
        dev_regions = {}
        plans[spk] = (items, regions, dev_regions)
        if len(items) * dev_share >= 1:
            n_dev = min(round(len(items) * dev_share), len(items) - 1)
            for rec, _ in items[:n_dev]:
                dev_regions[id(rec)] = regions.pop(id(rec))
        else:
            total = sum(
                len(_segments(p, regions[id(r)], seg_dur)[0]) for r, p in items
            )
            tail_candidates.append((spk, total))
    for spk, k in _tail_shares(tail_candidates, dev_share, rng).items():
        items, regions, dev_regions = plans[spk]
        rec, probe = max(items, key=lambda rp: rp[1].stop - rp[1].start)
        starts, _ = _segments(probe, regions[id(rec)], seg_dur)
        if 0 < k < len(starts):
            cut = starts[-k]
            regions[id(rec)] = (probe.start, cut)
            dev_regions[id(rec)] = (cut, probe.stop)
            continue
        # Short clips: whole recordings to dev, until k segments, always
        # keeping one recording for training.
        for other, other_probe in items[: len(items) - 1]:
            if k <= 0:
                break
            region = regions.pop(id(other))
            dev_regions[id(other)] = region
            k -= len(_segments(other_probe, region, seg_dur)[0])
    train, dev = [], []
    for spk in sorted(plans):
        items, regions, dev_regions = plans[spk]
        for target, chosen in ((train, regions), (dev, dev_regions)):
            for rec, probe in items:
                if id(rec) not in chosen:
                    continue
                starts, seg = _segments(probe, chosen[id(rec)], seg_dur)
                target += [
                    _row(
                        f"{rec.uid}_{s}_{s + seg}",
                        rec,
                        probe,
                        s,
                        s + seg,
                        chosen[id(rec)],
                    )
                    for s in starts
                ]
    return train, dev


def _write_csv(path, rows):
    tmp = pathlib.Path(f"{path}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    os.replace(tmp, path)


def resolve_trial_ids(trials, trials_file, recordings):
    """Maps each utterance id of ``trials`` to ``(recording, start, stop)``.

    Ids are recording ids or ``<recording id>_<start>_<stop>`` segments
    (samples).

    Arguments
    ---------
    trials : list of Trial
        As ``speechbrain_unipet.scoring.read_trials`` returns them.
    trials_file : str or pathlib.Path
        The trial list, named in errors.
    recordings : list of Recording
        The recordings of the data.

    Returns
    -------
    dict
        Utterance id -> ``(Recording, start, stop)``, ``start``/``stop``
        in samples, ``None`` for the recording's own bounds.

    Raises
    ------
    DataPreparationError
        Naming the trial list, the line and the id not in the data.
    """
    by_uid = {r.uid: r for r in recordings}
    resolved = {}
    for lineno, trial in enumerate(trials, start=1):
        for uid in (trial.enrol, trial.test):
            if uid in resolved:
                continue
            if uid in by_uid:
                resolved[uid] = (by_uid[uid], None, None)
                continue
            match = _SEGMENT_ID.match(uid)
            if match and match.group(1) in by_uid:
                rec = by_uid[match.group(1)]
                resolved[uid] = (rec, int(match.group(2)), int(match.group(3)))
                continue
            raise DataPreparationError(
                f"{trials_file}: trial {lineno} names '{uid}', which is not "
                f"an utterance of the data ({len(by_uid)} utterances, e.g. "
                f"'{next(iter(by_uid), '')}'). Check data_folder, data_format "
                "and verification_file."
            )
    return resolved


def _trial_rows(resolved, probes_by_uid):
    rows = []
    for uid, (rec, start, stop) in sorted(resolved.items()):
        probe = probes_by_uid[rec.uid]
        a = probe.start if start is None else start
        b = probe.stop if stop is None else stop
        if b <= a or b > probe.stop:
            raise DataPreparationError(
                f"Trial utterance '{uid}' has no audio in [{a}, {b}) of "
                f"'{rec.path}' ({probe.stop - probe.start} samples)"
            )
        rows.append(_row(uid, rec, probe, a, b, (a, b)))
    return rows


def prepare_trial_manifest(
    data_folder, data_format, trials_file, csv_path, num_workers=None
):
    """Writes the CSV of the utterances a trial list names (used when
    verification is pointed at other data or trials than training).

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The data (comma-separated folders are combined).
    data_format : str, optional
        One of ``DATA_FORMATS``; ``None`` detects it.
    trials_file : str or pathlib.Path
        The trial list (VoxCeleb format).
    csv_path : str or pathlib.Path
        The CSV to write (same columns as the training CSVs).
    num_workers : int, optional
        Processes inspecting the audio, as in ``probe_recordings``.

    Returns
    -------
    list of Trial
        The trials of ``trials_file``.
    """
    recordings = list_recordings(data_folder, data_format)
    trials = read_trials(trials_file)
    resolved = resolve_trial_ids(trials, trials_file, recordings)
    needed = sorted(
        {rec.uid: rec for rec, _, _ in resolved.values()}.values(),
        key=lambda r: r.uid,
    )
    probes = probe_recordings(needed, 1.0, 0, num_workers)
    _check_probes(needed, probes)
    by_uid = {r.uid: p for r, p in zip(needed, probes, strict=True)}
    _write_csv(csv_path, _trial_rows(resolved, by_uid))
    return trials


# ------------------------------------------------------------------- main
def preparation_options(
    data_folder,
    data_format,
    verification_file,
    num_test_speakers,
    num_valid_speakers,
    test_segment_len,
    trial_utts_per_speaker,
    split_ratio,
    seg_dur,
    amp_th,
    seed,
):
    """What a preparation depends on (stored in ``prepare_options.json``).

    Arguments
    ---------
    data_folder, data_format, verification_file, num_test_speakers,
    num_valid_speakers, test_segment_len, trial_utts_per_speaker,
    split_ratio, seg_dur, amp_th, seed
        As for ``prepare_speaker_data``.

    Returns
    -------
    dict
    """
    return {
        "version": 2,
        "data_folder": str(data_folder),
        "data_format": data_format,
        "verification_file": None
        if verification_file is None
        else str(verification_file),
        "num_test_speakers": num_test_speakers,
        "num_valid_speakers": num_valid_speakers,
        "test_segment_len": test_segment_len,
        "trial_utts_per_speaker": trial_utts_per_speaker,
        "split_ratio": list(split_ratio),
        "seg_dur": seg_dur,
        "amp_th": amp_th,
        "seed": seed,
    }


def check_rerun(save_folder, options, overwrite_prep=False):
    """Checks, before anything is written, that a re-run of an output
    folder prepares the data it was trained on.

    A run whose checkpoints were trained on other data (another data
    folder, trial list or split) would resume with a label encoder and
    weights that do not fit. That is an error naming both settings, unless
    ``overwrite_prep``: then the old ``save`` folder (preparation and
    checkpoints) is moved aside, never deleted, and the run starts fresh.
    Without checkpoints, only the stale label encoder is removed (the
    preparation re-runs by itself).

    Arguments
    ---------
    save_folder : str or pathlib.Path
        The run's ``save_folder``.
    options : dict
        ``preparation_options`` of this run.
    overwrite_prep : bool
        Start fresh when the data changed.

    Returns
    -------
    pathlib.Path or None
        Where the old save folder was moved, if it was.

    Raises
    ------
    DataPreparationError
        Naming the settings that differ.
    """
    save = pathlib.Path(save_folder)
    done = save / OPTIONS_FILE
    if not done.is_file():
        return None
    with open(done, encoding="utf-8") as f:
        previous = json.load(f).get("options", {})
    changed = {
        k: (previous.get(k), v)
        for k, v in options.items()
        if k != "version" and previous.get(k) != v
    }
    if not changed:
        return None
    described = ", ".join(
        f"{k}: prepared {a!r}, now {b!r}" for k, (a, b) in changed.items()
    )
    if not any(save.glob("CKPT+*")):
        (save / "label_encoder.txt").unlink(missing_ok=True)
        logger.info("Data settings changed (%s): preparing again", described)
        return None
    if not overwrite_prep:
        raise DataPreparationError(
            f"{save} holds checkpoints trained on other data ({described}). "
            "Use another output_folder, or give --overwrite_prep=True to move "
            "the old preparation and checkpoints aside and start fresh."
        )
    aside = save.with_name(
        f"{save.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    save.rename(aside)
    logger.warning(
        "Data settings changed (%s): moved the old preparation and "
        "checkpoints to %s; training starts fresh.",
        described,
        aside,
    )
    return aside


def prepare_speaker_data(
    data_folder,
    save_folder,
    data_format=None,
    verification_file=None,
    num_test_speakers=40,
    num_valid_speakers=20,
    test_segment_len=3.0,
    trial_utts_per_speaker=4,
    split_ratio=(90, 10),
    seg_dur=3.0,
    amp_th=5e-4,
    sample_rate=16000,
    seed=1234,
    num_workers=None,
    skip_prep=False,
):
    """Writes the recipe's CSVs and trial lists to ``save_folder``.

    Arguments
    ---------
    data_folder : str
        The corpus (see the module docstring for layouts).
    save_folder : str
        Where the CSVs go.
    data_format : str or None
        ``voxceleb``, ``speaker_folders``, ``csv``, ``kaldi``; None detects.
    verification_file : str or None
        Trial list (``label enrol test``); None generates ``trials.txt``
        over ``num_test_speakers`` held-out speakers.
    num_test_speakers : int
        Held-out test speakers when no trial list is given.
    num_valid_speakers : int
        Held-out speakers for the EER of every validation (0: none).
    test_segment_len : float
        Seconds of the segments a one-recording held-out speaker is cut
        into (and of every validation utterance).
    trial_utts_per_speaker : int
        Trial utterances per generated speaker (targets: all their pairs).
    split_ratio : sequence
        Train/dev share of each training speaker's audio.
    seg_dur : float
        Training segment length in seconds.
    amp_th : float
        Segments with mean absolute amplitude below this are dropped (0:
        no check, header-only inspection: much faster).
    sample_rate : int
        The encoder's rate (recordings at other rates are resampled when
        read; their count is logged).
    seed : int
        Seed of the held-out speakers, the splits and the trials.
    num_workers : int or None
        Inspection processes (None: one per CPU core).
    skip_prep : bool
        Do nothing (the CSVs must exist already).

    Returns
    -------
    dict
        What was written: counts, the trial list used, sample rates.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> for s in range(6):
    ...     (root / f"data/spk{s}").mkdir(parents=True)
    ...     noise = np.random.default_rng(s).normal(size=4 * 8000) * 0.1
    ...     sf.write(root / f"data/spk{s}/a.wav", noise, 8000)
    >>> stats = prepare_speaker_data(
    ...     root / "data",
    ...     root / "save",
    ...     num_test_speakers=2,
    ...     num_valid_speakers=2,
    ...     test_segment_len=1.0,
    ...     seg_dur=1.0,
    ... )
    >>> stats["format"], stats["train"]["speakers"], stats["test"]["trials"]
    ('speaker_folders', 2, 24)
    """
    save = pathlib.Path(save_folder)
    if skip_prep:
        return {}
    if trial_utts_per_speaker < 2:
        raise DataPreparationError(
            f"trial_utts_per_speaker={trial_utts_per_speaker}: target trials "
            "need at least 2 utterances per speaker"
        )
    if verification_file is None and num_test_speakers < 2:
        raise DataPreparationError(
            f"num_test_speakers={num_test_speakers}: generated trials need "
            "at least 2 speakers (or give a verification_file)"
        )
    if not 0 < split_ratio[1] < sum(split_ratio):
        raise DataPreparationError(
            f"split_ratio {list(split_ratio)} must give both train and dev a "
            "share (dev measures the speaker-ID error)"
        )
    options = preparation_options(
        data_folder,
        data_format,
        verification_file,
        num_test_speakers,
        num_valid_speakers,
        test_segment_len,
        trial_utts_per_speaker,
        split_ratio,
        seg_dur,
        amp_th,
        seed,
    )
    done = save / OPTIONS_FILE
    if done.is_file():
        with open(done, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("options") == options and all(
            (save / name).is_file() for name in previous.get("files", [])
        ):
            logger.info("Data preparation already done in %s", save)
            return previous["stats"]
        # Gone before anything is rewritten: a run that fails half-way
        # never leaves a mix of old and new files that looks finished.
        done.unlink()
    save.mkdir(parents=True, exist_ok=True)

    recordings = list_recordings(data_folder, data_format)
    fmt = data_format or detect_format(str(data_folder).split(",")[0].strip())
    trials = None
    if verification_file is not None:
        if not os.path.isfile(verification_file):
            raise DataPreparationError(
                f"verification_file '{verification_file}' does not exist; "
                "give a trial list (label enrol test) or null to generate one"
            )
        trials = read_trials(verification_file)
        resolved = resolve_trial_ids(trials, verification_file, recordings)
    logger.info("Inspecting %d recordings (%s layout)...", len(recordings), fmt)
    probes = probe_recordings(recordings, seg_dur, amp_th or 0, num_workers)
    rates, multi = _check_probes(recordings, probes)
    probe_of = {r.uid: p for r, p in zip(recordings, probes, strict=True)}
    by_speaker = collections.defaultdict(list)
    for rec, probe in zip(recordings, probes, strict=True):
        if probe.stop > probe.start:
            by_speaker[rec.speaker].append((rec, probe))
    empty = sum(p.stop <= p.start for p in probes)
    short = sum(
        p.stop > p.start and _num_segments(p, seg_dur) == 0 for p in probes
    )

    rng = random.Random(seed)
    files = ["train.csv", "dev.csv", "test.csv"]
    if trials is not None:
        test_speakers = {rec.speaker for rec, _, _ in resolved.values()}
        test_rows = _trial_rows(resolved, probe_of)
        trials_path = str(verification_file)
    else:
        test_speakers, test_rows, trials = _hold_out(
            by_speaker,
            num_test_speakers,
            "num_test_speakers",
            rng,
            whole=True,
            seg_len=test_segment_len,
            max_utts=trial_utts_per_speaker,
            seed=seed,
        )
        trials_path = str(save / TRIALS_FILE)
        _write_trials(trials_path, trials)
        files.append(TRIALS_FILE)
    remaining = {s: v for s, v in by_speaker.items() if s not in test_speakers}
    valid_rows, valid_trials = [], []
    if num_valid_speakers:
        valid_speakers, valid_rows, valid_trials = _hold_out(
            remaining,
            num_valid_speakers,
            "num_valid_speakers",
            rng,
            whole=False,
            seg_len=test_segment_len,
            max_utts=trial_utts_per_speaker,
            seed=seed,
        )
        for spk in valid_speakers:
            del remaining[spk]
        _write_csv(save / "valid_verif.csv", valid_rows)
        _write_trials(save / VALID_TRIALS_FILE, valid_trials)
        files += ["valid_verif.csv", VALID_TRIALS_FILE]

    dev_share = split_ratio[1] / sum(split_ratio)
    train_rows, dev_rows = _train_dev_rows(remaining, seg_dur, dev_share, seed)
    train_speakers = sorted({row[5] for row in train_rows})
    if len(train_speakers) < 2:
        raise DataPreparationError(
            f"Only {len(train_speakers)} speaker(s) keep training segments of "
            f"{seg_dur} s ({len(by_speaker)} speakers in {data_folder}, "
            f"{len(test_speakers)} held out for test, {num_valid_speakers} "
            "for validation). Use more speakers, shorter segments "
            "(sentence_len) or fewer held-out speakers."
        )
    if not dev_rows:
        raise DataPreparationError(
            f"No speaker of {data_folder} has audio to spare for dev (each "
            f"needs two {seg_dur} s segments): use longer recordings or a "
            "shorter sentence_len"
        )
    _write_csv(save / "train.csv", train_rows)
    _write_csv(save / "dev.csv", dev_rows)
    _write_csv(save / "test.csv", test_rows)
    stale = save / "label_encoder.txt"
    if stale.is_file():
        stale.unlink()  # speakers may have changed with the data

    stats = {
        "format": fmt,
        "recordings": len(recordings),
        "sample_rates": {str(k): v for k, v in sorted(rates.items())},
        "multi_channel": multi,
        "skipped_empty": empty,
        "skipped_short": short,
        "train": {"rows": len(train_rows), "speakers": len(train_speakers)},
        "dev": {"rows": len(dev_rows)},
        "test": {
            "utterances": len(test_rows),
            "speakers": len(test_speakers),
            "trials": len(trials),
            "trial_list": trials_path,
        },
        "valid": {"utterances": len(valid_rows), "trials": len(valid_trials)},
    }
    if empty or short:
        logger.warning(
            "Skipped %d empty recording(s) and %d shorter than a %.1f s "
            "training segment",
            empty,
            short,
            seg_dur,
        )
    _log_conversions(rates, multi, len(recordings), sample_rate)
    tmp = done.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(
            {"options": options, "files": files, "stats": stats}, f, indent=1
        )
    os.replace(tmp, done)
    logger.info("Data preparation: %s", stats)
    return stats


def _hold_out(by_speaker, count, option, rng, whole, seg_len, max_utts, seed):
    """Draws ``count`` speakers that can give two trial utterances.

    Returns
    -------
    speakers : set
    rows : list
        CSV rows of their trial utterances.
    trials : list
        Balanced trials over them (``make_trials``).
    """
    eligible = sorted(
        s for s, items in by_speaker.items() if _eligible(items, seg_len)
    )
    speakers = _pick(eligible, count, rng, option, seg_len)
    utts = {
        s: _trial_utterances(
            sorted(by_speaker[s], key=lambda rp: rp[0].uid),
            seg_len,
            max_utts,
            whole,
        )
        for s in sorted(speakers)
    }
    rows = [
        _row(uid, rec, probe, a, b, (a, b))
        for s in sorted(utts)
        for uid, rec, probe, a, b in utts[s]
    ]
    trials = make_trials({s: [u[0] for u in v] for s, v in utts.items()}, seed)
    return speakers, rows, trials


def _pick(eligible, count, rng, option, seg_len):
    """``count`` speakers drawn from ``eligible`` with ``rng``."""
    if count == 1 or count > len(eligible):
        raise DataPreparationError(
            f"{option}={count}, but "
            + (
                "trials need at least 2 speakers"
                if count == 1
                else f"only {len(eligible)} speakers left can give two "
                f"{seg_len} s trial utterances"
            )
            + f". Change {option} or test_segment_len"
            + (
                ", or set num_valid_speakers: 0 and ckpt_select: ErrorRate"
                if option == "num_valid_speakers"
                else ""
            )
            + "."
        )
    return set(rng.sample(eligible, count))


def _log_conversions(rates, multi, total, sample_rate):
    other = {r: n for r, n in rates.items() if r != sample_rate}
    if other:
        logger.info(
            "Resampling on the fly to %d Hz: %d of %d recordings (%s)",
            sample_rate,
            sum(other.values()),
            total,
            ", ".join(f"{n} at {r} Hz" for r, n in sorted(other.items())),
        )
    if multi:
        logger.info(
            "%d of %d recordings have several channels: down-mixed (mean)",
            multi,
            total,
        )
