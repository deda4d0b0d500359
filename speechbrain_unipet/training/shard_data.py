"""Training segments read from WebDataset shards (``data_format: shards``).

The data preparation splits and segments the utterances of a shard folder
as it does any layout (``speechbrain_unipet.data.shards.shard_recordings``):
``train.csv`` says which segments of which utterance train. This dataset
reads the shards in sequence (each rank its shards, each DataLoader worker
its part of them), and yields those segments of each utterance it decodes,
cropped and speed-perturbed as the file-based pipeline does
(``training_region``), through a seeded shuffle buffer of segments.

An epoch is a fixed number of batches on every rank (``steps``, as the
file-based epoch: training segments / processes / batch size), so that
all ranks stop together. Each rank and DataLoader worker reads its share
of the shards (a new share each epoch: the shard order is shuffled with
the epoch); a share holding fewer segments than its part of the epoch is
read again from its start, one holding more leaves the rest to later
epochs. Shards of equal sizes (``make-shards --max-count``) keep that
small. The order is a function of the seed and the epoch only, so a run
resumed from an intra-epoch checkpoint skips exactly the batches it had
trained on (``skip_batches``): no batch of the epoch is trained twice.

Authors
 * speechbrain-unipet contributors 2026
"""

import collections
import random
import re

import torch

from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.shards import (
    read_shards,
    shard_dataset,
    shard_recordings,
)
from speechbrain_unipet.training.segments import (
    speed_perturbed,
    speed_perturbers,
    training_region,
)

_SEGMENT_ID = re.compile(r"^(.*)_(\d+)_(\d+)$")


