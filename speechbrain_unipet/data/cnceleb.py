"""CN-Celeb as released: the training speakers of ``CN-Celeb_flac`` /
``CN-Celeb2_flac``, the evaluation protocol of CN-Celeb1 (``eval/lists``)
and the combination of short utterances that WeSpeaker's CN-Celeb recipe
trains on.

The layout (as WeSpeaker's ``examples/cnceleb/v2/local/prepare_data.sh``
reads it)::

    CN-Celeb_flac/data/<spk>/<genre>-<session>-<n>.flac
    CN-Celeb_flac/dev/dev.lst              training speakers, one a line
    CN-Celeb_flac/eval/enroll/<spk>-enroll.flac
    CN-Celeb_flac/eval/test/<spk>-<genre>-<session>-<n>.flac
    CN-Celeb_flac/eval/lists/enroll.lst    id00800-enroll enroll/id00800-enroll.wav
    CN-Celeb_flac/eval/lists/enroll.map    id00800-enroll id00800/singing-01-001.wav ...
    CN-Celeb_flac/eval/lists/test.lst      test/id00800-singing-01-002.wav
    CN-Celeb_flac/eval/lists/trials.lst    id00800-enroll test/id00800-singing-01-002.wav 1
    CN-Celeb2_flac/data/<spk>/<genre>-<session>-<n>.flac
    CN-Celeb2_flac/spk.lst                 (training only)

The lists say ``.wav`` where the files are ``.flac``: a listed file is
looked up with the extension given, else ``.flac``, else ``.wav``.

Short utterances are combined as WeSpeaker combines them (within speaker
and genre, Kaldi's rule); then, where WeSpeaker stops, the genres of a
speaker still too short are combined across its genres (group ``mixed``):
else a speaker whose audio is spread over genres each shorter than a
training segment trains on nothing (``combine_short_recordings``).

Authors
 * speechbrain-unipet contributors 2026
"""

import dataclasses
import math
import os
import pathlib
import re

import numpy as np
import soundfile as sf
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.recordings import (
    AUDIO_EXTENSIONS,
    DataPreparationError,
    Recording,
    _read_text,
    audio_files,
    listed,
)
from speechbrain_unipet.data.trials import utterance_id
from speechbrain_unipet.utils.audio import read_numpy, resample

logger = get_logger(__name__)


#: The genres of CN-Celeb's file names.
GENRES = (
    "advertisement",
    "drama",
    "entertainment",
    "interview",
    "live_broadcast",
    "movie",
    "play",
    "recitation",
    "singing",
    "speech",
    "vlog",
)

#: Lists that name the training speakers, in order of preference.
SPEAKER_LISTS = ("dev/dev.lst", "spk.lst")

#: The group of a file combined across a speaker's groups.
MIXED = "mixed"

#: Tolerance of the duration comparisons of ``combine_ranges`` (seconds).
TOLERANCE = 1e-5

_GENRE = re.compile(r"^(.*?)-\d+(?=-|$)")
_UNSAFE = re.compile(r"[^\w.-]")
_WHITESPACE = re.compile(r"\s+")

_LIST_FORMS = {
    "enroll.lst": (
        "'<model> <file relative to eval/>', e.g. "
        "'id00800-enroll enroll/id00800-enroll.wav'"
    ),
    "enroll.map": (
        "'<model> <utterance relative to data/> [<utterance> ...]', e.g. "
        "'id00800-enroll id00800/singing-01-001.wav id00800/speech-02-003.wav'"
    ),
    "test.lst": (
        "'<file relative to eval/>', e.g. 'test/id00800-singing-01-002.wav'"
    ),
    "trials.lst": (
        "'<model> <test file relative to eval/> <label>' with label 1 "
        "(target) or 0 (nontarget), e.g. "
        "'id00800-enroll test/id00800-singing-01-002.wav 1'"
    ),
}


def _stem(uid):
    """The last path component of ``uid`` without an audio extension."""
    name = uid.rsplit("/", 1)[-1]
    base, ext = os.path.splitext(name)
    return base if ext.lower() in AUDIO_EXTENSIONS else name


