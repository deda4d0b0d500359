"""The one extraction engine: audio -> an embedding store on disk.

Verification, AS-norm cohorts, calibration and the ``speechbrain-unipet``
command line all embed through ``extract``:

* **length-bucketed batches**: utterances sorted by duration (longest
  first, so that a memory error shows at once), batched up to
  ``batch_size`` utterances and ``max_batch_seconds`` of padded audio.
  The embedding path is exact for padded batches (the PET encoder masks
  padding; ECAPA-TDNN runs per utterance in eval mode), so a batch gives
  what one-by-one extraction gives (to 1e-4);
* **DataLoader workers** decode and resample the audio;
* **sharded** across ``torchrun`` ranks: batch ``i`` goes to rank
  ``i % world_size``; each rank writes its own part files, the main
  process assembles the store;
* **resumable**: parts are written every ``flush_every`` batches into
  ``<store>.parts/``, each row keyed by its utterance (id, file, region);
  a killed or failed run started again with the same model and settings
  skips the utterances already embedded, even with another utterance list
  (a trial list without a bad file). Parts of other settings (another
  model, crops, condition...) are never mixed in: they are moved aside to
  ``<store>.parts.stale-<time>/`` with a warning, and the run starts over.
  A run stopped by an error (a damaged file) first writes what it
  embedded, so nothing computed is lost, and removes a part folder that
  it created but holds nothing;
* optional **test-time crops**: ``num_crops`` windows of ``crop_seconds``
  spread evenly over the utterance (first one at the start, last one at
  the end), embedded and averaged, as ESPnet's and WeSpeaker's
  evaluation crops; shorter utterances are embedded whole;
* an optional ``transform(wav, sample_rate, key)`` degrades the audio
  (``speechbrain_unipet.conditions``);
* the UniPET gate values are averaged over the utterances and kept in the
  store's ``meta["gate_means"]`` (branch -> per-layer means).

Authors
 * speechbrain-unipet contributors 2026
"""

import hashlib
import json
import os
import pathlib
import shutil
import time

import numpy as np
import torch
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_unipet.data.shards import read_shards, shard_dataset
from speechbrain_unipet.lobes.embedding import (
    CHUNK_OVERLAP_SECONDS,
    MAX_CHUNK_SECONDS,
    InvalidAudioError,
    speaker_embeddings,
)
from speechbrain_unipet.scoring.store import EmbeddingStore
from speechbrain_unipet.utils.audio import audio_info, load_audio
from speechbrain_unipet.utils.errors import UserError

logger = get_logger(__name__)


#: Settings file of a store's part folder (what a resumed run must match).
SETTINGS_FILE = "settings.json"


class ExtractionError(UserError, ValueError):
    """Input the extraction cannot use, with the file and the fix."""


def crop_starts(length, crop, num_crops):
    """Start samples of ``num_crops`` windows of ``crop`` samples spread
    evenly over ``length`` samples (ESPnet's evaluation crops).

    Arguments
    ---------
    length : int
        Samples of the utterance.
    crop : int
        Window length.
    num_crops : int
        Windows wanted.

    Returns
    -------
    list of int
        ``[0]`` when the utterance is not longer than ``crop``.

    Example
    -------
    >>> crop_starts(100, 40, 3), crop_starts(30, 40, 3)
    ([0, 30, 60], [0])
    """
    if length <= crop or num_crops <= 1:
        return [0]
    return np.linspace(0, length - crop, num_crops).round().astype(int).tolist()


