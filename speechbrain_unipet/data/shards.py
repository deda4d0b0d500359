"""WebDataset tar shards of a corpus (``speechbrain-unipet make-shards``):
training data read as a few large sequential files instead of one file per
utterance, which is what network storage and many machines need for
VoxCeleb2 (1.1 M utterances) or VoxBlink2 (10 M).

A shard folder holds:

* ``shard-000000.tar``, ``shard-000001.tar``, ...: WebDataset tar files.
  Each sample is two members sharing a key (the utterance's zero-padded
  position in the shuffled order): ``<key>.flac``, the utterance resampled
  to 16 kHz, down-mixed to mono, 16-bit FLAC; ``<key>.json``, its
  ``id``, ``speaker``, ``duration`` (s), ``sample_rate``, ``source`` (the
  file read) and ``start``/``stop`` (the region read, in seconds of the
  source);
* ``plan.json``: the options, the data's layouts and the ordered
  utterance ids of each shard, written before the first shard;
* ``index.json``: written last, once every shard is complete: per shard
  its utterances, bytes, seconds and speakers, and the totals.

The utterances are shuffled with ``random.Random(seed)`` before they are
cut into shards (as WeSpeaker's ``make_shard_list.py --shuffle``), so each
shard mixes speakers. Shards are cut at ``max_count`` utterances and, when
``max_bytes`` is given, at that many bytes as estimated from the
durations, so that the plan, and with it every shard's content, is known
before any audio is read and depends on nothing but the data, the options
and the seed. A killed run leaves no shard under its final name half
written (each goes through a temporary name); its re-run checks that the
options and the data are those of ``plan.json`` and writes the shards that
are not complete yet.

Authors
 * speechbrain-unipet contributors 2026
"""

import concurrent.futures
import hashlib
import io
import json
import math
import multiprocessing
import os
import pathlib
import random
import re
import tarfile
import time

import numpy as np
import soundfile as sf
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.layouts import (
    DATA_FORMATS,
    DataPreparationError,
    Recording,
    _check_probes,
    detect_format,
    list_recordings,
    probe_recordings,
)
from speechbrain_unipet.utils.audio import (
    MIN_SAMPLE_RATE,
    AudioProbe,
    NotReadBySoundfile,
    audio_info,
    load_numpy,
)
from speechbrain_unipet.utils.files import atomic_write

logger = get_logger(__name__)


#: Version of the shard folder's layout (plan.json, index.json, samples).
FORMAT_VERSION = 1

PLAN_FILE = "plan.json"

INDEX_FILE = "index.json"

SHARD_NAME = "shard-{:06d}.tar"

#: 16-bit FLAC of speech takes about this share of the PCM bytes; the byte
#: limit of a shard is estimated with it (noise compresses less).
FLAC_RATIO = 0.6

# tar: a 512-byte header per member, each member padded to 512 bytes, and
# the archive closed by two zero blocks, padded to a 10240-byte record.
_BLOCK = 512
_RECORD = 10240

# Members of one sample, in the order TarWriter writes them (sorted).
_EXTENSIONS = ("flac", "json")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def _webdataset():
    """The ``webdataset`` module, or an error saying how to install it."""
    try:
        import webdataset
    except ImportError as err:
        raise DataPreparationError(
            "Shards need the webdataset package: pip install "
            "'speechbrain-unipet[shards]' (or pip install webdataset)"
        ) from err
    return webdataset


