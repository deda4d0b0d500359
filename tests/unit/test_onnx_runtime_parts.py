"""What the ONNX runtime (``speechbrain_unipet.onnx``) does without torch,
against what the PyTorch path does: resampling (torchaudio's filter in
NumPy), windows of long recordings, refused rows; and the shortest input
of a model (the exported graph's minimum, pyannote's ``min_num_samples``)."""

import numpy as np
import pytest
import torch
import torchaudio
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

from speechbrain_unipet.lobes import MHFA, PETEncoder
from speechbrain_unipet.lobes.embedding import (
    InvalidAudioError,
    minimum_samples,
    row_problems,
    speaker_embeddings,
)
from speechbrain_unipet.lobes.embedding import window_starts as torch_windows
from speechbrain_unipet.onnx import row_problem, window_starts
from speechbrain_unipet.utils.audio import resample_numpy


@pytest.mark.parametrize(
    "rates", [(8000, 16000), (44100, 16000), (22050, 16000), (48000, 16000)]
)
def test_numpy_resampling_equals_torchaudio(rates):
    orig, new = rates
    signal = np.random.default_rng(0).standard_normal(orig + 37) * 0.1
    signal = signal.astype(np.float32)
    ours = resample_numpy(signal, orig, new)
    reference = torchaudio.functional.resample(
        torch.from_numpy(signal), orig, new
    )
    assert ours.shape == tuple(reference.shape)
    np.testing.assert_allclose(ours, reference.numpy(), atol=2e-5)


def test_windows_and_refused_rows_match_the_pytorch_path():
    # One function (utils.audio, torch-free) windows both paths.
    assert window_starts is torch_windows
    rows = [np.ones(300), np.zeros(900), np.full(900, np.nan), np.ones(900)]
    padded = torch.zeros(4, 900)
    lens = torch.tensor([300 / 900, 1.0, 1.0, 1.0])
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.from_numpy(row)
    expected = row_problems(padded, lens, 400)
    assert {
        i: row_problem(r, 400) for i, r in enumerate(rows) if i in expected
    } == (expected)
    assert row_problem(rows[3], 400) is None


def test_the_shortest_input_is_refused_by_name_not_by_a_crash(ssl_folder):
    """ECAPA-TDNN's reflection padding needs 5 frames: one sample fewer than
    ``minimum_samples`` is refused as too short (it crashed inside the
    convolution before), the minimum itself embeds."""
    encoder = PETEncoder(ssl_folder(), "frozen").eval()
    ecapa = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=4).eval()
    shortest = minimum_samples(encoder, ecapa)
    assert int(encoder.backbone.frame_lengths(torch.tensor([shortest]))) == 5
    with torch.no_grad():
        emb, _ = speaker_embeddings(
            encoder, lambda x, lens: x, ecapa, torch.randn(1, shortest)
        )
        assert emb.shape == (1, 1, 4)
        with pytest.raises(
            InvalidAudioError, match=f"fewer than the {shortest}"
        ):
            speaker_embeddings(
                encoder, lambda x, lens: x, ecapa, torch.randn(1, shortest - 1)
            )
    # A back-end reading the layer stack takes a single frame.
    mhfa = MHFA(32, 3, heads=2, compression_dim=8, lin_neurons=4)
    one_frame = minimum_samples(encoder, mhfa)
    assert int(encoder.backbone.frame_lengths(torch.tensor([one_frame]))) == 1
    assert (
        int(encoder.backbone.frame_lengths(torch.tensor([one_frame - 1]))) == 0
    )
