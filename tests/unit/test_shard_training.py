"""Training from shards (``data_format: shards``): the preparation reads
the shard plan, and ``ShardSegments`` yields the prepared training
segments from the shards: the source's audio, each once an epoch,
another order each epoch, and a resumed epoch skips exactly what was
trained."""

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.preparation import (
    prepare_speaker_data,
    read_csv_rows,
)
from speechbrain_unipet.data.shards import make_shards
from speechbrain_unipet.training.shard_data import ShardSegments
from speechbrain_unipet.utils.audio import load_audio

RATE = 16000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """8 speakers x 3 recordings of 2.1 s (one at 8 kHz) as shards of 3
    utterances, prepared with 1 s segments."""
    root = tmp_path_factory.mktemp("shard_training")
    rng = np.random.default_rng(0)
    for s in range(8):
        for k in range(3):
            rate = 8000 if (s, k) == (1, 1) else RATE
            path = root / "data" / f"spk{s}" / f"{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * rng.standard_normal(int(2.1 * rate)), rate)
    make_shards(root / "data", root / "shards", max_count=3, num_workers=1)
    stats = prepare_speaker_data(
        root / "shards",
        root / "save",
        num_test_speakers=2,
        num_valid_speakers=0,
        seg_dur=1.0,
        test_segment_len=1.0,
        num_workers=1,
    )
    rows = read_csv_rows(root / "save" / "train.csv")
    labels = CategoricalEncoder()
    labels.update_from_iterable(sorted({r["spk_id"] for r in rows}))
    return root, stats, rows, labels


def read_epoch(data, workers, batch_size):
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, num_workers=workers, collate_fn=PaddedBatch
    )
    return [list(batch.id) for batch in loader]


def test_preparation_reads_the_plan_not_the_sources(prepared):
    root, stats, rows, _ = prepared
    assert stats["format"] == "shards"
    assert stats["recordings"] == 24 and stats["test"]["speakers"] == 2
    # Segments are in the sources' own samples (the 8 kHz file too).
    eight = [r for r in rows if r["wav"].endswith("spk1/1.wav")]
    assert eight and all(r["sample_rate"] == "8000" for r in eight)


def test_segments_are_the_sources_audio_each_once(prepared):
    root, _, rows, labels = prepared
    data = ShardSegments(
        root / "shards", rows, labels, batch_size=2, random_chunk=False
    )
    assert data.steps == len(rows) // 2
    seen = {}
    for example in data:
        seen.setdefault(example["id"], example)
    assert len(seen) == data.steps * 2 == len(rows) - len(rows) % 2
    for row in rows:
        if row["ID"] not in seen:
            continue
        example = seen[row["ID"]]
        rate = int(row["sample_rate"])
        start, stop = int(row["start"]), int(row["stop"])
        expected = load_audio(row["wav"], RATE, start, stop)
        got = example["sig"]
        assert abs(len(got) - len(expected)) <= 1, row["ID"]
        n = min(len(got), len(expected))
        # A resampled file is resampled whole in the shard, by segment
        # here: the two differ only where the filter meets the cut.
        edge = 0 if rate == RATE else 100
        assert torch.allclose(
            got[edge : n - edge], expected[edge : n - edge], atol=1e-4
        ), row["ID"]
        assert labels.decode_ndim(example["spk_id_encoded"]) == [row["spk_id"]]


def test_two_workers_fill_the_epoch_in_a_new_order_each_epoch(prepared):
    """Each worker reads its shards once and goes round them again only
    where they hold fewer segments than its share of the epoch (shards
    of unequal sizes): the epoch has its fixed number of batches."""
    root, _, rows, labels = prepared
    data = ShardSegments(
        root / "shards", rows, labels, batch_size=2, shuffle_buffer=4
    )
    first = read_epoch(data, workers=2, batch_size=2)
    assert len(first) == data.steps
    ids = [i for batch in first for i in batch]
    assert set(ids) <= {r["ID"] for r in rows}
    # At most the difference of the two workers' shares is read twice.
    largest_shard = 3 * 2  # utterances x segments each
    assert len(ids) - len(set(ids)) <= largest_shard
    assert read_epoch(data, workers=2, batch_size=2) == first  # seeded
    data.epoch = 2
    second = read_epoch(data, workers=2, batch_size=2)
    assert second != first and len(second) == data.steps


@pytest.mark.parametrize("done", [0, 1, 3, 4])
def test_a_resumed_epoch_skips_exactly_the_trained_batches(prepared, done):
    root, _, rows, labels = prepared
    data = ShardSegments(
        root / "shards", rows, labels, batch_size=2, shuffle_buffer=4
    )
    data.epoch = 3
    whole = read_epoch(data, workers=2, batch_size=2)
    data.skip_batches = done
    assert read_epoch(data, workers=2, batch_size=2) == whole[done:]


def test_more_workers_than_shards_is_an_error_naming_the_fix(prepared):
    root, _, rows, labels = prepared
    data = ShardSegments(root / "shards", rows, labels, batch_size=2)
    data.num_shards = 1  # as if the folder held one shard
    with pytest.raises(DataPreparationError, match="Make more shards"):
        read_epoch(data, workers=2, batch_size=2)


def test_embeddings_from_shards_equal_those_from_the_files(prepared, tmp_path):
    """``extract(..., shards=...)`` (``speechbrain-unipet embed MODEL
    SHARDS STORE``) reads the audio from the shards and gives the
    embeddings of the source files (16-bit sources: the same samples)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    from speechbrain_unipet.evaluation.extraction import extract
    from speechbrain_unipet.evaluation.utterances import read_utterances
    from speechbrain_unipet.lobes import PETEncoder
    from speechbrain_unipet.testing import tiny_ssl_folder

    root = prepared[0]
    torch.manual_seed(0)
    enc = PETEncoder(tiny_ssl_folder(tmp_path, "wavlm"), "lora").eval()
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    ecapa = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=4).eval()
    modules = (enc, norm, ecapa)
    utterances = read_utterances(root / "shards")
    assert len(utterances) == 24
    from_shards = extract(
        modules,
        utterances,
        tmp_path / "from_shards",
        shards=root / "shards",
        num_workers=2,
        progress=False,
    )
    from_files = extract(
        modules, utterances, tmp_path / "from_files", progress=False
    )
    assert from_shards.ids == from_files.ids
    same_rate = [
        k for k, u in enumerate(utterances) if not u.path.endswith("spk1/1.wav")
    ]
    np.testing.assert_allclose(
        from_shards.embeddings[same_rate],
        from_files.embeddings[same_rate],
        atol=1e-4,
    )
