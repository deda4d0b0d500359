"""Our models inside the real pyannote.audio 4 (``speechbrain_unipet.pyannote``):
pyannote's own embedding wrapper (``PretrainedSpeakerEmbedding``) gives our
embeddings, finds our shortest input, treats masks and padded batches as one
by one, and its clustering separates a synthetic 3-speaker conversation
embedded with the demo-trained model."""

import pathlib

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("pyannote.audio")

from pyannote.audio.pipelines.clustering import AgglomerativeClustering  # noqa: E402
from pyannote.audio.pipelines.speaker_verification import (  # noqa: E402
    PretrainedSpeakerEmbedding,
)

from speechbrain_unipet.lobes.embedding import (  # noqa: E402
    minimum_samples,
    speaker_embeddings,
)
from speechbrain_unipet.onnx import OnnxSpeakerModel  # noqa: E402
from speechbrain_unipet.onnx_export import cosine_rows, export_onnx  # noqa: E402
from speechbrain_unipet.pyannote import PyannoteEmbedding  # noqa: E402
from speechbrain_unipet.training.runs import open_model  # noqa: E402

DEMO = pathlib.Path(__file__).resolve().parents[2] / "samples" / "voxceleb_demo"


@pytest.fixture(scope="module")
def onnx_folder(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("pyannote") / "onnx"
    export_onnx(trained("unipet"), out, check=False)
    return out


def ours(run, signals):
    """Each signal alone through the PyTorch eval path of the run."""
    model = open_model(run, "cpu")
    with torch.no_grad():
        return np.stack(
            [
                speaker_embeddings(*model.parts, s[None])[0].reshape(-1).numpy()
                for s in signals
            ]
        )


def test_pyannote_embeddings_equal_ours_and_min_num_samples_is_ours(
    trained, onnx_folder
):
    run = trained("unipet")
    model = open_model(run, "cpu")
    documented = minimum_samples(*model.parts[::2])
    gen = torch.Generator().manual_seed(0)
    signals = [torch.randn(n, generator=gen) * 0.1 for n in (8000, 8000)]
    expected = ours(run, signals)
    for folder in (run, onnx_folder):
        embedding = PretrainedSpeakerEmbedding(PyannoteEmbedding(folder))
        assert embedding.sample_rate == 16000
        assert embedding.dimension == expected.shape[1]
        got = embedding(torch.stack(signals)[:, None])
        assert got.shape == expected.shape
        assert cosine_rows(got, expected).min() >= 0.9999
        # pyannote's binary search (any exception = too short) ends at ours.
        assert embedding.min_num_samples == documented
    assert OnnxSpeakerModel(onnx_folder).min_samples == documented


def test_masks_and_padded_batches_equal_one_by_one(trained, onnx_folder):
    run = trained("unipet")
    gen = torch.Generator().manual_seed(1)
    waveforms = torch.randn(3, 1, 16000, generator=gen) * 0.1
    # pyannote's masks: frame weights at their own rate (here 100 frames).
    masks = torch.zeros(3, 100)
    masks[0, :] = 1.0
    masks[1, 10:60] = 1.0
    masks[2, 5:20] = 1.0
    masks[2, 70:90] = 1.0
    kept = [
        waveforms[0, 0],
        waveforms[1, 0, 1600:9600],
        torch.cat([waveforms[2, 0, 800:3200], waveforms[2, 0, 11200:14400]]),
    ]
    expected = ours(run, kept)
    for folder in (run, onnx_folder):
        embedding = PretrainedSpeakerEmbedding(PyannoteEmbedding(folder))
        got = embedding(waveforms, masks=masks)
        assert cosine_rows(got, expected).min() >= 0.9999
        # A row whose mask keeps too few samples is NaN; the others stay.
        short = masks.clone()
        short[1] = 0.0
        short[1, :1] = 1.0  # 160 samples
        got = embedding(waveforms, masks=short)
        assert np.isnan(got[1]).all()
        assert cosine_rows(got[[0, 2]], expected[[0, 2]]).min() >= 0.9999


def purity(owner, clusters):
    """Share of windows whose cluster's majority speaker is theirs."""
    return sum(
        np.bincount(owner[clusters == c]).max() for c in np.unique(clusters)
    ) / len(owner)


def test_clustering_three_speaker_conversations(tmp_path, capsys):
    """The demo-trained model embeds 2 s windows (every 0.5 s) of synthetic
    conversations: three held-out demo speakers taking turns with their
    4 s segments (A B C A B C A B C). pyannote's agglomerative clustering
    (centroid linkage, its diarization default), told there are 3
    speakers, groups the windows. Chance is measured, not assumed: the
    purity of the same cluster sizes with shuffled labels. Each of the 8
    held-out speakers is in 3 of the 8 conversations (speakers i, i+1,
    i+2)."""
    import subprocess
    import sys

    out = tmp_path / "demo"
    subprocess.run(
        [sys.executable, "-m", "speechbrain_unipet.demo", "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    embedding = PretrainedSpeakerEmbedding(PyannoteEmbedding(out / "unipet"))
    held_out = sorted(
        {line.split()[1].split("/")[0] for line in open(DEMO / "veri_demo.txt")}
    )
    segments = {
        s: [
            sf.read(f, dtype="float32")[0]
            for f in sorted((DEMO / "wav" / s).rglob("*.flac"))
        ]
        for s in held_out
    }
    rng = np.random.default_rng(0)
    found, chance = [], []
    for first in range(len(held_out)):
        speakers = [held_out[(first + k) % len(held_out)] for k in range(3)]
        turns = [
            (label, segments[speaker][n])
            for n in range(3)
            for label, speaker in enumerate(speakers)
        ]
        conversation = torch.from_numpy(np.concatenate([t for _, t in turns]))
        truth = np.concatenate([np.full(len(t), label) for label, t in turns])
        window, step = 32000, 8000
        starts = range(0, len(conversation) - window + 1, step)
        owner = np.array(
            [np.bincount(truth[s : s + window]).argmax() for s in starts]
        )
        chunks = torch.stack([conversation[s : s + window] for s in starts])
        embeddings = np.concatenate(
            [
                embedding(chunks[i : i + 16, None])
                for i in range(0, len(chunks), 16)
            ]
        )
        clustering = AgglomerativeClustering(metric="cosine")
        clustering.instantiate(
            {"method": "centroid", "threshold": 0.7, "min_cluster_size": 1}
        )
        clusters = clustering.cluster(
            embeddings, min_clusters=3, max_clusters=3, num_clusters=3
        )
        assert len(np.unique(clusters)) == 3
        found.append(purity(owner, clusters))
        shuffled = [
            purity(owner, rng.permutation(clusters)) for _ in range(200)
        ]
        chance.append((np.mean(shuffled), np.percentile(shuffled, 99)))
    chance = np.array(chance)
    with capsys.disabled():
        print(
            f"\npurity of 8 three-speaker conversations: "
            f"{' '.join(f'{p:.3f}' for p in found)}; mean {np.mean(found):.3f} "
            f"(chance: mean {chance[:, 0].mean():.3f}, 99th percentile "
            f"{chance[:, 1].mean():.3f})"
        )
    assert np.mean(found) > chance[:, 1].mean()