def length_batches(durations, batch_size=32, max_batch_seconds=240.0):
    """Index batches of similar lengths: longest first, at most
    ``batch_size`` utterances and ``max_batch_seconds`` of padded audio
    (utterances x the longest) each.

    Arguments
    ---------
    durations : list of float
        Seconds per utterance.
    batch_size : int
        Most utterances per batch.
    max_batch_seconds : float
        Most padded seconds per batch (a longer utterance is alone).

    Returns
    -------
    list of list of int

    Example
    -------
    >>> length_batches([1.0, 5.0, 2.0, 4.0], batch_size=2)
    [[1, 3], [2, 0]]
    >>> length_batches([1.0, 5.0, 2.0, 4.0], max_batch_seconds=9)
    [[1], [3, 2], [0]]
    """
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    batches, current = [], []
    for i in order:
        longest = durations[current[0]] if current else durations[i]
        if current and (
            len(current) >= batch_size
            or longest * (len(current) + 1) > max_batch_seconds
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class _AudioDataset(torch.utils.data.Dataset):
    """Decoded (and optionally degraded) audio of utterances, by index."""

    def __init__(self, utterances, sample_rate, transform):
        self.utterances = utterances
        self.sample_rate = sample_rate
        self.transform = transform

    def __len__(self):
        return len(self.utterances)

    def __getitem__(self, index):
        utt = self.utterances[index]
        wav = load_audio(utt.path, self.sample_rate, utt.start, utt.stop)
        if self.transform is not None:
            wav = self.transform(wav, self.sample_rate, utt.id)
        return index, wav


class _ShardAudio(torch.utils.data.IterableDataset):
    """The audio of ``utterances`` (those not ``done``) read from the
    shards of ``folder``: each rank its shards, each DataLoader worker its
    part of them, in the shards' order (no random access into a shard)."""

    def __init__(self, folder, utterances, done, sample_rate, transform):
        self.folder, self.done = folder, set(done)
        self.index = {u.id: k for k, u in enumerate(utterances)}
        self.sample_rate, self.transform = sample_rate, transform
        rate = read_shards(folder)["options"]["sample_rate"]
        if rate != sample_rate:
            raise ExtractionError(
                f"The shards of '{folder}' are at {rate} Hz, the model reads "
                f"{sample_rate} Hz: write them again at that rate"
            )

    def __iter__(self):
        for example in shard_dataset(
            self.folder, split_by_rank=_distributed()[1] > 1
        ):
            k = self.index.get(example["id"])
            if k is None or example["id"] in self.done:
                continue
            wav = example["wav"]
            if self.transform is not None:
                wav = self.transform(wav, self.sample_rate, example["id"])
            yield k, wav


def _collate(items):
    """(indices, padded waveforms [B, S], relative lengths [B])."""
    indices = [i for i, _ in items]
    lengths = [w.shape[0] for _, w in items]
    longest = max(lengths)
    wavs = torch.zeros(len(items), longest)
    for row, (_, w) in enumerate(items):
        wavs[row, : w.shape[0]] = w
    return indices, wavs, torch.tensor(lengths, dtype=torch.float) / longest


def _distributed():
    """(rank, world size) of a ``torchrun`` launch, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _durations(utterances, sample_rate):
    """Seconds per utterance: given ones, else from the file headers."""
    out = []
    for utt in utterances:
        if utt.duration is None:
            info = audio_info(utt.path)
            stop = info.frames if utt.stop is None else utt.stop
            utt.duration = max(stop - utt.start, 0) / info.sample_rate
        out.append(float(utt.duration))
    return out


def model_fingerprint(modules):
    """A digest of the weights that shape the embeddings: the encoder's
    trained (PET) tensors, the normaliser's and the back-end's state. A
    store made by other weights (a run trained further, another
    checkpoint average) is then never reused nor resumed into.

    Arguments
    ---------
    modules : tuple
        ``(encoder, normalizer, embedding_model)``.

    Returns
    -------
    str

    Example
    -------
    >>> lin = torch.nn.Linear(2, 2)
    >>> a = model_fingerprint((None, None, lin))
    >>> with torch.no_grad():
    ...     _ = lin.weight.add_(1)
    >>> a == model_fingerprint((None, None, lin))
    False
    """
    digest = hashlib.sha1()
    for module in modules:
        module = getattr(module, "module", module)  # DDP
        if module is None:
            continue
        state = (
            module.pet_state_dict()
            if hasattr(module, "pet_state_dict")
            else module.state_dict()
        )
        for name, value in sorted(state.items()):
            digest.update(name.encode())
            if torch.is_tensor(value):
                value = value.detach().cpu().reshape(-1).contiguous()
                digest.update(value.view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def _settings_digest(settings):
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def parts_folder(store_folder):
    """Where an extraction into ``store_folder`` keeps its resumable parts.

    Arguments
    ---------
    store_folder : str or pathlib.Path

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> parts_folder("out/test").as_posix()
    'out/test.parts'
    """
    store_folder = pathlib.Path(store_folder)
    return store_folder.with_name(store_folder.name + ".parts")


def _utterance_key(utt):
    """What a part row must match to be reused for ``utt``."""
    return _settings_digest([utt.id, utt.path, utt.start, utt.stop])


def _set_aside(parts):
    """Renames ``parts`` to ``<name>.stale-<time>`` (never over another)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stale = parts.with_name(f"{parts.name}.stale-{stamp}")
    n = 1
    while stale.exists():
        stale = parts.with_name(f"{parts.name}.stale-{stamp}-{n}")
        n += 1
    os.replace(parts, stale)
    return stale


def _prepare_parts(parts, settings, store_folder):
    """Creates the part folder, or checks that its parts were made with
    these settings (a resumed run must embed the same way). Parts of other
    settings are moved aside (logged), never mixed in nor refused.

    Returns
    -------
    created : bool
        Whether this call created the folder.
    same_list : bool
        Whether the parts were made for the same utterance list (parts
        written before rows were keyed are only reused then).
    """
    settings = json.loads(json.dumps(settings, default=str))
    saved = parts / SETTINGS_FILE
    if parts.is_dir():
        try:
            previous = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        has_parts = any(parts.glob("part-*.npz"))
        if not has_parts:
            # Killed or failed before its first part: nothing to keep.
            shutil.rmtree(parts)
        elif previous is None:
            stale = _set_aside(parts)
            logger.warning(
                "%s held parts of an extraction into %s without readable "
                "settings: moved them to %s and started over (delete it if "
                "you do not need it)",
                parts,
                store_folder,
                stale,
            )
        else:
            changed = sorted(
                k
                for k in set(previous) | set(settings)
                if k != "utterances" and previous.get(k) != settings.get(k)
            )
            if not changed:
                return False, previous.get("utterances") == settings.get(
                    "utterances"
                )
            stale = _set_aside(parts)
            logger.warning(
                "%s held the parts of an interrupted extraction into %s with "
                "other settings (%s): moved them to %s and started over "
                "(delete it, or rename it back to resume with those "
                "settings)",
                parts,
                store_folder,
                ", ".join(changed),
                stale,
            )
    parts.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2), "utf-8")
    os.replace(tmp, saved)
    return True, True


