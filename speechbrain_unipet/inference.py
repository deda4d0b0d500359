"""Modules that make a PET speaker model work in SpeechBrain's inference
interfaces (``EncoderClassifier`` / ``SpeakerRecognition``).

``EncoderClassifier.encode_batch`` calls ``compute_features(wavs)`` without
lengths, then ``mean_var_norm(feats, wav_lens)`` and
``embedding_model(feats, wav_lens)``. An SSL front-end needs the lengths
(padding would leak into attention), so here the first two steps pass the
waveforms through and ``embedding_model`` runs the whole embedding path
(``speechbrain_unipet.embedding.speaker_embeddings``, the one training and
verification use) with the lengths ``encode_batch`` was given.

Authors
 * speechbrain-unipet contributors 2026
"""

from speechbrain.processing.features import InputNormalization
from torch import nn

from speechbrain_unipet.embedding import (
    CHUNK_OVERLAP_SECONDS,
    MAX_CHUNK_SECONDS,
    speaker_embeddings,
)


class PassThrough(nn.Module):
    """``compute_features`` / ``mean_var_norm`` of an exported model: returns
    the waveforms unchanged (the embedding model does the rest).

    Example
    -------
    >>> import torch
    >>> PassThrough()(torch.ones(1, 3), torch.ones(1)).shape
    torch.Size([1, 3])
    """

    def forward(self, wavs, wav_lens=None):
        """Returns ``wavs``."""
        return wavs


class SpeakerEmbeddingModel(nn.Module):
    """``embedding_model`` of an exported model: waveforms and their
    relative lengths -> embeddings [B, 1, E], through ``speaker_embeddings``.

    Arguments
    ---------
    encoder : PETEncoder
        The PET-tuned SSL encoder.
    model : nn.Module
        The embedding model (e.g. ECAPA-TDNN).
    normalizer : nn.Module or None
        Sentence mean normalisation (None: SpeechBrain's
        ``InputNormalization(norm_type="sentence", std_norm=False)``, what
        the recipe trains with).
    max_chunk_seconds : float or None
        Longer utterances are embedded in windows (see
        ``speaker_embeddings``); None: whole utterances.
    chunk_overlap_seconds : float
        Overlap of consecutive windows.
    """

    def __init__(
        self,
        encoder,
        model,
        normalizer=None,
        max_chunk_seconds=MAX_CHUNK_SECONDS,
        chunk_overlap_seconds=CHUNK_OVERLAP_SECONDS,
    ):
        super().__init__()
        self.encoder = encoder
        self.model = model
        self.max_chunk_seconds = max_chunk_seconds
        self.chunk_overlap_seconds = chunk_overlap_seconds
        if normalizer is None:
            normalizer = InputNormalization(
                norm_type="sentence", std_norm=False
            )
        self.normalizer = normalizer

    def forward(self, wavs, wav_lens=None):
        """Embeddings [B, 1, E] of waveforms [B, S]."""
        return speaker_embeddings(
            self.encoder,
            self.normalizer,
            self.model,
            wavs,
            wav_lens,
            self.max_chunk_seconds,
            self.chunk_overlap_seconds,
        )[0]


# Names used by folders exported before the embedding path was shared
# (``hyperparams.yaml`` refers to them): they load into the same path.
class WaveformFrontEnd(PassThrough):
    """Pass-through ``compute_features`` of older exported folders.

    Arguments
    ---------
    encoder : PETEncoder
        Kept for ``PerUtteranceEmbedding``.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder


class UtteranceMeanNorm(PassThrough):
    """Pass-through ``mean_var_norm`` of older exported folders.

    Arguments
    ---------
    front_end : WaveformFrontEnd
        Unused.
    """

    def __init__(self, front_end):
        super().__init__()


class PerUtteranceEmbedding(SpeakerEmbeddingModel):
    """``embedding_model`` of older exported folders.

    Arguments
    ---------
    model : nn.Module
        The embedding model.
    front_end : WaveformFrontEnd
        Holds the encoder.
    """

    def __init__(self, model, front_end):
        super().__init__(front_end.encoder, model)