def parse_size(text):
    """Bytes of a size such as ``500MB``, ``1GB``, ``2GiB`` or ``1000000``.

    Arguments
    ---------
    text : str or int
        A number of bytes, optionally with a unit: ``KB``/``MB``/``GB``/
        ``TB`` (powers of 1000, as disks are sold) or ``KiB``/``MiB``/
        ``GiB``/``TiB`` (powers of 1024); case does not matter.

    Returns
    -------
    int

    Raises
    ------
    DataPreparationError
        Naming the text, for anything else.

    Example
    -------
    >>> parse_size("500MB"), parse_size("1GB"), parse_size("2KiB")
    (500000000, 1000000000, 2048)
    >>> parse_size("1.5gb"), parse_size(4096)
    (1500000000, 4096)
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise DataPreparationError(
            f"{text!r} is not a size: give bytes, or a number with KB, MB, "
            "GB, TB (or KiB, MiB, GiB, TiB), e.g. 500MB or 1GB"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise DataPreparationError(f"size {text!r} must be positive")
    return size


def shard_options(
    data_folder, data_format, max_count, max_bytes, seed, sample_rate
):
    """What the shards of a folder depend on (stored in ``plan.json`` and
    ``index.json``).

    Arguments
    ---------
    data_folder, data_format, max_count, max_bytes, seed, sample_rate
        As for ``make_shards``.

    Returns
    -------
    dict
        The folders made absolute (a re-run from another working directory
        is the same data) and the layout of each, detected where
        ``data_format`` is ``None``.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> _ = (root / "wav.scp").write_text("u1 /a.wav\\n")
    >>> shard_options(root, None, 1000, None, 1986, 16000)["data_format"]
    'kaldi'
    """
    if data_format is not None and data_format not in DATA_FORMATS:
        raise DataPreparationError(
            f"data_format must be one of {', '.join(DATA_FORMATS)} or null "
            f"(detect), got {data_format!r}"
        )
    folders = [f.strip() for f in str(data_folder).split(",")]
    return {
        "version": FORMAT_VERSION,
        "data_folder": ",".join(os.path.abspath(f) for f in folders),
        "data_format": ",".join(
            data_format or detect_format(f) for f in folders
        ),
        "max_count": max_count,
        "max_bytes": max_bytes,
        "seed": seed,
        "sample_rate": sample_rate,
    }


def estimated_bytes(samples):
    """Bytes one utterance of ``samples`` 16-bit samples takes in a shard,
    as the byte limit counts them: its FLAC at ``FLAC_RATIO`` of the PCM
    size, its metadata, and the tar headers and padding.

    Arguments
    ---------
    samples : int
        Samples at the shard's rate.

    Returns
    -------
    int
        A multiple of 512 (tar blocks).

    Example
    -------
    >>> estimated_bytes(16000)  # 1 s at 16 kHz: 19200 B of FLAC, 3 headers
    20992
    """
    flac = math.ceil((samples * 2 * FLAC_RATIO + 100) / _BLOCK) * _BLOCK
    # two headers and one block of metadata
    return flac + 3 * _BLOCK


def tar_bytes(members):
    """Bytes of a tar archive whose members (headers and padding included)
    take ``members`` bytes: closed by two zero blocks, padded to whole
    10240-byte records as Python's ``tarfile`` writes it.

    Arguments
    ---------
    members : int

    Returns
    -------
    int

    Example
    -------
    >>> tar_bytes(0), tar_bytes(20992), tar_bytes(9216)
    (10240, 30720, 10240)
    """
    return math.ceil((members + 2 * _BLOCK) / _RECORD) * _RECORD


def _resampled_length(frames, rate, sample_rate):
    """Samples of ``frames`` at ``rate`` once resampled (as
    ``resample_numpy``: the ceiling of the exact ratio)."""
    return -(-frames * sample_rate // rate)


def _plan(recordings, probes, options):
    """The shards: lists of utterance entries in the shuffled order."""
    sample_rate = options["sample_rate"]
    kept = [
        (rec, probe)
        for rec, probe in zip(recordings, probes, strict=True)
        if probe.stop > probe.start
    ]
    order = list(range(len(kept)))
    random.Random(options["seed"]).shuffle(order)
    width = max(9, len(str(len(order))))
    shards, current, size = [], [], 0
    for position, i in enumerate(order):
        rec, probe = kept[i]
        samples = _resampled_length(
            probe.stop - probe.start, probe.rate, sample_rate
        )
        entry = {
            "key": f"{position:0{width}d}",
            "id": rec.uid,
            "speaker": rec.speaker,
            "source": os.path.abspath(rec.path),
            "rate": probe.rate,
            "first": probe.start,
            "last": probe.stop,
            "samples": samples,
            "bytes": estimated_bytes(samples),
        }
        full = len(current) >= options["max_count"] or (
            options["max_bytes"] is not None
            and tar_bytes(size + entry["bytes"]) > options["max_bytes"]
        )
        if current and full:
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry["bytes"]
    if current:
        shards.append(current)
    return shards, len(recordings) - len(kept)


def _digest(shard):
    """What a shard's samples are made of (files, regions, speakers), as a
    short hash: a re-run on changed data is told from a resume."""
    made_of = [
        [e["key"], e["id"], e["speaker"], e["source"], e["rate"]]
        + [e["first"], e["last"]]
        for e in shard
    ]
    text = json.dumps(made_of, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _plan_record(options, shards, dropped):
    """What ``plan.json`` holds."""
    return {
        "version": FORMAT_VERSION,
        "options": options,
        "dropped_empty": dropped,
        "shards": [
            {
                "name": SHARD_NAME.format(k),
                "ids": [e["id"] for e in shard],
                # What the recipe's preparation needs of each utterance,
                # without opening its source (data_format: shards).
                "utterances": [
                    [
                        e["speaker"],
                        e["source"],
                        e["rate"],
                        e["first"],
                        e["last"],
                    ]
                    for e in shard
                ],
                "digest": _digest(shard),
            }
            for k, shard in enumerate(shards)
        ],
    }


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DataPreparationError(
            f"Cannot read '{path}' ({err}): it is damaged. Re-run "
            "speechbrain-unipet make-shards with --overwrite to rebuild the "
            "shards."
        ) from err


def _changed(previous, options):
    """``{key: (written, now)}`` of the options that differ."""
    keys = sorted(set(previous) | set(options))
    return {
        k: (previous.get(k), options.get(k))
        for k in keys
        if previous.get(k) != options.get(k)
    }


def _refuse(out, what):
    raise DataPreparationError(
        f"'{out}' holds shards of other {what}. Write to a new or empty "
        "folder, or give --overwrite (overwrite=True) to replace them."
    )


def _check_options(out, options, overwrite):
    """Refuses, before the data is read, a non-empty output folder that
    holds something else than shards made with ``options``."""
    if overwrite or not out.exists():
        return None
    if not out.is_dir():
        raise DataPreparationError(f"'{out}' exists and is not a folder")
    plan_path = out / PLAN_FILE
    if not plan_path.is_file():
        if any(out.iterdir()):
            raise DataPreparationError(
                f"'{out}' is not empty and holds no {PLAN_FILE} (not a "
                "shard folder): give a new or empty folder, or --overwrite "
                "(overwrite=True) to write the shards beside its files"
            )
        return None
    previous = _read_json(plan_path)
    changed = _changed(previous.get("options", {}), options)
    if changed:
        _refuse(
            out,
            "options: "
            + "; ".join(
                f"{k}: written {a!r}, now {b!r}"
                for k, (a, b) in changed.items()
            ),
        )
    return previous


def _check_data(out, previous, record):
    """Refuses a re-run whose data gives another plan than the written
    one: utterances added or removed, or other files, regions, speakers or
    lengths behind the same ids."""
    before = previous.get("shards", [])
    now = record["shards"]
    if before == now:
        return
    old = {u for s in before for u in s["ids"]}
    new = {u for s in now for u in s["ids"]}
    added, gone = sorted(new - old), sorted(old - new)
    parts = []
    if added:
        parts.append(f"{len(added)} utterance(s) added (e.g. '{added[0]}')")
    if gone:
        parts.append(f"{len(gone)} utterance(s) gone (e.g. '{gone[0]}')")
    if not parts:
        moved = next(
            (a["name"] for a, b in zip(before, now, strict=False) if a != b),
            now[-1]["name"] if now else "",
        )
        parts.append(
            "the same utterances, but other files, regions, speakers or "
            f"lengths behind their ids (first in {moved})"
        )
    _refuse(out, f"data: the data now has {', '.join(parts)}")


def _clear(out):
    """Removes what a shard folder's run writes (nothing else)."""
    for path in [*out.glob("shard-*.tar"), *out.glob(".shard-*.tmp")]:
        path.unlink()
    for name in (INDEX_FILE, PLAN_FILE):
        (out / name).unlink(missing_ok=True)


