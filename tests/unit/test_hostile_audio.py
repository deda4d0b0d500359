"""Audio that cannot give an embedding (NaN/inf, digital silence, a few
samples) is named, file or batch row, and never turns into a silent wrong
score; the other rows of a batch are still embedded."""

import csv
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import small_model

from speechbrain_unipet.data.preparation import CSV_HEADER
from speechbrain_unipet.inference import SpeakerEmbeddingModel
from speechbrain_unipet.lobes.embedding import InvalidAudioError
from speechbrain_unipet.training.runs import compute_embedding
from speechbrain_unipet.training.validator import VerificationValidator
from speechbrain_unipet.utils.audio import AudioError, load_audio


def test_nan_samples_are_an_error_naming_the_file(tmp_path):
    signal = np.random.default_rng(0).normal(size=8000).astype(np.float32)
    signal[1234] = np.nan
    path = tmp_path / "broken.wav"
    sf.write(path, signal, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"broken.wav.*NaN.*sample 1234"):
        load_audio(path)


def test_bad_rows_are_named_and_the_others_embedded(ssl_folder):
    modules = small_model(ssl_folder("wavlm"))
    torch.manual_seed(0)
    batch = torch.randn(5, 6000)
    batch[1] = 0.0  # digital silence
    batch[3, 100] = float("inf")
    lens = torch.tensor([1.0, 1.0, 0.9, 1.0, 200 / 6000])  # row 4: 200 samples
    exported = SpeakerEmbeddingModel(
        modules["ssl_encoder"], modules["embedding_model"]
    ).eval()
    for embed in (
        lambda: compute_embedding(modules, batch, lens),
        lambda: exported(batch, lens),
    ):
        with torch.no_grad(), pytest.raises(InvalidAudioError) as err:
            embed()
        assert set(err.value.problems) == {1, 3, 4}
        message = str(err.value)
        assert "row 1: digital silence" in message
        assert "row 3: NaN or infinite samples" in message
        assert "row 4: 200 samples" in message
        got = err.value.embeddings
        assert torch.isnan(got[[1, 3, 4]]).all()
        with torch.no_grad():
            alone = compute_embedding(modules, batch[2:3, :5400])
        torch.testing.assert_close(got[2], alone[0], atol=1e-4, rtol=0)


def test_validation_leaves_out_a_silent_segment(ssl_folder, tmp_path, caplog):
    modules = small_model(ssl_folder("wavlm"))
    rows = []
    rng = np.random.default_rng(1)
    for i, speaker in enumerate(["a", "a", "b", "b", "b"]):
        signal = rng.normal(size=8000).astype(np.float32) * 0.1
        if i == 4:
            signal[:] = 0.0
        path = tmp_path / f"{speaker}{i}.wav"
        sf.write(path, signal, 16000)
        rows.append(
            {
                "ID": f"{speaker}/{i}",
                "duration": 0.5,
                "wav": str(path),
                "start": 0,
                "stop": 8000,
                "spk_id": speaker,
                "sample_rate": 16000,
                "utt_start": 0,
                "utt_stop": 8000,
            }
        )
    with open(tmp_path / "valid.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "trials.txt").write_text(
        "1 a/0 a/1\n1 b/2 b/3\n1 b/2 b/4\n0 a/0 b/2\n0 a/1 b/4\n"
    )
    validator = VerificationValidator(
        tmp_path / "valid.csv", tmp_path / "trials.txt", 16000, batch_size=5
    )
    with caplog.at_level(logging.WARNING), torch.no_grad():
        stats = validator.evaluate(
            lambda w, n: compute_embedding(modules, w, n), "cpu"
        )
    assert set(stats) == {"EER", "minDCF"}
    assert "leaves out b/4" in caplog.text and "digital silence" in caplog.text


def test_dev_loss_path_does_not_refuse_rows(ssl_folder):
    """The training script's dev loss passes ``check_rows=False``: a silent
    dev crop gives a finite embedding instead of ending the run."""
    from speechbrain_unipet.lobes.embedding import speaker_embeddings

    modules = small_model(ssl_folder("wavlm"))
    batch = torch.randn(2, 6000)
    batch[1] = 0.0
    with torch.no_grad():
        emb, _ = speaker_embeddings(
            modules["ssl_encoder"],
            modules["mean_var_norm"],
            modules["embedding_model"],
            batch,
            check_rows=False,
        )
    assert torch.isfinite(emb).all()