def _usable_parts(parts, keys, same_list):
    """Yields ``(data, ids, rows)`` per part file: ``rows`` are those of an
    utterance in ``keys`` (id -> key) embedded from the same file and
    region. Parts without keys (older runs) count only for the same list.
    """
    for part in sorted(parts.glob("part-*.npz")):
        with np.load(part) as data:
            ids = data["ids"].tolist()
            if "keys" in data.files:
                part_keys = data["keys"].tolist()
            elif same_list:
                part_keys = [keys.get(i) for i in ids]
            else:
                continue
            rows = [
                k
                for k, (uid, key) in enumerate(zip(ids, part_keys, strict=True))
                if uid in keys and keys[uid] == key
            ]
            yield data, ids, rows


def _done_ids(parts, keys, same_list=True):
    done = set()
    for _, ids, rows in _usable_parts(parts, keys, same_list):
        done.update(ids[k] for k in rows)
    return done


def _write_part(parts, rank, seq, keys, ids, embeddings, durations, gates):
    """One part file, written whole then renamed (a killed run leaves only
    whole parts)."""
    final = parts / f"part-r{rank:03d}-{seq:06d}.npz"
    tmp = parts / f".tmp-r{rank:03d}-{seq:06d}.npz"
    gates = {f"gate__{k}": np.stack(v) for k, v in gates.items()}
    with open(tmp, "wb") as f:
        np.savez(
            f,
            ids=np.array(ids, dtype=str),
            keys=np.array([keys[i] for i in ids], dtype=str),
            embeddings=np.stack(embeddings).astype(np.float32),
            durations=np.array(durations, dtype=np.float32),
            **gates,
        )
    os.replace(tmp, final)