def genre_of(uid):
    """The genre in a CN-Celeb file name.

    Arguments
    ---------
    uid : str
        An utterance id or path: ``<spk>/<genre>-<session>-<n>`` (under
        ``data/``) or ``test/<spk>-<genre>-<session>-<n>``.

    Returns
    -------
    str
        The stem's text before its first ``-<digits>`` part, without a
        speaker prefix (an unknown genre is returned as it is); ``""`` if
        the name does not parse.

    Example
    -------
    >>> genre_of("id00012/singing-01-001")
    'singing'
    >>> genre_of("test/id00800-live_broadcast-01-002.wav")
    'live_broadcast'
    >>> genre_of("enroll/id00800-enroll")
    ''
    """
    match = _GENRE.match(_stem(uid))
    return match.group(1).rsplit("-", 1)[-1] if match else ""


def _speaker_of(stem):
    """``id00800`` of ``id00800-enroll`` / ``id00800-singing-01-002``."""
    return stem.split("-", 1)[0]


def _list_lines(path, form):
    """``(lineno, fields, line)`` of each non-blank line of a list file;
    a missing or empty file is an error naming it and its lines' form."""
    if not path.is_file():
        raise DataPreparationError(
            f"'{path}' does not exist. CN-Celeb's eval/lists holds enroll.lst, "
            "enroll.map, test.lst and trials.lst as released in "
            "CN-Celeb_flac/eval/lists; restore it (its lines look like "
            f"{form})."
        )
    lines = [
        (lineno, line.split(), line.strip())
        for lineno, line in enumerate(_read_text(path).splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise DataPreparationError(
            f"'{path}' is empty; it should hold lines like {form}"
        )
    return lines


def _malformed(path, lineno, line, form, why=""):
    return DataPreparationError(
        f"{path}:{lineno}: {why + '; ' if why else ''}expected {form}, got "
        f"{line!r}"
    )


# ------------------------------------------------------------- training
def _training_speakers(folder, data):
    """``(speaker, origin)`` of each training speaker, as listed."""
    for name in SPEAKER_LISTS:
        path = folder / name
        if path.is_file():
            break
    else:
        if (folder / "eval").is_dir():
            logger.warning(
                "%s has no %s: every speaker folder under %s is trained on, "
                "evaluation speakers included. Write dev/dev.lst with the "
                "training speakers to keep them apart.",
                folder,
                " or ".join(SPEAKER_LISTS),
                data,
            )
        return [(p.name, "") for p in sorted(data.iterdir()) if p.is_dir()]
    form = "one speaker id a line, e.g. 'id00000' (a folder under data/)"
    speakers, seen, missing = [], {}, []
    for lineno, fields, line in _list_lines(path, form):
        if len(fields) != 1:
            raise _malformed(path, lineno, line, form)
        spk = fields[0]
        if spk in seen:
            raise DataPreparationError(
                f"{path}:{lineno}: speaker '{spk}' repeats line {seen[spk]}; "
                "list each speaker once"
            )
        seen[spk] = lineno
        if not (data / spk).is_dir():
            missing.append(f"{path}:{lineno}: '{spk}' ({data / spk})")
        speakers.append((spk, f"{path}:{lineno}"))
    if missing:
        raise DataPreparationError(
            f"{len(missing)} speaker(s) listed in {path.name} have no folder "
            "under data/:"
            + listed(missing)
            + f"\nEach line of {path.name} names a folder data/<speaker>/; "
            "restore the folders (unpack the whole corpus) or remove the lines."
        )
    return speakers


def list_cnceleb(folder):
    """Recordings of the training speakers of a released CN-Celeb folder.

    The training speakers are those of ``dev/dev.lst`` (CN-Celeb1) or
    ``spk.lst`` (CN-Celeb2); without either list, every speaker folder
    under ``data/``.

    Arguments
    ---------
    folder : str or pathlib.Path
        ``CN-Celeb_flac`` or ``CN-Celeb2_flac`` (holds ``data/``).

    Returns
    -------
    list of Recording
        uid ``<spk>/<stem>``, speaker ``<spk>``, group the genre, origin
        the list line that named the speaker.

    Raises
    ------
    DataPreparationError
        ``data/`` missing, a listed speaker without a folder (naming the
        list's line), an empty list, no audio.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "data" / "id00000").mkdir(parents=True)
    >>> sf.write(root / "data/id00000/vlog-01-001.flac", np.zeros(800), 16000)
    >>> _ = (root / "spk.lst").write_text("id00000\\n")
    >>> rec = list_cnceleb(root)[0]
    >>> rec.uid, rec.speaker, rec.group
    ('id00000/vlog-01-001', 'id00000', 'vlog')
    """
    folder = pathlib.Path(folder)
    data = folder / "data"
    if not data.is_dir():
        raise DataPreparationError(
            f"'{data}' does not exist. A CN-Celeb folder (CN-Celeb_flac, "
            "CN-Celeb2_flac) holds data/<speaker>/<genre>-<session>-<n>.flac; "
            "give data_folder the folder that holds data/."
        )
    recordings, silent = [], []
    for spk, origin in _training_speakers(folder, data):
        before = len(recordings)
        for rel, path in audio_files(data / spk):
            recordings.append(
                Recording(
                    f"{spk}/{rel}",
                    path,
                    spk,
                    origin=origin,
                    group=genre_of(rel),
                )
            )
        if len(recordings) == before:
            silent.append(spk)
    if not recordings:
        raise DataPreparationError(
            f"No audio files in the training speakers' folders under '{data}' "
            "(expected data/<speaker>/<genre>-<session>-<n>.flac)"
        )
    if silent:
        logger.warning(
            "%d listed speaker folder(s) under %s hold no audio (e.g. %s)",
            len(silent),
            data,
            silent[0],
        )
    return recordings


# ----------------------------------------------------------- evaluation
@dataclasses.dataclass
class CNCelebProtocol:
    """CN-Celeb1's evaluation protocol (``eval/lists``).

    ``recordings``: every audio it needs (the enrolment utterances of
    ``enroll.map``, uid ``<spk>/<stem>``; the concatenated enrolment files,
    ``enroll/<stem>``; the test files, ``test/<stem>``). ``trials``:
    ``(label, model, test uid)``. ``avg_map``: model -> its enrolment
    utterances (the Avg protocol, embeddings averaged). ``concat_map``:
    model -> ``[its concatenated file]`` (the Concat protocol).
    ``genres``: test uid -> genre.
    """

    recordings: list = dataclasses.field(default_factory=list)
    trials: list = dataclasses.field(default_factory=list)
    avg_map: dict = dataclasses.field(default_factory=dict)
    concat_map: dict = dataclasses.field(default_factory=dict)
    genres: dict = dataclasses.field(default_factory=dict)


class _Finder:
    """Finds listed audio, reading each folder's names once (the test
    folder holds ~18000 files: one listing, not ~50000 stat calls)."""

    def __init__(self):
        self.names = {}

    def find(self, base, rel):
        """The path of ``rel`` under ``base``, and the names tried."""
        stem, ext = os.path.splitext(rel)
        tried = [rel] if ext else []
        tried += [n for n in (stem + ".flac", stem + ".wav") if n not in tried]
        for name in tried:
            path = base / name
            parent = str(path.parent)
            if parent not in self.names:
                try:
                    self.names[parent] = set(os.listdir(parent))
                except OSError:
                    self.names[parent] = set()
            if path.name in self.names[parent]:
                return path, tried
        return None, tried


def _read_enroll_lst(path):
    concat, line_of = {}, {}
    form = _LIST_FORMS["enroll.lst"]
    for lineno, fields, line in _list_lines(path, form):
        if len(fields) != 2:
            raise _malformed(path, lineno, line, form)
        model, rel = fields
        if model in concat:
            raise DataPreparationError(
                f"{path}:{lineno}: model '{model}' is already defined on line "
                f"{line_of[model]}; list each model once ({form})"
            )
        concat[model], line_of[model] = rel, lineno
    return concat, line_of


def _read_enroll_map(path):
    avg = {}
    form = _LIST_FORMS["enroll.map"]
    for lineno, fields, line in _list_lines(path, form):
        if len(fields) < 2:
            raise _malformed(path, lineno, line, form)
        # A model may span lines, as read_enrolment reads it.
        avg.setdefault(fields[0], []).extend(
            (rel, lineno) for rel in fields[1:]
        )
    return avg


def _read_test_lst(path):
    tests = {}
    form = _LIST_FORMS["test.lst"]
    for lineno, fields, line in _list_lines(path, form):
        if len(fields) != 1:
            raise _malformed(path, lineno, line, form)
        uid = utterance_id(fields[0])
        if uid in tests:
            raise DataPreparationError(
                f"{path}:{lineno}: '{fields[0]}' repeats line "
                f"{tests[uid][1]}; list each test file once"
            )
        tests[uid] = (fields[0], lineno)
    return tests


def _read_trials_lst(path, avg, concat, tests, lists):
    form = _LIST_FORMS["trials.lst"]
    trials, seen = [], {}
    for lineno, fields, line in _list_lines(path, form):
        if len(fields) != 3:
            raise _malformed(
                path, lineno, line, form, f"{len(fields)} field(s), not 3"
            )
        model, test, label = fields
        if label not in ("0", "1"):
            raise _malformed(
                path, lineno, line, form, f"label {label!r} is not 0 or 1"
            )
        for name, defined in (("enroll.map", avg), ("enroll.lst", concat)):
            if model not in defined:
                raise DataPreparationError(
                    f"{path}:{lineno}: model '{model}' is not defined in "
                    f"{lists / name} ({len(defined)} model(s) there, e.g. "
                    f"'{next(iter(defined))}'). Every model of trials.lst "
                    "needs a line in both enroll.map (Avg protocol) and "
                    "enroll.lst (Concat protocol); add it or remove the trial."
                )
        uid = utterance_id(test)
        if uid not in tests:
            raise DataPreparationError(
                f"{path}:{lineno}: test file '{test}' is not listed in "
                f"{lists / 'test.lst'}; add a line '{test}' there (or fix "
                "the trial)"
            )
        if (model, uid) in seen:
            raise DataPreparationError(
                f"{path}:{lineno}: the trial {model} {test} is already on "
                f"line {seen[model, uid]}; remove the repeat (it would count "
                "twice in the EER)"
            )
        seen[model, uid] = lineno
        trials.append((int(label), model, uid))
    return trials


def read_cnceleb_protocol(folder):
    """Reads CN-Celeb1's evaluation protocol (``eval/lists``) and finds its
    audio.

    Arguments
    ---------
    folder : str or pathlib.Path
        ``CN-Celeb_flac`` (holds ``data/`` and ``eval/``).

    Returns
    -------
    CNCelebProtocol or None
        None when ``eval/lists`` does not exist (CN-Celeb2, or a
        training-only folder).

    Raises
    ------
    DataPreparationError
        Naming the list file, the line and the form lines should have: a
        missing or empty list, a malformed line, a label other than 0/1, a
        trial whose model enroll.map or enroll.lst does not define, or
        whose test file test.lst does not list, a repeated model of
        enroll.lst, a listed audio file that does not exist.

    Example
    -------
    >>> read_cnceleb_protocol(getfixture("tmp_path")) is None
    True
    """
    folder = pathlib.Path(folder)
    eval_dir, lists = folder / "eval", folder / "eval" / "lists"
    if not lists.is_dir():
        return None
    concat, concat_lines = _read_enroll_lst(lists / "enroll.lst")
    avg = _read_enroll_map(lists / "enroll.map")
    tests = _read_test_lst(lists / "test.lst")
    trials = _read_trials_lst(lists / "trials.lst", avg, concat, tests, lists)

    finder, missing, recordings, seen = _Finder(), [], [], set()

    def add(base, rel, where, uid, speaker, group=""):
        """A recording of the listed file, or its line among the missing."""
        path, tried = finder.find(base, rel)
        if path is None:
            missing.append(
                f"{where}: '{rel}' (looked for {', '.join(tried)} in {base})"
            )
        elif uid not in seen:
            seen.add(uid)
            recordings.append(
                Recording(uid, str(path), speaker, origin=where, group=group)
            )

    avg_map = {}
    for model, entries in avg.items():
        avg_map[model] = []
        for rel, lineno in entries:
            uid = utterance_id(rel)
            avg_map[model].append(uid)
            speaker = uid.split("/", 1)[0]
            where = f"{lists / 'enroll.map'}:{lineno}"
            add(folder / "data", rel, where, uid, speaker, genre_of(uid))
    concat_map = {}
    for model, rel in concat.items():
        uid = utterance_id(rel)
        concat_map[model] = [uid]
        where = f"{lists / 'enroll.lst'}:{concat_lines[model]}"
        add(eval_dir, rel, where, uid, _speaker_of(_stem(uid)))
    genres = {}
    for uid, (rel, lineno) in tests.items():
        genres[uid] = genre_of(uid)
        where = f"{lists / 'test.lst'}:{lineno}"
        add(eval_dir, rel, where, uid, _speaker_of(_stem(uid)), genres[uid])
    if missing:
        raise DataPreparationError(
            f"{len(missing)} audio file(s) of the evaluation lists do not "
            "exist:"
            + listed(missing)
            + "\nenroll.map names files relative to data/, enroll.lst and "
            "test.lst relative to eval/ (found with the extension written, "
            ".flac or .wav). Give data_folder the whole CN-Celeb_flac folder, "
            "or restore the files."
        )
    logger.info(
        "CN-Celeb evaluation protocol of %s: %d models, %d test files, %d "
        "trials (%d target)",
        folder,
        len(concat_map),
        len(genres),
        len(trials),
        sum(t[0] for t in trials),
    )
    return CNCelebProtocol(recordings, trials, avg_map, concat_map, genres)


def _write_atomic(path, lines):
    tmp = pathlib.Path(f"{path}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_protocol(protocol, folder):
    """Writes a protocol in the formats ``read_trials`` and
    ``read_enrolment`` read.

    Arguments
    ---------
    protocol : CNCelebProtocol
        As ``read_cnceleb_protocol`` returns it.
    folder : str or pathlib.Path
        Where to write (created if needed).

    Returns
    -------
    dict
        ``trials`` (``trials.txt``: ``label model test``), ``enroll_avg``
        (``enroll_avg.map``: ``model uid1 uid2 ...``), ``enroll_concat``
        (``enroll_concat.map``: ``model uid``), ``test_genres``
        (``test_genres.txt``: ``test_uid genre``, ``unknown`` for a name
        without one) -> the path written.

    Example
    -------
    >>> protocol = CNCelebProtocol(
    ...     trials=[(1, "id00800-enroll", "test/id00800-vlog-01-001")],
    ...     avg_map={"id00800-enroll": ["id00800/vlog-01-002"]},
    ...     concat_map={"id00800-enroll": ["enroll/id00800-enroll"]},
    ...     genres={"test/id00800-vlog-01-001": "vlog"},
    ... )
    >>> paths = write_protocol(protocol, getfixture("tmp_path"))
    >>> paths["trials"].read_text()
    '1 id00800-enroll test/id00800-vlog-01-001\\n'
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "trials": _write_atomic(
            folder / "trials.txt",
            [
                f"{label} {model} {test}"
                for label, model, test in protocol.trials
            ],
        ),
        "enroll_avg": _write_atomic(
            folder / "enroll_avg.map",
            [f"{m} {' '.join(u)}" for m, u in protocol.avg_map.items()],
        ),
        "enroll_concat": _write_atomic(
            folder / "enroll_concat.map",
            [f"{m} {' '.join(u)}" for m, u in protocol.concat_map.items()],
        ),
        "test_genres": _write_atomic(
            folder / "test_genres.txt",
            [f"{u} {g or 'unknown'}" for u, g in protocol.genres.items()],
        ),
    }


# ------------------------------------------------------------ combining
def _less(x, y):
    return x < y - TOLERANCE


def combine_ranges(durations, min_seconds):
    """Ranges of consecutive utterances to combine so that each lasts at
    least ``min_seconds`` (the algorithm of Kaldi's
    ``choose_utts_to_combine.py``, as WeSpeaker's CN-Celeb recipe uses it).

    The groups shorter than the minimum are taken from a stack, the last
    first; each merges with a neighbour group: the right one if there is
    no left one; the left one if there is no right one or the right one
    is long enough already; the right one if left + this stays short; the
    left one if right + this stays short; else the shorter neighbour. A
    group still short after merging right goes back on the stack. A single
    group covering all is left as it is, however short.

    Arguments
    ---------
    durations : sequence of float
        Lengths (s) of the utterances, in order.
    min_seconds : float
        The minimum length of a combined group (comparisons with a
        tolerance of ``TOLERANCE``).

    Returns
    -------
    list of (int, int)
        ``(start, end)`` index ranges partitioning ``range(len(durations))``
        in order.

    Example
    -------
    >>> combine_ranges([6.0, 0.1, 7.0], 0.5)
    [(0, 2), (2, 3)]
    >>> combine_ranges([1.0, 0.5, 0.1, 6.0], 1.0)
    [(0, 3), (3, 4)]
    """
    n = len(durations)
    # Groups are named by their first index; a doubly linked list of the
    # live ones gives the neighbours as groups merge.
    end = list(range(1, n + 1))
    dur = [float(d) for d in durations]
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    alive = [True] * n
    stack = [i for i in range(n) if _less(dur[i], min_seconds)]

    def absorb(left, right):
        """Group ``right`` joins group ``left`` (its left neighbour)."""
        end[left], dur[left] = end[right], dur[left] + dur[right]
        alive[right] = False
        nxt[left] = nxt[right]
        if nxt[right] < n:
            prev[nxt[right]] = left

    while stack:
        i = stack.pop()
        if not alive[i] or not _less(dur[i], min_seconds):
            continue
        left = prev[i] if prev[i] >= 0 else None
        right = nxt[i] if nxt[i] < n else None
        if left is None and right is None:
            continue
        if left is None:
            to_left = False
        elif right is None or not _less(dur[right], min_seconds):
            to_left = True
        elif _less(dur[left] + dur[i], min_seconds):
            to_left = False
        elif _less(dur[right] + dur[i], min_seconds):
            to_left = True
        else:
            to_left = _less(dur[left], dur[right])
        if to_left:
            # A short left group is still on the stack (it comes first).
            absorb(left, i)
        else:
            absorb(i, right)
            if _less(dur[i], min_seconds):
                stack.append(i)
    return [(i, end[i]) for i in range(n) if alive[i]]


def _safe(name):
    """``name`` as one file name component."""
    return _UNSAFE.sub("_", name)


def _resampled_length(frames, orig_rate, rate):
    """Samples ``torchaudio.functional.resample`` gives for ``frames``.

    torchaudio rounds ``new * frames / orig`` to float32 before its
    ceiling; the exact ceiling is one more for ~2 % of the lengths past
    ~8 s at 44.1 kHz (a kept file would then be rewritten on every run).

    Example
    -------
    >>> _resampled_length(361394, 44100, 16000)
    131118
    """
    if orig_rate == rate:
        return frames
    gcd = math.gcd(orig_rate, rate)
    orig, new = orig_rate // gcd, rate // gcd
    return int(np.ceil(np.float32(new * frames / orig)))


def _complete(path, frames, rate):
    """Whether ``path`` is a finished combined file (from an earlier run)."""
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 -- soundfile raises many types
        return False
    return info.frames == frames and info.samplerate == rate


def _write_combined(path, parts):
    rate = parts[0][1].rate
    signals = []
    for rec, probe in parts:
        signal, orig = read_numpy(rec.path, probe.start, probe.stop)
        if orig != rate:
            import torch

            signal = resample(torch.from_numpy(signal), orig, rate).numpy()
        signals.append(signal)
    # Resampling overshoots a little near full scale; 16-bit PCM wraps.
    audio = np.clip(np.concatenate(signals), -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: runs sharing a combine_folder may
    # write the same file at once; the last rename wins, both whole.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), audio, rate, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)


def _combined_stem(group, first_uid, count):
    """``<first stem>-comb<count>`` if the stem starts with ``<group>-``
    (CN-Celeb's ``<genre>-...``: the genre once), else ``<group or
    'all'>-<first stem>-comb<count>``."""
    stem, prefix = _safe(_stem(first_uid)), _safe(group)
    if prefix and stem.startswith(prefix + "-"):
        return f"{stem}-comb{count}"
    return f"{prefix or 'all'}-{stem}-comb{count}"


def _leftovers_combined(units, min_seconds):
    """A speaker's first-pass units (``(group, members)``) with those
    still below ``min_seconds`` combined across groups (in order of their
    first uid, ``combine_ranges``): the long units, then the short ones,
    several of them joined as group ``MIXED``."""

    def seconds(unit):
        """Total seconds of a unit's members."""
        return sum(m[2] for m in unit[1])

    short = sorted(
        (u for u in units if _less(seconds(u), min_seconds)),
        key=lambda u: u[1][0][0].uid,
    )
    if len(short) < 2:
        return units
    result = [u for u in units if not _less(seconds(u), min_seconds)]
    for a, b in combine_ranges([seconds(u) for u in short], min_seconds):
        if b - a == 1:
            result.append(short[a])
        else:
            result.append((MIXED, [m for _, ms in short[a:b] for m in ms]))
    return result


def combine_short_recordings(recordings, probes, min_seconds, out_folder):
    """Concatenates short recordings of a speaker into files of at least
    ``min_seconds``: first within a group (the genre of CN-Celeb, the
    video of VoxCeleb...; ``combine_ranges`` over each group in uid
    order), then across the speaker's groups still short.

    The second pass is ours: WeSpeaker's CN-Celeb recipe stops after the
    first, and a speaker whose audio is spread over genres each shorter
    than a training segment then trains on nothing (in one run 25 of 208
    CN-Celeb speakers, e.g. 6.2 s over three genres each under the 3 s
    segment). So the
    groups of a speaker still below ``min_seconds`` after the first pass
    are combined with each other (``combine_ranges`` again, in order of
    their first uid; never with another speaker's, nor with the speaker's
    long groups), as group ``"mixed"``. A speaker whose audio is below
    ``min_seconds`` in all is logged as a warning.

    A range of one recording keeps it as it is; a range of several becomes
    one mono 16-bit FLAC file, ``<out_folder>/<speaker>/<stem>.flac`` with
    ``<stem>`` ``<first stem>-comb<count>`` when the first recording's
    stem starts with ``<group>-`` (``drama-01-001-comb3``: the genre
    once), else ``<group or 'all'>-<first stem>-comb<count>``
    (``mixed-drama-01-001-comb4``), numbered ``-2``, ``-3``... where two
    would be named alike: the probed regions, channels averaged, each
    resampled to the first one's rate. Files are written atomically; a
    file from an earlier run with the expected length is kept. Recordings
    whose probe found no audio are passed through.

    Arguments
    ---------
    recordings : list of Recording
        The recordings (``group`` set by the layout's lister).
    probes : list of AudioProbe
        ``probe_recordings(recordings, ...)``: rates and regions (samples).
    min_seconds : float
        The minimum length of a combined file.
    out_folder : str or pathlib.Path
        Where the combined files go.

    Returns
    -------
    recordings : list of Recording
        The recordings kept and the combined ones (uid ``<speaker>/<file
        stem>``, origin ``combined from <first uid> .. <last uid>``, group
        the group's, ``"mixed"`` across groups), by speaker: its long
        groups' in order, then its combined short ones.
    written : int
        Combined files written by this call (not kept from an earlier one).

    Example
    -------
    >>> from speechbrain_unipet.utils.audio import probe_audio
    >>> root = getfixture("tmp_path")
    >>> recs = []
    >>> sizes = [20000, 8000, 8000, 4000, 12000]  # 1.25 s, 0.5 s...
    >>> for k, group in enumerate(["g", "g", "g", "h", "i"]):
    ...     path = root / f"s{k}.flac"
    ...     sf.write(path, np.full(sizes[k], 0.1), 16000)
    ...     recs.append(Recording(f"spk/{k}", str(path), "spk", group=group))
    >>> probes = [probe_audio((r.path, None, None, 1.0, 0)) for r in recs]
    >>> new, written = combine_short_recordings(recs, probes, 1.0, root / "c")
    >>> [(r.uid, r.group) for r in new], written
    ([('spk/0', 'g'), ('spk/g-1-comb2', 'g'), ('spk/mixed-3-comb2', 'mixed')], 2)
    """
    out_folder = pathlib.Path(out_folder)
    # speaker -> group -> [(recording, probe, seconds)], in input order.
    speakers, empty, totals = {}, [], {}
    for rec, probe in zip(recordings, probes, strict=True):
        totals.setdefault(rec.speaker, 0.0)
        if probe.error or probe.rate <= 0 or probe.stop <= probe.start:
            empty.append(rec)
            continue
        seconds = (probe.stop - probe.start) / probe.rate
        totals[rec.speaker] += seconds
        groups = speakers.setdefault(rec.speaker, {})
        groups.setdefault(rec.group, []).append((rec, probe, seconds))
    # A combined uid must not be a kept recording's either.
    taken = {rec.uid for rec in recordings}
    result, written, kept, combined_in = [], 0, 0, 0
    for speaker, groups in speakers.items():
        units = []
        for group, members in groups.items():
            members.sort(key=lambda m: m[0].uid)
            seconds = [m[2] for m in members]
            for a, b in combine_ranges(seconds, min_seconds):
                units.append((group, members[a:b]))
        for group, members in _leftovers_combined(units, min_seconds):
            if len(members) == 1:
                result.append(members[0][0])
                continue
            first, last = members[0][0], members[-1][0]
            # Two first stems alike in a group (csv ids a/x, b/x): numbered.
            base = _combined_stem(group, first.uid, len(members))
            stem, k = base, 1
            prefix = _WHITESPACE.sub("_", speaker)
            while f"{prefix}/{stem}" in taken:
                k += 1
                stem = f"{base}-{k}"
            taken.add(f"{prefix}/{stem}")
            path = out_folder / _safe(speaker) / f"{stem}.flac"
            parts = [(rec, probe) for rec, probe, _ in members]
            rate = parts[0][1].rate
            frames = sum(
                _resampled_length(p.stop - p.start, p.rate, rate)
                for _, p in parts
            )
            if _complete(path, frames, rate):
                kept += 1
            else:
                _write_combined(path, parts)
                written += 1
            combined_in += len(members)
            result.append(
                Recording(
                    f"{prefix}/{stem}",
                    str(path),
                    speaker,
                    origin=f"combined from {first.uid} .. {last.uid}",
                    group=group,
                )
            )
    result += empty
    logger.info(
        "Combined short recordings (< %.2f s, within speaker and group, "
        "then across a speaker's short groups): %d in, %d out; %d "
        "recordings into %d files (%d written, %d kept from an earlier run) "
        "in %s",
        min_seconds,
        len(recordings),
        len(result),
        combined_in,
        written + kept,
        written,
        kept,
        out_folder,
    )
    short = [
        f"{spk} ({total:.2f} s)"
        for spk, total in totals.items()
        if _less(total, min_seconds)
    ]
    if short:
        logger.warning(
            "%d speaker(s) have less than %.2f s of audio in all, so no "
            "combined file reaches the minimum (they train only on segments "
            "that fit, if any): %s",
            len(short),
            min_seconds,
            ", ".join(short[:5])
            + (f" ... and {len(short) - 5} more" if len(short) > 5 else ""),
        )
    return result, written
