"""Modules that make a PET speaker model work in SpeechBrain's inference
interfaces (``EncoderClassifier`` / ``SpeakerRecognition``).

``EncoderClassifier.encode_batch`` runs ``compute_features(wavs)`` *without
lengths*, then ``mean_var_norm(feats, wav_lens)`` and
``embedding_model(feats, wav_lens)``: with an SSL front-end, padding would
leak into attention, sentence normalisation and ECAPA's convolutions
(pitfall 12). Here the front-end infers each utterance's length from its
trailing zeros (zero padding), records the valid frame counts, and the two
following modules process each utterance on its own valid frames, so a
padded batch gives exactly the embeddings of its utterances one by one.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch
from torch import nn


def nonzero_lengths(wavs):
    """Samples up to the last non-zero one, per row (at least 1).

    Example
    -------
    >>> nonzero_lengths(torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0]]))
    tensor([2, 2])
    """
    nonzero = wavs != 0
    last = wavs.shape[1] - nonzero.flip(1).int().argmax(dim=1)
    return torch.where(nonzero.any(dim=1), last, torch.ones_like(last))


class WaveformFrontEnd(nn.Module):
    """``compute_features`` for the inference interfaces.

    Arguments
    ---------
    encoder : PETEncoder
        The PET-tuned SSL encoder.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.frame_lengths = None

    def forward(self, wavs, wav_lens=None):
        """Features [B, T, D]; padded frames are zero."""
        samples = nonzero_lengths(wavs)
        rel = samples.to(torch.float64) / wavs.shape[1]
        feats = self.encoder(wavs, rel)
        mask = self.encoder.frame_mask(wavs, rel)
        self.frame_lengths = mask.sum(dim=1)
        return feats


class UtteranceMeanNorm(nn.Module):
    """Sentence mean normalisation over each utterance's valid frames
    (SpeechBrain's ``InputNormalization(norm_type="sentence",
    std_norm=False)`` applied to utterances one by one).

    Arguments
    ---------
    front_end : WaveformFrontEnd
        Where the valid frame counts come from.
    """

    def __init__(self, front_end):
        super().__init__()
        self.front_end = front_end

    def forward(self, feats, wav_lens=None):
        """Mean-normalised features; padded frames stay zero."""
        lengths = self.front_end.frame_lengths
        steps = torch.arange(feats.shape[1], device=feats.device)
        mask = (steps[None, :] < lengths[:, None]).unsqueeze(-1).to(feats.dtype)
        mean = (feats * mask).sum(1, keepdim=True) / lengths[:, None, None].to(
            feats.dtype
        )
        return (feats - mean) * mask


class PerUtteranceEmbedding(nn.Module):
    """Runs the speaker model on each utterance's valid frames separately.

    Arguments
    ---------
    model : nn.Module
        The embedding model (e.g. ECAPA-TDNN): [1, T, D] -> [1, 1, E].
    front_end : WaveformFrontEnd
        Where the valid frame counts come from.
    """

    def __init__(self, model, front_end):
        super().__init__()
        self.model = model
        self.front_end = front_end

    def forward(self, feats, wav_lens=None):
        """Embeddings [B, 1, E]."""
        lengths = self.front_end.frame_lengths.tolist()
        return torch.cat(
            [
                self.model(feats[i : i + 1, : int(n)])
                for i, n in enumerate(lengths)
            ]
        )