def _complete(path, shard):
    """Whether the tar at ``path`` holds exactly the members of ``shard``
    (headers only: a truncated or foreign file is not complete)."""
    if not path.is_file():
        return False
    try:
        with tarfile.open(path, "r:") as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError):
        return False
    return names == [f"{e['key']}.{x}" for e in shard for x in _EXTENSIONS]


def _sample(entry, sample_rate, fallback):
    """The tar members of one utterance: FLAC and metadata bytes."""
    if not fallback:
        # Raises NotReadBySoundfile for the few formats only torchaudio
        # decodes, which a forked worker must not run (see _write_all).
        audio_info(entry["source"], fallback=False)
    signal = load_numpy(
        entry["source"], sample_rate, entry["first"], entry["last"]
    )
    if signal.size != entry["samples"]:
        logger.warning(
            "'%s' gave %d samples where its header promised %d: the file "
            "may be damaged",
            entry["source"],
            signal.size,
            entry["samples"],
        )
    # Quantised here (rounded, clipped to full scale) rather than by
    # libsndfile: the written samples depend on no library's conversion,
    # and read back as pcm / 32768, within 2 ** -16 of the signal.
    pcm = np.clip(np.round(signal * 32768.0), -32768, 32767).astype(np.int16)
    flac = io.BytesIO()
    sf.write(flac, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    meta = {
        "id": entry["id"],
        "speaker": entry["speaker"],
        "duration": pcm.size / sample_rate,
        "sample_rate": sample_rate,
        "source": entry["source"],
        "start": entry["first"] / entry["rate"],
        "stop": entry["last"] / entry["rate"],
    }
    return {
        "__key__": entry["key"],
        "flac": flac.getvalue(),
        "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode(
            "utf-8"
        ),
    }


