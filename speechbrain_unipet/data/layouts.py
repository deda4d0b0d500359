"""Where a user's recordings are and who speaks in them: the data layouts,
their detection, and probing each recording before training.

The layouts (``DATA_FORMATS``):

* ``voxceleb``: ``<folder>/wav/<speaker>/<video>/<utterance>.wav``;
* ``speaker_folders``: ``<folder>/<speaker>/**/<file>.<ext>``;
* ``csv``: a manifest CSV/TSV with ``path`` and ``speaker`` columns
  (optional ``id``, ``start``, ``stop``);
* ``kaldi``: a Kaldi data folder (``wav.scp``, ``utt2spk``, optional
  ``segments``);
* ``cnceleb``: a released CN-Celeb folder (``data/<speaker>/<genre>-<session>-
  <n>.flac`` with ``dev/dev.lst`` or ``spk.lst`` naming the training
  speakers, and for CN-Celeb1 the evaluation lists under ``eval/lists``;
  ``speechbrain_unipet.data.cnceleb``).

Each recording's ``group`` is the unit within which short utterances of a
speaker may be combined: the video (voxceleb), the sub-folder below the
speaker's folder (speaker_folders), the genre (cnceleb); none for csv and
kaldi.

Authors
 * speechbrain-unipet contributors 2026
"""

import collections
import concurrent.futures
import csv
import math
import multiprocessing
import os
import pathlib

from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.cnceleb import list_cnceleb
from speechbrain_unipet.data.recordings import (  # noqa: F401 (former home)
    _WHITESPACE,
    AUDIO_EXTENSIONS,
    DataPreparationError,
    Recording,
    _read_text,
    audio_files,
    listed,
)
from speechbrain_unipet.utils.audio import MIN_SAMPLE_RATE, probe_audio

logger = get_logger(__name__)


DATA_FORMATS = (
    "voxceleb",
    "speaker_folders",
    "csv",
    "kaldi",
    "cnceleb",
    "shards",
)


PATH_COLUMNS = ("path", "wav", "file", "audio", "filename")


SPEAKER_COLUMNS = ("speaker", "spk_id", "spk", "speaker_id")


ID_COLUMNS = ("id", "utt", "utt_id", "utterance")


# ---------------------------------------------------------------- layouts
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
            speaker, video, _ = rel.split("/")
            recordings.append(Recording(rel, path, speaker, group=video))
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
        parts = rel.split("/")
        recordings.append(
            Recording(rel, path, parts[0], group="/".join(parts[1:-1]))
        )
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
    "cnceleb": list_cnceleb,
}


def _is_cnceleb(path):
    return (path / "data").is_dir() and any(
        (path / marker).exists()
        for marker in ("dev/dev.lst", "spk.lst", "eval/lists")
    )


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
    if (path / "index.json").is_file() and (path / "plan.json").is_file():
        return "shards"
    if (path / "wav.scp").is_file():
        return "kaldi"
    if (path / "wav").is_dir():
        return "voxceleb"
    # Before the speaker folders: data/ holds audio in folders too.
    if _is_cnceleb(path):
        return "cnceleb"
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
        if fmt == "shards":
            raise DataPreparationError(
                f"'{folder}' holds shards: the training recipe reads them "
                "(data_format: shards); to score or embed audio, give the "
                "source data's folder and layout"
            )
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
    """Inspects every recording (``speechbrain_unipet.utils.audio.probe_audio``)
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
        raise DataPreparationError(
            f"{len(bad)} recording(s) cannot be used:"
            + listed(
                [
                    f"{r.origin + ': ' if r.origin else ''}{msg}"
                    for r, msg in bad
                ]
            )
            + "\nFix or remove them from the data."
        )
    rates = collections.Counter(p.rate for p in probes)
    multi = sum(p.channels > 1 for p in probes)
    return rates, multi