class ShardSegments(torch.utils.data.IterableDataset):
    """The training segments of ``rows`` read from the shards of
    ``folder`` (see the module docstring).

    Arguments
    ---------
    folder : str or pathlib.Path
        The shard folder (``speechbrain-unipet make-shards``).
    rows : list of dict
        The rows of ``train.csv`` (``ID`` ``<utterance>_<start>_<stop>``;
        positions in the source's samples).
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Speaker -> class.
    batch_size : int
        Segments a batch (the DataLoader's).
    sample_rate : int
        The shards' rate (the model's).
    speeds : sequence of float
        Training speeds; a speed's copy of a speaker is a class.
    random_chunk : bool
        Random crops within each segment's region.
    shuffle_buffer : int
        Utterances in the shard reader's buffer (and segments in this
        one's); 0: the shards' order.
    seed : int
        Seed of every shuffle (with the epoch).
    world_size : int
        Training processes (the steps are per process).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> from speechbrain_unipet.data.shards import make_shards
    >>> root = getfixture("tmp_path")
    >>> for spk in ("a", "b"):
    ...     (root / "data" / spk).mkdir(parents=True)
    ...     sf.write(root / "data" / spk / "1.wav", np.zeros(1600), 16000)
    >>> _ = make_shards(root / "data", root / "shards", max_count=1)
    >>> rows = [
    ...     {
    ...         "ID": f"{s}/1_0_800",
    ...         "start": "0",
    ...         "stop": "800",
    ...         "utt_start": "0",
    ...         "utt_stop": "1600",
    ...         "spk_id": s,
    ...         "sample_rate": "16000",
    ...     }
    ...     for s in ("a", "b")
    ... ]
    >>> labels = CategoricalEncoder()
    >>> labels.update_from_iterable(["a", "b"])
    >>> data = ShardSegments(root / "shards", rows, labels, batch_size=2)
    >>> data.steps, sorted(x["id"] for x in data)
    (1, ['a/1_0_800', 'b/1_0_800'])
    """

    def __init__(
        self,
        folder,
        rows,
        label_encoder,
        batch_size,
        sample_rate=16000,
        speeds=(1.0,),
        random_chunk=True,
        shuffle_buffer=0,
        seed=1986,
        world_size=1,
    ):
        super().__init__()
        self.folder = folder
        index = read_shards(folder)
        if index["options"]["sample_rate"] != sample_rate:
            raise DataPreparationError(
                f"The shards of '{folder}' are at "
                f"{index['options']['sample_rate']} Hz, the model reads "
                f"{sample_rate} Hz: write them again with that rate"
            )
        self.segments = collections.defaultdict(list)
        for row in rows:
            match = _SEGMENT_ID.match(row["ID"])
            uid = match.group(1) if match else row["ID"]
            self.segments[uid].append(row)
        # Where each utterance's audio starts in its source: the shard
        # holds the region from there, resampled.
        recordings, probes = shard_recordings(folder)
        self.first = {
            r.uid: p.start for r, p in zip(recordings, probes, strict=True)
        }
        missing = sorted(set(self.segments) - set(self.first))
        if missing:
            raise DataPreparationError(
                f"{len(missing)} training utterance(s) are not in the shards "
                f"of '{folder}', e.g. '{missing[0]}': prepare the data from "
                "these shards (a new output_folder)"
            )
        self.num_segments = len(rows)
        self.label_encoder = label_encoder
        self.batch_size = batch_size
        self.sample_rate = sample_rate
        self.speeds = tuple(speeds)
        self.random_chunk = random_chunk
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.world_size = world_size
        # The file-based epoch: every segment once over all processes.
        self.steps = max(1, len(rows) // world_size // batch_size)
        self.epoch = 1
        self.skip_batches = 0
        self.num_shards = len(index["shards"])

    def __len__(self):
        """Segments this process yields in an epoch."""
        return self.steps * self.batch_size

    def _worker(self):
        info = torch.utils.data.get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def __iter__(self):
        physical, workers = self._worker()
        # The DataLoader takes batch j from worker j % workers, starting
        # with worker 0; after skip_batches, worker 0 must deliver batch
        # skip_batches: each worker plays the part of another.
        worker = (physical + self.skip_batches) % workers
        if self.num_shards < self.world_size * workers:
            raise DataPreparationError(
                f"{self.world_size} process(es) x {workers} DataLoader "
                f"worker(s) share the {self.num_shards} shard(s) of "
                f"'{self.folder}': each needs one. Make more shards (a "
                "smaller --max-count) or use fewer workers (num_workers)."
            )
        # Batch j of the epoch comes from worker j % workers (the
        # DataLoader takes the workers' batches in turn).
        quota = len(range(worker, self.steps, workers)) * self.batch_size
        skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
        rank = torch.distributed.get_rank() if _distributed() else 0
        rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
        perturbers = speed_perturbers(self.sample_rate, self.speeds)
        produced = 0
        stream = self._segments((worker, workers))
        for segment in self._shuffled(stream, rng):
            if produced >= quota:
                return
            if produced >= skip:
                yield self._example(*segment, perturbers)
            produced += 1

    def _segments(self, worker):
        """(utterance audio, source start, row) of the shards of
        ``worker`` (index, count), round after round until the epoch's
        quota is met."""
        round_ = 0
        while True:
            found = False
            shards = shard_dataset(
                self.folder,
                split_by_rank=True,
                shuffle_buffer=self.shuffle_buffer,
                seed=self.seed + 1000 * self.epoch + round_,
                worker=worker,
            )
            for example in shards:
                for row in self.segments.get(example["id"], ()):
                    found = True
                    yield example["wav"], self.first[example["id"]], row
            if not found:
                raise DataPreparationError(
                    f"The shards of '{self.folder}' given to this worker "
                    "hold no training segment (train.csv): were they "
                    "written from this data?"
                )
            round_ += 1

    def _shuffled(self, items, rng):
        """A seeded shuffle buffer over ``items`` (segments of one
        utterance would otherwise come in a row)."""
        size = max(1, self.shuffle_buffer)
        buffer = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= size:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def _example(self, wav, first, row, perturbers):
        """One training example of an utterance's decoded audio (``wav``,
        the source's samples from ``first`` on, at the shards' rate)."""
        rate = int(row["sample_rate"])

        def here(position):
            """A source sample -> a sample of the shard's audio."""
            return round((int(position) - first) * self.sample_rate / rate)

        start, stop = here(row["start"]), here(row["stop"])
        utt_start, utt_stop = here(row["utt_start"]), here(row["utt_stop"])
        utt_stop = min(utt_stop, len(wav))
        length = stop - start
        start, stop, index = training_region(
            start, stop, utt_start, utt_stop, self.speeds, self.random_chunk
        )
        sig = speed_perturbed(wav[start:stop], perturbers[index], length)
        label = self.label_encoder.encode_sequence_torch([row["spk_id"]])
        return {
            "id": row["ID"],
            "sig": sig,
            "spk_id_encoded": label + index * len(self.label_encoder),
        }


def _distributed():
    return (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