def _assemble(parts, utterances, meta, keys, same_list=True):
    """The store of every usable part row, rows in the order of
    ``utterances``."""
    rows, gates = {}, {}
    for data, part_ids, use in _usable_parts(parts, keys, same_list):
        embeddings, durations = data["embeddings"], data["durations"]
        for k in use:
            rows[part_ids[k]] = (embeddings[k], durations[k])
        for key in data.files:
            if key.startswith("gate__"):
                # Per utterance: one re-embedded after a resume counts
                # once.
                per_utt = gates.setdefault(key[len("gate__") :], {})
                values = data[key]
                per_utt.update((part_ids[k], values[k]) for k in use)
    ids = [u.id for u in utterances]
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ExtractionError(
            f"{len(missing)} utterance(s) have no embedding in {parts}, e.g. "
            f"{missing[:3]} (a rank stopped early?): run the extraction again "
            "to finish it"
        )
    if gates:
        meta = dict(
            meta,
            gate_means={
                k: np.mean([v[i] for i in ids], axis=0).astype(float).tolist()
                for k, v in sorted(gates.items())
            },
        )
    return EmbeddingStore(
        ids,
        np.stack([rows[i][0] for i in ids]),
        np.array([rows[i][1] for i in ids], dtype=np.float32),
        meta,
    )


@torch.no_grad()
def _embed_batch(modules, wavs, lens, crops, chunking, sample_rate):
    """Embeddings [B, E] and gate values {branch: [B, ...]} of a batch,
    with the test-time crops averaged."""
    encoder, normalizer, model = modules
    if crops is None:
        emb, gates = speaker_embeddings(
            encoder,
            normalizer,
            model,
            wavs,
            lens,
            sample_rate=sample_rate,
            **chunking,
        )
        return emb[:, 0], gates
    num_crops, crop_seconds = crops
    crop = int(round(crop_seconds * sample_rate))
    lengths = torch.round(lens * wavs.shape[1]).long().tolist()
    embeddings, gates = [], {}
    for row, length in enumerate(lengths):
        starts = crop_starts(length, crop, num_crops)
        width = min(crop, length)
        windows = torch.stack([wavs[row, s : s + width] for s in starts])
        emb, row_gates = speaker_embeddings(
            encoder,
            normalizer,
            model,
            windows,
            sample_rate=sample_rate,
            **chunking,
        )
        embeddings.append(emb[:, 0].mean(0))
        for key, value in row_gates.items():
            gates.setdefault(key, []).append(value.mean(0))
    return torch.stack(embeddings), {
        k: torch.stack(v) for k, v in gates.items()
    }


