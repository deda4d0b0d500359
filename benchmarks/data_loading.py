"""Data loading: utterances per second from raw files against shards,
side by side in one run.

    python benchmarks/data_loading.py [--utterances 20000] [--source DIR]
        [--work DIR] [--workers 1,4] [--rounds 3] [--limit N]
        [--batch-size 32] [--shuffle-buffer 1000] [--max-count 1000]
        [--cold auto|drop_caches|fadvise|none] [--tiny]
        [--throttle-iops N] [--throttle-mbps M]

Data: ``--utterances`` short FLAC files (16 kHz mono, 16-bit), random crops
of 2-4 s (seeded) of the recordings of ``--source`` (by default the 251
LibriSpeech speakers of ``/work/shared``, one 2-17 s file each; a source
shorter than its crop gives all of it), spread evenly over its speakers
and written as speaker folders (``<work>/data/<speaker>/<file>.flac``),
then ``make_shards`` of that folder (``<work>/shards``, ``--max-count``
utterances a shard). Both are reused by a later run with the same settings
(``<work>/data.json``, ``<work>/shards.json``); their sizes and the time
each took are printed.

Two readers decode every utterance to a float32 tensor, as training needs
it (whole file decoded, then the same random 3 s crop, padded batches of
``--batch-size``), through a torch ``DataLoader`` with 1 and 4 worker
processes (``--workers``):

* **raw files**: a map-style dataset reading each file with the package's
  loader (``speechbrain_unipet.utils.audio.load_audio``, what the recipe's
  ``audio_pipeline`` calls), in shuffled order: one file per utterance;
* **shards**: ``shard_dataset(shards, split_by_rank=False,
  shuffle_buffer=...)``, batched inside the pipeline.

Each reads the whole set (or its first ``--limit`` utterances, in its
shuffled order) per measurement; the printed counts check that every
utterance was read exactly once. The
readers run in turn within each round (which one goes first alternates), so
that both see the same machine load, and the table gives the median over
the rounds:

* **cold** page cache: before each cold measurement the files' pages are
  evicted, by ``echo 3 > /proc/sys/vm/drop_caches`` (root; also drops the
  cached directory entries and inodes) or, where that is not permitted, by
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` on every raw file and shard (pages
  only). The eviction is checked once before measuring (the share of the
  files' pages resident, by ``mincore``, and ``Cached:`` of
  ``/proc/meminfo``); the method is printed, or that neither works (then
  only warm figures). ``--tiny`` uses ``fadvise`` (``auto``), not to drop
  the whole machine's cache from a test;
* **warm**: every file is read once, then measured.

A bytes-only pass (no decoding, one process) over both forms, cold and
warm, shows what the storage alone allows. It prints a Markdown table
(reader, workers, cache, utt/s, CPU ms of all processes per utterance,
shards/raw) and the verdict against the targets: shards at least 3x the
raw-file rate on a cold cache, and never slower warm.

**Emulated slow storage** (``--throttle-iops``, ``--throttle-mbps``): the
benchmark moves itself, and so every DataLoader worker it starts, into a
cgroup whose block-I/O controller caps the reads of the disk holding the
work folder (cgroup v1 ``blkio.throttle.read_iops_device`` /
``read_bps_device``, or cgroup v2 ``io.max`` ``riops`` / ``rbps``; root
only), after the data is written. Cold reads then cost what they cost on
a capped volume (e.g. ``--throttle-iops 3000 --throttle-mbps 125``, the
baseline of an AWS EBS gp3 volume) or a disk that seeks, which a fast
local disk hides. The cap is checked (the I/O requests counted during a
cold read of sampled files, and their rate) and printed; where no cgroup
can be made, the benchmark stops with the reason. The cgroup is removed
at the end.

``--tiny``: 200 synthetic utterances (10 speakers) in a temporary folder,
1 and 2 workers, 25 utterances a shard, one round; for the smoke test.
"""

import argparse
import contextlib
import ctypes
import json
import os
import pathlib
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import soundfile as sf
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speechbrain_unipet.data.layouts import list_recordings  # noqa: E402
from speechbrain_unipet.data.recordings import AUDIO_EXTENSIONS  # noqa: E402
from speechbrain_unipet.data.shards import (  # noqa: E402
    make_shards,
    read_shards,
    shard_dataset,
)
from speechbrain_unipet.utils.audio import load_audio, load_numpy  # noqa: E402