def _write_shard(task):
    """Writes one shard through a temporary name; returns ``(name, bytes)``,
    bytes ``None`` when a file needs torchaudio and ``fallback`` is off."""
    folder, name, shard, sample_rate, fallback = task
    wds = _webdataset()
    final = pathlib.Path(folder) / name
    tmp = final.with_name(f".{name[:-4]}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            # Fixed member times and owners: the same data and seed give
            # byte-identical shards.
            writer = wds.TarWriter(
                f, user="", group="", mode=0o444, mtime=0, encoder=False
            )
            try:
                for entry in shard:
                    writer.write(_sample(entry, sample_rate, fallback))
            finally:
                # Also on an error: an unclosed writer would write its end
                # blocks into the closed file when collected.
                writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except NotReadBySoundfile:
        return name, None
    finally:
        tmp.unlink(missing_ok=True)
    return name, final.stat().st_size


def _write_all(tasks, num_workers):
    """Writes the shards of ``tasks``, in worker processes when there are
    several.

    Forked processes first, as ``probe_recordings``: the cheapest start;
    they decode with soundfile and resample with NumPy, never torch, whose
    thread pools do not survive a fork. The shards holding a file only
    torchaudio decodes (m4a as VoxCeleb2 ships it) are written afterwards
    by spawned processes, which run torch safely (and, as any spawned
    process, re-import a script's ``__main__``: call this under ``if
    __name__ == "__main__":``), or here when one process is enough.
    """
    workers = min(num_workers or os.cpu_count() or 1, len(tasks))
    progress = _Progress(len(tasks))
    if workers <= 1:
        for task in tasks:
            _write_shard(_with_fallback(task))
            progress.step()
        return
    deferred = []
    for task, size in _pooled(tasks, workers, "fork"):
        if size is None:
            deferred.append(_with_fallback(task))
        else:
            progress.step()
    deferred.sort(key=lambda t: t[1])
    if deferred:
        logger.info(
            "%d shard(s) hold files only torchaudio decodes: written by "
            "spawned processes",
            len(deferred),
        )
    if len(deferred) > 1:
        for _ in _pooled(deferred, min(workers, len(deferred)), "spawn"):
            progress.step()
    elif deferred:
        _write_shard(deferred[0])
        progress.step()


def _with_fallback(task):
    return (*task[:4], True)


def _pooled(tasks, workers, method):
    """``(task, (name, bytes))`` of ``_write_shard`` over ``tasks`` in
    ``workers`` processes started by ``method``, as they complete."""
    context = multiprocessing.get_context(method)
    pool = concurrent.futures.ProcessPoolExecutor(workers, context)
    try:
        futures = {pool.submit(_write_shard, t): t for t in tasks}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()[1]
    finally:
        # On an error: no new shard starts; those written stay (resumable).
        pool.shutdown(wait=True, cancel_futures=True)


class _Progress:
    """Logs the shards written, about every 5 %."""

    def __init__(self, total):
        self.total, self.done = total, 0
        self.every = max(1, total // 20)

    def step(self):
        """Counts one shard written."""
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            logger.info("Shards written: %d of %d", self.done, self.total)


def _index(out, options, shards, dropped):
    """What ``index.json`` holds (from the plan and the written files)."""
    rate = options["sample_rate"]
    entries, speakers = [], set()
    for k, shard in enumerate(shards):
        name = SHARD_NAME.format(k)
        spk = {e["speaker"] for e in shard}
        speakers |= spk
        entries.append(
            {
                "name": name,
                "utterances": len(shard),
                "bytes": (out / name).stat().st_size,
                "seconds": round(sum(e["samples"] for e in shard) / rate, 3),
                "speakers": len(spk),
            }
        )
    seconds = sum(e["samples"] for s in shards for e in s) / rate
    return {
        "version": FORMAT_VERSION,
        "options": options,
        "sample_rate": rate,
        "shards": entries,
        "utterances": sum(len(s) for s in shards),
        "speakers": len(speakers),
        "hours": round(seconds / 3600, 4),
        "bytes": sum(e["bytes"] for e in entries),
        "dropped_empty": dropped,
        "speaker_ids": sorted(speakers),
    }


def make_shards(
    data_folder,
    out_folder,
    data_format=None,
    max_count=1000,
    max_bytes=None,
    seed=1986,
    sample_rate=16000,
    num_workers=None,
    overwrite=False,
):
    """Writes the recordings of ``data_folder`` as WebDataset tar shards
    (see the module docstring for the folder it writes).

    Every recording is inspected first: an unreadable one is an error
    naming it before any shard is written; empty ones are skipped (and
    counted). A re-run with the same options and data writes only the
    shards not complete yet; other options or data are refused (naming
    what differs) unless ``overwrite``.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The data, in any layout of ``list_recordings`` (comma-separated
        folders are combined).
    out_folder : str or pathlib.Path
        The shard folder (new, empty, or one this function wrote).
    data_format : str, optional
        One of ``DATA_FORMATS``; ``None`` detects it.
    max_count : int
        Most utterances in a shard.
    max_bytes : int, optional
        Most bytes in a shard, estimated from the durations
        (``estimated_bytes``); an utterance larger than that alone makes a
        shard. ``None``: by count only.
    seed : int
        Seed of the utterance order.
    sample_rate : int
        Rate of the shards' audio.
    num_workers : int, optional
        Processes inspecting the audio and writing shards; ``None`` uses
        ``os.cpu_count()``.
    overwrite : bool
        Replace the shards of a folder written with other options or data.

    Returns
    -------
    dict
        ``folder``, ``shards``, ``written`` (this run), ``skipped``
        (complete already), ``utterances``, ``speakers``, ``hours``,
        ``bytes``, ``dropped_empty`` and ``seconds`` (time taken).

    Raises
    ------
    DataPreparationError
        Naming the file or option, for unusable data, options or folder.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> for spk in ("a", "b"):
    ...     (root / "data" / spk).mkdir(parents=True)
    ...     sf.write(root / "data" / spk / "1.wav", np.zeros(800), 8000)
    >>> summary = make_shards(root / "data", root / "shards", max_count=1)
    >>> summary["shards"], summary["utterances"], summary["speakers"]
    (2, 2, 2)
    >>> sorted(p.name for p in (root / "shards").iterdir())
    ['index.json', 'plan.json', 'shard-000000.tar', 'shard-000001.tar']
    """
    began = time.monotonic()
    if not isinstance(max_count, int) or max_count < 1:
        raise DataPreparationError(
            f"max_count must be a whole number >= 1, got {max_count!r}"
        )
    if max_bytes is not None and (
        not isinstance(max_bytes, int) or max_bytes < 1
    ):
        raise DataPreparationError(
            f"max_bytes must be a number of bytes >= 1 or None, got "
            f"{max_bytes!r}"
        )
    if sample_rate < MIN_SAMPLE_RATE:
        raise DataPreparationError(
            f"sample_rate must be at least {MIN_SAMPLE_RATE}, got {sample_rate}"
        )
    _webdataset()  # refused before the (long) inspection when missing
    out = pathlib.Path(out_folder)
    options = shard_options(
        data_folder, data_format, max_count, max_bytes, seed, sample_rate
    )
    previous = _check_options(out, options, overwrite)

    recordings = list_recordings(data_folder, data_format)
    logger.info(
        "Inspecting %d recordings (%s)...",
        len(recordings),
        options["data_format"],
    )
    probes = probe_recordings(recordings, 1.0, 0, num_workers)
    _check_probes(recordings, probes)
    shards, dropped = _plan(recordings, probes, options)
    if not shards:
        raise DataPreparationError(
            f"Every recording of {data_folder} is empty: nothing to shard"
        )
    if dropped:
        logger.warning("Skipped %d empty recording(s)", dropped)
    if max_bytes is not None:
        alone = sum(
            len(s) == 1 and tar_bytes(s[0]["bytes"]) > max_bytes for s in shards
        )
        if alone:
            logger.warning(
                "%d utterance(s) alone exceed max_bytes=%d: one shard each",
                alone,
                max_bytes,
            )
    record = _plan_record(options, shards, dropped)
    if previous is not None:
        _check_data(out, previous, record)

    if overwrite and out.is_dir():
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    if previous is None:
        atomic_write(out / PLAN_FILE, json.dumps(record, indent=1))
    for stale in out.glob(".shard-*.tmp"):
        stale.unlink()  # left by a killed run
    tasks = [
        (str(out), SHARD_NAME.format(k), shard, sample_rate, False)
        for k, shard in enumerate(shards)
        if not _complete(out / SHARD_NAME.format(k), shard)
    ]
    if tasks:
        # Gone before any shard is rewritten: a folder without it is not
        # complete (read_shards refuses it).
        (out / INDEX_FILE).unlink(missing_ok=True)
        logger.info(
            "Writing %d of %d shards to %s (%d complete already)",
            len(tasks),
            len(shards),
            out,
            len(shards) - len(tasks),
        )
        _write_all(tasks, num_workers)
    index = _index(out, options, shards, dropped)
    if max_bytes is not None:
        over = [s["bytes"] for s in index["shards"] if s["bytes"] > max_bytes]
        if over:
            logger.warning(
                "%d shard(s) exceed max_bytes=%d, by up to %.0f %%: the audio "
                "compresses to more than the FLAC_RATIO=%g of its PCM size "
                "that the limit assumes; give a smaller max_bytes (and "
                "overwrite) if it matters",
                len(over),
                max_bytes,
                100 * (max(over) / max_bytes - 1),
                FLAC_RATIO,
            )
    atomic_write(out / INDEX_FILE, json.dumps(index, indent=1))
    summary = {
        "folder": str(out),
        "shards": len(shards),
        "written": len(tasks),
        "skipped": len(shards) - len(tasks),
        "utterances": index["utterances"],
        "speakers": index["speakers"],
        "hours": index["hours"],
        "bytes": index["bytes"],
        "dropped_empty": dropped,
        "seconds": round(time.monotonic() - began, 2),
    }
    logger.info("Shards: %s", summary)
    return summary


def read_shards(folder):
    """The index of a complete shard folder (``index.json``).

    Arguments
    ---------
    folder : str or pathlib.Path
        A folder ``make_shards`` wrote.

    Returns
    -------
    dict
        As ``index.json`` holds it (see ``make_shards``).

    Raises
    ------
    DataPreparationError
        Naming the folder, when its index is missing or damaged or a shard
        it lists is gone.

    Example
    -------
    >>> read_shards(getfixture("tmp_path"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_unipet.data.recordings.DataPreparationError: '...' holds no index.json...
    """
    folder = pathlib.Path(folder)
    path = folder / INDEX_FILE
    if not path.is_file():
        unfinished = (folder / PLAN_FILE).is_file()
        raise DataPreparationError(
            f"'{folder}' holds no {INDEX_FILE}"
            + (
                " (a make-shards run did not finish there)"
                if unfinished
                else " (not a shard folder)"
            )
            + f": run speechbrain-unipet make-shards DATA {folder}"
            + (" again to complete it" if unfinished else "")
        )
    index = _read_json(path)
    if (
        not isinstance(index, dict)
        or index.get("version") != FORMAT_VERSION
        or not index.get("shards")
    ):
        raise DataPreparationError(
            f"'{path}' is incomplete or of another version (this package "
            f"reads version {FORMAT_VERSION}): run speechbrain-unipet "
            f"make-shards DATA {folder} --overwrite"
        )
    missing = [
        s["name"] for s in index["shards"] if not (folder / s["name"]).is_file()
    ]
    if missing:
        raise DataPreparationError(
            f"'{folder}' lacks {len(missing)} shard(s) its {INDEX_FILE} "
            f"lists (e.g. {missing[0]}): run speechbrain-unipet make-shards "
            "again with the same options, which rewrites them"
        )
    return index


def _decode_flac(key, data):
    """webdataset decoder handler: ``.flac`` members to float32 samples."""
    if not key.endswith(".flac"):
        return None
    signal, _ = sf.read(io.BytesIO(data), dtype="float32")
    return signal


def _to_example(sample):
    """A decoded webdataset sample -> what ``shard_dataset`` yields."""
    meta = sample["json"]
    return {
        "id": meta["id"],
        "speaker": meta["speaker"],
        "duration": meta["duration"],
        "wav": torch.from_numpy(sample["flac"]),
        "shard": os.path.basename(sample.get("__url__", "")),
    }


def shard_dataset(
    folder, split_by_rank=True, shuffle_buffer=0, seed=1986, worker=None
):
    """A ``webdataset.WebDataset`` over the shards of ``folder``.

    Each process of a distributed run (``RANK``/``WORLD_SIZE``, or the
    initialised process group) reads its own shards
    (``webdataset.split_by_node``), and each DataLoader worker its own
    part of those (``webdataset.split_by_worker``): every utterance is read
    once per epoch. Workers or ranks beyond the number of shards get none.
    SpeechBrain's ``make_dataloader`` recognises the dataset (and sets
    ``batch_size=None``: batch inside the pipeline, e.g. ``.batched``).

    Arguments
    ---------
    folder : str or pathlib.Path
        A complete shard folder (``read_shards``).
    split_by_rank : bool
        Split the shards among the ranks; ``False``: every process reads
        all of them.
    shuffle_buffer : int
        0 reads the shards and their samples in order; N shuffles the
        shards and then the samples through a buffer of N (both seeded,
        the order changing with each pass over the dataset).
    seed : int
        Seed of the shuffling.
    worker : tuple of int, optional
        ``(index, count)``: read the share of that DataLoader worker
        instead of this process's own (a resumed epoch's reader plays
        another worker's part).

    Returns
    -------
    webdataset.WebDataset
        Yielding ``{"id", "speaker", "duration", "wav", "shard"}``:
        ``wav`` a float32 tensor [samples] at the shards' rate, ``shard``
        the file it came from.

    Raises
    ------
    DataPreparationError
        As ``read_shards``; or when there are more ranks than shards.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "data" / "a").mkdir(parents=True)
    >>> sf.write(root / "data" / "a" / "1.wav", np.zeros(800), 8000)
    >>> _ = make_shards(root / "data", root / "shards")
    >>> [(x["id"], x["wav"].shape) for x in shard_dataset(root / "shards")]
    [('a/1', torch.Size([1600]))]
    """
    wds = _webdataset()
    folder = pathlib.Path(folder)
    index = read_shards(folder)
    urls = [str(folder / s["name"]) for s in index["shards"]]
    if split_by_rank:
        _, world_size, _, _ = wds.utils.pytorch_worker_info()
        if world_size > len(urls):
            raise DataPreparationError(
                f"{world_size} ranks share the {len(urls)} shard(s) of "
                f"'{folder}': each rank needs one. Make more shards "
                "(a smaller --max-count or --max-bytes, with --overwrite)."
            )
    shuffle = shuffle_buffer > 0
    dataset = wds.WebDataset(
        urls,
        nodesplitter=wds.split_by_node if split_by_rank else None,
        workersplitter=wds.split_by_worker
        if worker is None
        else (lambda urls: iter(list(urls)[worker[0] :: worker[1]])),
        shardshuffle=len(urls) if shuffle else False,
        detshuffle=True,
        seed=seed,
        # A worker without shards yields nothing rather than failing.
        empty_check=False,
    )
    if shuffle:
        # Before decoding: the buffer holds compressed samples.
        dataset = dataset.compose(wds.detshuffle(shuffle_buffer, seed=seed))
    return dataset.decode(_decode_flac).map(_to_example)


def shard_recordings(folder):
    """The utterances of a shard folder as the recordings they were made
    from, with what inspecting them found (from ``plan.json``: no source
    file is opened): what the recipe's data preparation splits and
    segments for ``data_format: shards``. Training then reads the shards;
    validation and test read the source files of their utterances.

    Arguments
    ---------
    folder : str or pathlib.Path
        A complete shard folder (``read_shards``).

    Returns
    -------
    recordings : list of Recording
        ``uid`` the utterance id, ``path`` its source file, region in
        seconds.
    probes : list of AudioProbe
        The source's rate and the region in its samples.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "data" / "a").mkdir(parents=True)
    >>> sf.write(root / "data" / "a" / "1.wav", np.zeros(800), 8000)
    >>> _ = make_shards(root / "data", root / "shards")
    >>> recs, probes = shard_recordings(root / "shards")
    >>> [(r.uid, r.speaker, p.rate, p.stop) for r, p in zip(recs, probes)]
    [('a/1', 'a', 8000, 800)]
    """
    folder = pathlib.Path(folder)
    read_shards(folder)
    plan = _read_json(folder / "plan.json") or {}
    recordings, probes = [], []
    for shard in plan.get("shards", []):
        if "utterances" not in shard:
            raise DataPreparationError(
                f"'{folder / 'plan.json'}' was written by an older "
                "speechbrain-unipet, without the utterances' sources: write "
                "the shards again (speechbrain-unipet make-shards ... "
                "--overwrite)"
            )
        for uid, (speaker, source, rate, first, last) in zip(
            shard["ids"], shard["utterances"], strict=True
        ):
            recordings.append(
                Recording(
                    uid,
                    source,
                    speaker,
                    first / rate,
                    last / rate,
                    origin=f"{folder / shard['name']}",
                )
            )
            probes.append(
                AudioProbe(rate=rate, channels=1, start=first, stop=last)
            )
    return recordings, probes


def is_shard_folder(path):
    """Whether ``path`` is a folder written by ``make_shards``.

    Arguments
    ---------
    path : str or pathlib.Path

    Returns
    -------
    bool

    Example
    -------
    >>> is_shard_folder(getfixture("tmp_path"))
    False
    """
    path = pathlib.Path(path)
    return (path / "index.json").is_file() and (path / "plan.json").is_file()