def extract(
    modules,
    utterances,
    store_folder,
    sample_rate=16000,
    batch_size=32,
    max_batch_seconds=240.0,
    num_workers=0,
    num_crops=0,
    crop_seconds=8.0,
    transform=None,
    max_chunk_seconds=MAX_CHUNK_SECONDS,
    chunk_overlap_seconds=CHUNK_OVERLAP_SECONDS,
    flush_every=16,
    shards=None,
    model_id=None,
    progress=True,
):
    """Embeds utterances into an embedding store (see the module docstring).

    Arguments
    ---------
    modules : tuple
        ``(encoder, normalizer, embedding_model)`` in eval mode, on the
        device to embed on (``model_modules`` gives them).
    utterances : list of Utterance
        What to embed (ids unique).
    store_folder : str or pathlib.Path
        The store to write (``speechbrain_unipet.scoring.store.EmbeddingStore``).
        If it exists with the same settings it is returned as it is.
    sample_rate : int
        The model's rate; files are resampled to it.
    batch_size : int
        Most utterances per batch.
    max_batch_seconds : float
        Most padded audio per batch, in seconds.
    num_workers : int
        DataLoader processes decoding audio (0: in this process).
    num_crops : int
        0: whole utterances; N: N crops of ``crop_seconds``, averaged.
    crop_seconds : float
        Length of a test-time crop.
    transform : callable or None
        ``transform(wav, sample_rate, id) -> wav``, e.g. a
        ``speechbrain_unipet.conditions`` condition.
    max_chunk_seconds : float or None
        Longer utterances are embedded in averaged windows (see
        ``speaker_embeddings``).
    chunk_overlap_seconds : float
        Overlap of those windows.
    flush_every : int
        Batches between part files (what a killed run may lose).
    shards : str or pathlib.Path, optional
        A shard folder (``make_shards``) holding the audio of
        ``utterances`` (``utterances_from_shards``): read in the shards'
        order, each rank its shards, in batches of ``batch_size`` as they
        come (no length bucketing).
    model_id : str or None
        Names the model in the settings a resumed run must match (e.g. the
        model folder); the weights' digest (``model_fingerprint``) is
        checked besides.
    progress : bool
        Show a progress bar (main process).

    Returns
    -------
    EmbeddingStore
        On every rank (non-main ranks wait for the main one to write it).

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> import soundfile
    >>> root = getfixture("tmp_path")
    >>> enc = PETEncoder(tiny_ssl_folder(root, "wavlm"), "lora").eval()
    >>> norm = InputNormalization(norm_type="sentence", std_norm=False)
    >>> ecapa = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=4).eval()
    >>> (root / "audio").mkdir()
    >>> for name, n in (("a", 3000), ("b", 5000)):
    ...     soundfile.write(
    ...         root / "audio" / f"{name}.wav", np.random.randn(n) * 0.1, 16000
    ...     )
    >>> from speechbrain_unipet.evaluation.utterances import (
    ...     utterances_from_folder,
    ... )
    >>> utts = utterances_from_folder(root / "audio")
    >>> store = extract(
    ...     (enc, norm, ecapa), utts, root / "store", progress=False
    ... )
    >>> store.ids, store.embeddings.shape
    (['a', 'b'], (2, 4))
    """
    store_folder = pathlib.Path(store_folder)
    ids = [u.id for u in utterances]
    if not ids:
        raise ExtractionError(f"Nothing to embed into {store_folder}")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ExtractionError(f"The utterance id {dup!r} is listed twice")
    crops = (int(num_crops), float(crop_seconds)) if num_crops else None
    chunking = {
        "max_chunk_seconds": max_chunk_seconds,
        "chunk_overlap_seconds": chunk_overlap_seconds,
    }
    settings = {
        "model": model_id,
        "weights": model_fingerprint(modules),
        "utterances": _settings_digest(
            [(u.id, u.path, u.start, u.stop) for u in utterances]
        ),
        # A condition's signature names its noise / RIR source and seed
        # too: a store degraded another way must not be reused.
        "transform": None
        if transform is None
        else getattr(
            transform,
            "signature",
            getattr(transform, "name", getattr(transform, "__qualname__", "")),
        ),
        "crops": list(crops) if crops else None,
        "sample_rate": sample_rate,
        **chunking,
    }
    meta = dict(settings, num_utterances=len(ids))
    if (store_folder / "meta.json").is_file():
        store = EmbeddingStore.load(store_folder)
        same = {k: store.meta.get(k) for k in settings} == json.loads(
            json.dumps(settings, default=str)
        )
        if same:
            logger.info("Reusing the embeddings of %s", store_folder)
            return store
        if _distributed()[0] == 0:
            logger.warning(
                "Replacing %s: it was extracted with other settings",
                store_folder,
            )
    rank, world = _distributed()
    parts = parts_folder(store_folder)
    keys = {u.id: _utterance_key(u) for u in utterances}
    created = False
    if rank == 0:
        created, _ = _prepare_parts(parts, settings, store_folder)
    _barrier()
    saved = json.loads((parts / SETTINGS_FILE).read_text(encoding="utf-8"))
    same_list = saved.get("utterances") == settings["utterances"]
    done = _done_ids(parts, keys, same_list)
    if done and rank == 0:
        logger.info(
            "Resuming %s: %d of %d utterances already embedded",
            store_folder,
            len(done),
            len(ids),
        )
    durations = _durations(utterances, sample_rate)
    batches = length_batches(durations, batch_size, max_batch_seconds)
    mine = [
        b
        for k, b in enumerate(batches)
        if k % world == rank and any(ids[i] not in done for i in b)
    ]
    if shards is None:
        loader = torch.utils.data.DataLoader(
            _AudioDataset(utterances, sample_rate, transform),
            batch_sampler=mine,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        total = sum(len(b) for b in mine)
    else:
        loader = torch.utils.data.DataLoader(
            _ShardAudio(shards, utterances, done, sample_rate, transform),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        total = (len(ids) - len(done)) // world
    device = next(modules[0].parameters()).device
    seq = len(list(parts.glob(f"part-r{rank:03d}-*.npz")))
    pending = ([], [], [], {})
    bar = tqdm(
        total=total,
        desc=f"embedding -> {store_folder.name}",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
        unit="utt",
    )
    try:
        for n, (indices, wavs, lens) in enumerate(loader, 1):
            try:
                emb, gates = _embed_batch(
                    modules,
                    wavs.to(device),
                    lens.to(device),
                    crops,
                    chunking,
                    sample_rate,
                )
            except InvalidAudioError as err:
                row, why = next(iter(err.problems.items()))
                utt = utterances[indices[row]]
                raise ExtractionError(
                    f"Cannot embed '{utt.path}' ({utt.id}): {why}; remove it "
                    "from the list or fix the file"
                ) from None
            pending[0].extend(ids[i] for i in indices)
            pending[1].extend(emb.float().cpu().numpy())
            # Seconds of what was embedded (a transform may have cut it).
            pending[2].extend((lens * wavs.shape[1] / sample_rate).tolist())
            for key, value in gates.items():
                value = value.float().reshape(value.shape[0], -1).cpu().numpy()
                pending[3].setdefault(key, []).extend(value)
            bar.update(len(indices))
            if n % flush_every == 0:
                _write_part(parts, rank, seq, keys, *pending)
                seq += 1
                pending = ([], [], [], {})
        if pending[0]:
            _write_part(parts, rank, seq, keys, *pending)
            pending = ([], [], [], {})
    except BaseException:
        # Stopped by an error (a damaged file, Ctrl-C): keep what was
        # embedded, so that a run started again (with the file fixed or
        # left out) resumes from it; a folder this run made for nothing
        # goes.
        if pending[0]:
            try:
                _write_part(parts, rank, seq, keys, *pending)
            except Exception as err:  # keep the error that stopped the run
                logger.warning("Could not keep the last batches: %s", err)
        if created and not any(parts.glob("part-*.npz")):
            shutil.rmtree(parts, ignore_errors=True)
        elif rank == 0:
            logger.info(
                "Kept the embeddings computed so far in %s: the next "
                "extraction into %s reuses them",
                parts,
                store_folder,
            )
        raise
    finally:
        bar.close()
    _barrier()
    if rank == 0:
        store = _assemble(parts, utterances, meta, keys, same_list)
        store.save(store_folder)
        shutil.rmtree(parts)
    _barrier()
    return EmbeddingStore.load(store_folder)