SAMPLE_RATE = 16000
DEFAULT_SOURCE = "/work/shared/data/librispeech_train_clean_100_251spk/"
DEFAULT_WORK = pathlib.Path(tempfile.gettempdir()) / "sbu_data_loading_bench"
CROP_SECONDS = 3.0
#: Version of the generated data (bump when generation changes).
DATA_VERSION = 1


# ------------------------------------------------------------------ data
def tiny_source(folder, speakers=10, seconds=6.0, seed=0):
    """Synthetic recordings (harmonics in noise), one a speaker."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    for k in range(speakers):
        f0 = 100 + 15 * k
        voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        signal = 0.1 * voice * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        signal += 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"{9000 + k}-1-0000.flac", signal, SAMPLE_RATE)
    return folder


def _pcm(signal):
    return np.clip(np.round(signal * 32768.0), -32768, 32767).astype(np.int16)


def build_data(source, out, utterances, seed, low=2.0, high=4.0):
    """Writes ``utterances`` crops of the recordings of ``source`` as
    speaker folders under ``out``; returns (recordings read, bytes)."""
    files = sorted(
        p
        for p in pathlib.Path(source).iterdir()
        if p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        sys.exit(f"ERROR: no audio in {source}")
    audio = [(p.stem.split("-")[0], _pcm(load_numpy(p))) for p in files]
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(utterances):
        speaker, signal = audio[i % len(audio)]
        length = int(rng.integers(low * SAMPLE_RATE, high * SAMPLE_RATE + 1))
        length = min(length, signal.size)
        start = int(rng.integers(0, signal.size - length + 1))
        path = out / speaker / f"{speaker}-{i:06d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(
            path,
            signal[start : start + length],
            SAMPLE_RATE,
            format="FLAC",
            subtype="PCM_16",
        )
        total += path.stat().st_size
    return len(files), total


def _stamp(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare(work, source, utterances, seed, max_count):
    """The data and shard folders under ``work``, made or reused."""
    work.mkdir(parents=True, exist_ok=True)
    data, shards = work / "data", work / "shards"
    settings = {
        "version": DATA_VERSION,
        "source": os.path.abspath(source),
        "utterances": utterances,
        "seed": seed,
        "crop_seconds": [2.0, 4.0],
        "sample_rate": SAMPLE_RATE,
    }
    stamp = _stamp(work / "data.json")
    if stamp and stamp["settings"] == settings and data.is_dir():
        print(
            f"data: reused {data}: {utterances} files, "
            f"{stamp['bytes'] / 1e6:.0f} MB (written in {stamp['seconds']:.1f} "
            "s by an earlier run)",
            flush=True,
        )
    else:
        for stale in (work / "data.json", work / "shards.json"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)
        began = time.perf_counter()
        sources, size = build_data(source, data, utterances, seed)
        os.sync()
        seconds = time.perf_counter() - began
        stamp = {"settings": settings, "bytes": size, "seconds": seconds}
        (work / "data.json").write_text(json.dumps(stamp, indent=1))
        print(
            f"data: wrote {utterances} files of 2-4 s ({sources} source "
            f"recordings) to {data}: {size / 1e6:.0f} MB in {seconds:.1f} s",
            flush=True,
        )
    shard_settings = {"data": stamp["settings"], "max_count": max_count}
    done = _stamp(work / "shards.json")
    if (
        done
        and done["settings"] == shard_settings
        and (shards / "index.json").is_file()
    ):
        summary = done["summary"]
        how = "reused"
    else:
        (work / "shards.json").unlink(missing_ok=True)
        summary = make_shards(
            data,
            shards,
            data_format="speaker_folders",
            max_count=max_count,
            overwrite=True,
        )
        os.sync()
        (work / "shards.json").write_text(
            json.dumps({"settings": shard_settings, "summary": summary})
        )
        how = "wrote"
    print(
        f"shards: {how} {shards}: {summary['shards']} shards of at most "
        f"{max_count}, {summary['utterances']} utterances of "
        f"{summary['speakers']} speakers, {summary['hours']:.2f} h, "
        f"{summary['bytes'] / 1e6:.0f} MB, make_shards took "
        f"{summary['seconds']:.1f} s"
        + (" (an earlier run)" if how == "reused" else ""),
        flush=True,
    )
    return data, shards


# ------------------------------------------------------------ page cache
def fs_type(path):
    """Filesystem type of the mount holding ``path`` (/proc/mounts)."""
    path, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1]
                inside = path == mount or path.startswith(
                    mount.rstrip("/") + "/"
                )
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def meminfo_cached():
    """``Cached:`` of /proc/meminfo in bytes, or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Cached:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_ubyte),
    ]
    return libc


def page_map(path, libc=None):
    """Which pages of ``path`` are in the page cache: a bool array (one a
    page; ``mincore``), or None where that cannot be asked."""
    try:
        libc = libc or _libc()
    except (OSError, AttributeError):
        return None
    size = os.path.getsize(path)
    if not size:
        return np.zeros(0, bool)
    failed = ctypes.c_void_p(-1).value
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, failed):
            return None
        try:
            count = -(-size // os.sysconf("SC_PAGE_SIZE"))
            vec = (ctypes.c_ubyte * count)()
            if libc.mincore(addr, size, vec):
                return None
            return (np.frombuffer(vec, np.uint8) & 1).astype(bool)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def resident(paths):
    """Share of the pages of ``paths`` in the page cache (``mincore``), or
    None where that cannot be asked."""
    try:
        libc = _libc()
    except (OSError, AttributeError):
        return None
    pages = present = 0
    for path in paths:
        found = page_map(path, libc)
        if found is None:
            return None
        present += int(found.sum())
        pages += found.size
    return present / pages if pages else None


def code_pages():
    """``{path: [(offset, length)]}``: the resident runs of the files this
    process maps (Python, torch, libsndfile...). ``drop_caches`` evicts
    them too; reading them back keeps the cold measurements to the data's
    reads, not the program's (which on a capped disk cost seconds)."""
    paths = set()
    with contextlib.suppress(OSError), open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and os.path.isfile(parts[5]):
                paths.add(parts[5])
    page = os.sysconf("SC_PAGE_SIZE")
    runs = {}
    for path in sorted(paths):
        found = page_map(path)
        if found is None or not found.any():
            continue
        edges = np.flatnonzero(np.diff(np.r_[0, found.astype(np.int8), 0]))
        runs[path] = [
            (int(a) * page, int(b - a) * page)
            for a, b in zip(edges[::2], edges[1::2], strict=True)
        ]
    return runs


def read_runs(runs):
    """Reads the byte runs of ``code_pages`` back into the page cache."""
    for path, spans in runs.items():
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                for offset, length in spans:
                    os.pread(fd, length, offset)
            finally:
                os.close(fd)


def drop_caches():
    """``sync; echo 3 > /proc/sys/vm/drop_caches``; False if refused."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def fadvise(paths):
    """Evicts the (clean) pages of ``paths``; False if not available."""
    if not hasattr(os, "posix_fadvise"):
        return False
    os.sync()  # dirty pages cannot be dropped
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def read_bytes(paths):
    """Reads the files (to warm the cache, or to time the storage)."""
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def choose_cold(choice, work, probe_paths, all_paths):
    """``(evict, description)``: the eviction that works here, checked by
    warming ``probe_paths`` and evicting; evict is None when none works."""
    kind = fs_type(work)
    if kind in ("tmpfs", "ramfs"):
        return None, (
            f"not possible: {work} is on {kind} (memory), whose pages are "
            "the storage"
        )
    if choice == "none":
        return None, "not measured (--cold none)"
    program = code_pages() if choice in ("auto", "drop_caches") else {}
    candidates = {
        "drop_caches": (
            lambda: drop_caches() and (read_runs(program) or True),
            "echo 3 > /proc/sys/vm/drop_caches (pages, dentries and inodes "
            "of the whole machine; the program's own mapped files read back "
            f"after it: {sum(n for r in program.values() for _, n in r) / 1e6:.0f} MB)",
        ),
        "fadvise": (
            lambda: fadvise(all_paths),
            "posix_fadvise(POSIX_FADV_DONTNEED) on every raw file and shard "
            "(their pages; directory entries and inodes stay cached)",
        ),
    }
    order = {
        "auto": ["drop_caches", "fadvise"],
        "auto-fadvise": ["fadvise"],
        "drop_caches": ["drop_caches"],
        "fadvise": ["fadvise"],
    }[choice]
    refused = []
    for name in order:
        evict, what = candidates[name]
        read_bytes(probe_paths)
        before, cached_before = resident(probe_paths), meminfo_cached()
        if not evict():
            refused.append(f"{name}: not permitted")
            continue
        after, cached_after = resident(probe_paths), meminfo_cached()
        if after is None:
            # No mincore: time a re-read of the probe files instead.
            began = time.perf_counter()
            read_bytes(probe_paths)
            cold = time.perf_counter() - began
            began = time.perf_counter()
            read_bytes(probe_paths)
            warm = time.perf_counter() - began
            ok = cold > 2 * warm
            check = f"re-read {cold:.2f} s cold vs {warm:.2f} s warm"
        else:
            ok = after < 0.05
            check = (
                f"resident pages of {len(probe_paths)} sampled files "
                f"{100 * before:.1f} % -> {100 * after:.1f} % (mincore)"
            )
        if cached_before is not None and cached_after is not None:
            check += (
                f"; Cached: {cached_before / 1e6:.0f} -> "
                f"{cached_after / 1e6:.0f} MB (/proc/meminfo)"
            )
        if ok:
            return evict, f"{what}; checked: {check}"
        refused.append(f"{name}: ran but did not evict ({check})")
    return None, "not possible (" + "; ".join(refused) + ")"


# -------------------------------------------------------- slow storage
def block_device(path):
    """``"major:minor"`` of the whole disk holding ``path`` (a partition's
    parent), or None when the filesystem has no block device."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sysfs = pathlib.Path(f"/sys/dev/block/{major}:{minor}")
    if major == 0 or not sysfs.exists():
        return None
    if (sysfs / "partition").exists():
        return (sysfs.resolve().parent / "dev").read_text().strip()
    return f"{major}:{minor}"


class ReadThrottle:
    """Caps the reads of this process and its children from one disk with
    a cgroup (v1 ``blkio`` throttling, or v2 ``io.max``), until
    ``remove``.

    Arguments
    ---------
    device : str
        ``"major:minor"`` of a whole disk (``block_device``).
    iops : int
        Read requests a second (0: no cap).
    mbps : float
        Read megabytes (10^6 bytes) a second (0: no cap).
    """

    V1 = pathlib.Path("/sys/fs/cgroup/blkio")
    V2 = pathlib.Path("/sys/fs/cgroup")

    def __init__(self, device, iops, mbps):
        self.device, self.iops, self.mbps = device, int(iops), float(mbps)
        self.name = f"sbu_data_loading_{os.getpid()}"
        self.group = self.parent = None
        self._remove_stale()
        # ``timeout`` or a scheduler ends runs with SIGTERM: leave through
        # ``finally`` (and ``remove``) rather than keep the group.
        signal.signal(signal.SIGTERM, _terminated)
        if (self.V1 / "blkio.throttle.read_iops_device").exists():
            self._apply_v1()
        elif "io" in self._read(self.V2 / "cgroup.controllers").split():
            self._apply_v2()
        else:
            raise OSError(
                "no cgroup block-I/O controller here (neither cgroup v1 "
                "blkio nor cgroup v2 io)"
            )

    def _remove_stale(self):
        """Removes the empty groups of earlier runs that were killed."""
        for root in (self.V1, self.V2):
            for group in root.glob("sbu_data_loading_*"):
                if not self._read(group / "cgroup.procs").strip():
                    with contextlib.suppress(OSError):
                        group.rmdir()

    @staticmethod
    def _read(path):
        try:
            return path.read_text()
        except OSError:
            return ""

    def _move(self, group):
        """Moves this process into ``group`` (children forked later
        follow it)."""
        (group / "cgroup.procs").write_text(str(os.getpid()))

    def _apply(self, root, limits, how):
        """Makes the group under ``root``, writes ``limits`` ({file:
        text}) into it and joins it."""
        self.parent = root
        self.group = root / self.name
        self.group.mkdir()
        for name, text in limits.items():
            (self.group / name).write_text(text)
        self._move(self.group)
        self.how = how

    def _apply_v1(self):
        limits = {}
        if self.iops:
            limits["blkio.throttle.read_iops_device"] = (
                f"{self.device} {self.iops}"
            )
        if self.mbps:
            limits["blkio.throttle.read_bps_device"] = (
                f"{self.device} {int(self.mbps * 1e6)}"
            )
        self._apply(self.V1, limits, "cgroup v1 blkio.throttle.read_*_device")

    def _apply_v2(self):
        # A process may only sit in a leaf: a child group of the root.
        if "io" not in self._read(self.V2 / "cgroup.subtree_control"):
            (self.V2 / "cgroup.subtree_control").write_text("+io")
        caps = [f"riops={self.iops}"] if self.iops else []
        caps += [f"rbps={int(self.mbps * 1e6)}"] if self.mbps else []
        limits = {"io.max": f"{self.device} {' '.join(caps)}"}
        self._apply(self.V2, limits, "cgroup v2 io.max")

    def reads(self):
        """Read requests served to the group so far, or None."""
        name = (
            "blkio.throttle.io_serviced"
            if self.parent == self.V1
            else "io.stat"
        )
        text = self._read(self.group / name)
        if self.parent == self.V1:
            for line in text.splitlines():
                parts = line.split()
                if parts[:2] == [self.device, "Read"]:
                    return int(parts[2])
            return None
        for line in text.splitlines():
            if line.startswith(self.device + " "):
                fields = dict(f.split("=") for f in line.split()[1:])
                return int(fields.get("rios", 0))
        return None

    def unthrottled(self, evict):
        """``evict`` run outside the group: the reads that restore the
        program's pages are not the data's, and are not capped."""

        def run():
            self._move(self.parent)
            try:
                return evict()
            finally:
                self._move(self.group)

        return run

    def describe(self):
        caps = [f"{self.iops:,} read IOPS"] if self.iops else []
        caps += [f"{self.mbps:g} MB/s"] if self.mbps else []
        return f"{' and '.join(caps)} on disk {self.device} ({self.how})"

    def remove(self):
        """Moves this process back to the parent group; removes the
        group."""
        if self.group is None:
            return
        with contextlib.suppress(OSError):
            self._move(self.parent)
        # Its DataLoader workers may take a moment to leave it.
        for _ in range(50):
            try:
                self.group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        self.group = None


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def throttle(args, work, probe, evict):
    """``(ReadThrottle, evict)``: the cap the options ask for (None
    without them), checked on a cold read of ``probe``, and ``evict`` run
    outside it; exits with the reason when the machine does not allow
    it."""
    if not (args.throttle_iops or args.throttle_mbps):
        return None, evict
    device = block_device(work)
    if device is None:
        sys.exit(
            f"ERROR: --throttle-*: {work} is on no block device "
            f"({fs_type(work)}); give --work a folder on a disk"
        )
    try:
        limit = ReadThrottle(device, args.throttle_iops, args.throttle_mbps)
    except OSError as error:
        sys.exit(
            f"ERROR: --throttle-*: cannot cap reads here ({error}); it needs "
            "root and a cgroup block-I/O controller"
        )
    check = "not checked (no cold cache: see below)"
    if evict is not None:
        evict = limit.unthrottled(evict)
        evict()
        before = limit.reads()
        began = time.perf_counter()
        read_bytes(probe)
        seconds = time.perf_counter() - began
        after = limit.reads()
        if before is not None and after is not None:
            check = (
                f"{len(probe)} sampled files read cold in {seconds:.2f} s: "
                f"{after - before:,} read requests, "
                f"{(after - before) / seconds:,.0f} a second"
            )
    print(
        f"slow storage: reads capped at {limit.describe()}; checked: {check}",
        flush=True,
    )
    return limit, evict


# --------------------------------------------------------------- readers
def crop(example):
    """A random ``CROP_SECONDS`` crop of the decoded utterance (identical
    for both readers)."""
    wav = example["wav"]
    size = int(CROP_SECONDS * SAMPLE_RATE)
    if wav.numel() > size:
        start = int(torch.randint(wav.numel() - size + 1, (1,)))
        wav = wav[start : start + size]
    return {"id": example["id"], "wav": wav}


def collate(examples):
    """Padded batch: ids, wavs [B, T], lengths [B]."""
    wavs = [e["wav"] for e in examples]
    return (
        [e["id"] for e in examples],
        torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True),
        torch.tensor([w.numel() for w in wavs]),
    )


class RawFiles(torch.utils.data.Dataset):
    """One audio file per utterance, decoded as the recipe's pipeline
    does."""

    def __init__(self, recordings):
        self.recordings = recordings

    def __len__(self):
        return len(self.recordings)

    def __getitem__(self, index):
        rec = self.recordings[index]
        return crop({"id": rec.uid, "wav": load_audio(rec.path, SAMPLE_RATE)})


def raw_loader(recordings, workers, batch_size, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        RawFiles(recordings),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
    )


def shard_loader(folder, workers, batch_size, buffer, seed):
    dataset = (
        shard_dataset(
            folder, split_by_rank=False, shuffle_buffer=buffer, seed=seed
        )
        .map(crop)
        .batched(batch_size, collation_fn=collate, partial=True)
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers
    )


def cpu_seconds():
    """CPU time (user + system) of this process and its waited-for
    children (the DataLoader workers that have ended)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed_read(loader, limit):
    """(ids read, seconds): iterates ``loader`` until its end or
    ``limit`` utterances."""
    ids = []
    began = time.perf_counter()
    for batch_ids, wavs, _ in loader:
        assert wavs.dtype == torch.float32 and wavs.shape[0] == len(batch_ids)
        ids.extend(batch_ids)
        if limit and len(ids) >= limit:
            break
    seconds = time.perf_counter() - began
    return ids[:limit] if limit else ids, seconds


# ------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--utterances", type=int, default=20000)
    parser.add_argument("--work", default=None)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--max-count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument(
        "--cold",
        default="auto",
        choices=["auto", "drop_caches", "fadvise", "none"],
    )
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument(
        "--throttle-iops",
        type=int,
        default=0,
        help="cap the reads at N requests a second (emulated slow storage)",
    )
    parser.add_argument(
        "--throttle-mbps",
        type=float,
        default=0,
        help="cap the reads at M megabytes a second",
    )
    args = parser.parse_args(argv)
    temporary = None
    if args.tiny:
        args.utterances, args.rounds, args.max_count = 200, 1, 25
        if args.workers == "1,4":
            args.workers = "1,2"
        if args.cold == "auto":
            args.cold = "auto-fadvise"
        if args.work is None:
            temporary = tempfile.TemporaryDirectory()
            args.work = temporary.name
        args.source = str(tiny_source(pathlib.Path(args.work) / "source"))
    work = pathlib.Path(args.work or DEFAULT_WORK)
    workers = [int(w) for w in args.workers.split(",")]
    # More workers than cores is measured on purpose (and said so below).
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    try:
        run(args, work, workers)
    finally:
        if temporary is not None:
            temporary.cleanup()


def run(args, work, workers):
    cores = os.cpu_count() or 1
    print(
        f"{cores} CPU cores, load average {os.getloadavg()[0]:.2f}, torch "
        f"{torch.__version__}, work folder {work} ({fs_type(work)})",
        flush=True,
    )
    data, shards = prepare(
        work, args.source, args.utterances, args.seed, args.max_count
    )
    recordings = list_recordings(data, "speaker_folders")
    index = read_shards(shards)
    shard_paths = [str(shards / s["name"]) for s in index["shards"]]
    raw_paths = [r.path for r in recordings]
    if index["utterances"] != len(recordings):
        sys.exit(
            f"ERROR: {index['utterances']} utterances in the shards, "
            f"{len(recordings)} raw files"
        )
    limit = min(args.limit, len(recordings)) if args.limit else 0
    probe = random.Random(0).sample(raw_paths, min(500, len(raw_paths)))
    evict, how = choose_cold(
        args.cold, work, probe + shard_paths, raw_paths + shard_paths
    )
    print(f"cold cache: {how}", flush=True)
    limit_reads, evict = throttle(args, work, probe[:100], evict)
    try:
        measure_all(
            args,
            workers,
            recordings,
            shards,
            index,
            (raw_paths, shard_paths, probe),
            limit,
            evict,
            how,
            limit_reads.describe() if limit_reads else "",
        )
    finally:
        if limit_reads is not None:
            limit_reads.remove()


def measure_all(
    args,
    workers,
    recordings,
    shards,
    index,
    paths,
    limit,
    evict,
    how,
    storage_cap,
):
    """The bytes-only pass, the rounds of both readers, the table and
    the verdict; ``paths``: (raw files, shards, the sampled raw files whose
    residence is checked)."""
    cores = os.cpu_count() or 1
    raw_paths, shard_paths, probe = paths
    expected = {r.uid for r in recordings}
    total = limit or len(expected)
    caches = ["cold", "warm"] if evict else ["warm"]

    # The storage alone: the bytes of ``total`` utterances (raw files in a
    # shuffled order; the first shards holding as many), one process.
    order = random.Random(args.seed).sample(raw_paths, total)
    needed, covered = [], 0
    for path, shard in zip(shard_paths, index["shards"], strict=True):
        if covered >= total:
            break
        needed.append(path)
        covered += shard["utterances"]
    print("\nbytes only (no decoding), 1 process:", flush=True)
    storage = {}
    for cache in caches:
        for name, paths, count in (
            ("raw files", order, total),
            ("shards", needed, covered),
        ):
            if cache == "cold":
                evict()
            else:
                read_bytes(paths)
            size = sum(os.path.getsize(p) for p in paths)
            began = time.perf_counter()
            read_bytes(paths)
            seconds = time.perf_counter() - began
            storage[(name, cache)] = count / seconds
            print(
                f"  {name}, {cache}: {count / seconds:,.0f} utt/s, "
                f"{size / 1e6 / seconds:,.0f} MB/s ({size / 1e6:.0f} MB in "
                f"{seconds:.2f} s)",
                flush=True,
            )

    def measure(reader, w, cache, round_):
        seed = args.seed + round_
        if reader == "raw files":
            # All files, shuffled, read up to the limit as the shards are:
            # both loaders' workers then decode batches beyond it alike.
            loader = raw_loader(recordings, w, args.batch_size, seed)
        else:
            loader = shard_loader(
                shards, w, args.batch_size, args.shuffle_buffer, seed
            )
        began = cpu_seconds()
        ids, seconds = timed_read(loader, limit)
        del loader  # its workers end (and count as waited-for children)
        cpu = 1e3 * (cpu_seconds() - began) / len(ids)
        distinct = set(ids)
        stray = len(distinct - expected)
        rate = len(ids) / seconds
        print(
            f"  round {round_ + 1}: {reader}, {w} worker(s), {cache}: "
            f"{len(ids)} read ({len(distinct)} distinct of {total}, {stray} "
            f"unknown) in {seconds:.1f} s = {rate:,.0f} utt/s, CPU "
            f"{cpu:.2f} ms/utt",
            flush=True,
        )
        if len(ids) != total or len(distinct) != total or stray:
            sys.exit(f"ERROR: {reader} did not read every utterance once")
        return rate, cpu

    print(
        f"\nreading {total} utterances, batches of {args.batch_size}, "
        f"shuffle buffer {args.shuffle_buffer}, {args.rounds} round(s):",
        flush=True,
    )
    rates, costs = {}, {}
    for round_ in range(args.rounds):
        readers = ["raw files", "shards"]
        if round_ % 2:
            readers.reverse()
        for cache in caches:
            if cache == "warm":
                read_bytes(raw_paths + shard_paths)
                share = resident(probe + shard_paths)
                if share is not None:
                    print(
                        f"  warmed: {100 * share:.1f} % of the sampled "
                        "files' pages resident",
                        flush=True,
                    )
            for w in workers:
                for reader in readers:
                    if cache == "cold":
                        evict()
                    rate, cpu = measure(reader, w, cache, round_)
                    rates.setdefault((reader, w, cache), []).append(rate)
                    costs.setdefault((reader, w, cache), []).append(cpu)

    median = {k: statistics.median(v) for k, v in rates.items()}
    cost = {k: statistics.median(v) for k, v in costs.items()}
    print(
        f"\nutterances per second, {total} utterances of 2-4 s, median of "
        f"{args.rounds} round(s), {cores} CPU cores"
        + (f", reads capped at {storage_cap}" if storage_cap else "")
        + ":\n"
    )
    print("| reader | workers | cache | utt/s | CPU ms/utt | shards/raw |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for cache in caches:
        for w in workers:
            raw = median[("raw files", w, cache)]
            shard = median[("shards", w, cache)]
            ratios[(w, cache)] = shard / raw
            print(
                f"| raw files | {w} | {cache} | {raw:,.0f} | "
                f"{cost[('raw files', w, cache)]:.2f} | |"
            )
            print(
                f"| shards | {w} | {cache} | {shard:,.0f} | "
                f"{cost[('shards', w, cache)]:.2f} | {shard / raw:.2f}x |"
            )
    print(
        "\nper round (utt/s): "
        + "; ".join(
            f"{r} {w} {c}: " + ", ".join(f"{x:,.0f}" for x in v)
            for (r, w, c), v in rates.items()
        )
    )
    # CPU time (all processes) is what the load of a shared machine
    # disturbs least: the cost of each reader's own work.
    warm = [
        cost[("shards", w, "warm")] / cost[("raw files", w, "warm")]
        for w in workers
    ]
    print(
        "CPU time per utterance, warm, shards/raw files: "
        + ", ".join(
            f"{r:.2f}x with {w} worker(s)"
            for w, r in zip(workers, warm, strict=True)
        )
    )
    verdict(rates, ratios, median, storage, caches, workers, how, cores)


def verdict(rates, ratios, median, storage, caches, workers, how, cores):
    # Round-to-round spread of the rates: the noise of a shared machine.
    noise = max(max(v) / min(v) - 1 for v in rates.values())
    print()
    if "cold" in caches:
        cold = [ratios[(w, "cold")] for w in workers]
        met = min(cold) >= 3
        print(
            "target shards >= 3x raw files, cold cache: "
            + ("MET" if met else "MISSED")
            + " ("
            + ", ".join(
                f"{r:.2f}x with {w} worker(s)"
                for w, r in zip(workers, cold, strict=True)
            )
            + ")"
        )
    else:
        print(
            f"target shards >= 3x raw files, cold cache: NOT MEASURED ({how})"
        )
    warm = [ratios[(w, "warm")] for w in workers]
    print(
        "target shards never slower, warm cache (>= 1x): "
        + ("MET" if min(warm) >= 1 else "MISSED")
        + " ("
        + ", ".join(
            f"{r:.2f}x with {w} worker(s)"
            for w, r in zip(workers, warm, strict=True)
        )
        + ")"
    )
    if len(next(iter(rates.values()))) > 1:
        print(
            f"noise: the rounds of one reader differ by up to "
            f"{100 * noise:.0f} % (machine load)"
        )
    if "cold" in caches:
        # The cold penalty of raw files bounds what shards can win back.
        decode = 1e3 / median[("raw files", workers[0], "warm")]
        io = 1e3 / storage[("raw files", "cold")]
        limited = (
            "decoding"
            if 1 + io / decode < 3
            else "the storage (cold reads of small files)"
        )
        print(
            f"what limits it: {limited}. One worker decodes an utterance in "
            f"{decode:.2f} ms (raw files, warm, {workers[0]} worker(s)); "
            f"this storage reads a small file cold in {io:.2f} ms (bytes "
            f"only, one process). Shards remove at most the file reads: "
            f"about {1 + io / decode:.2f}x over raw files cold, where 3x "
            f"needs cold reads of at least {2 * decode:.1f} ms a file "
            "(network storage, disks that seek)."
        )
        for w in workers:
            raw_cold = median[("raw files", w, "cold")]
            raw_warm = median[("raw files", w, "warm")]
            shard_warm = median[("shards", w, "warm")]
            print(
                f"{w} worker(s): raw files run at {raw_cold / raw_warm:.2f} "
                f"of their warm rate when cold; even shards read at their "
                f"warm rate would be {shard_warm / raw_cold:.2f}x raw cold"
            )
    if max(workers) > cores:
        print(
            f"{max(workers)} workers share {cores} CPU cores: decoding is "
            "CPU-bound, so more workers than cores add little."
        )


if __name__ == "__main__":
    main()
