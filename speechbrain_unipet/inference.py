"""Modules that make a PET speaker model work in SpeechBrain's inference
interfaces (``EncoderClassifier`` / ``SpeakerRecognition``).

``EncoderClassifier.encode_batch`` calls ``compute_features(wavs)`` without
lengths, then ``mean_var_norm(feats, wav_lens)`` and
``embedding_model(feats, wav_lens)``. An SSL front-end needs the lengths
(padding would leak into attention), so here the first two steps pass the
waveforms through and ``embedding_model`` runs the whole embedding path
(``speechbrain_unipet.lobes.embedding.speaker_embeddings``, the one training and
verification use) with the lengths ``encode_batch`` was given.

Authors
 * speechbrain-unipet contributors 2026
"""

import pathlib

import torch
from speechbrain.inference.speaker import SpeakerRecognition
from speechbrain.processing.features import InputNormalization
from torch import nn

from speechbrain_unipet.lobes.embedding import (
    CHUNK_OVERLAP_SECONDS,
    MAX_CHUNK_SECONDS,
    row_problems,
    speaker_embeddings,
)
from speechbrain_unipet.scoring.calibration import ScoreCalibrator
from speechbrain_unipet.scoring.calibration import (
    pair_features as pair_quality_features,
)
from speechbrain_unipet.scoring.metrics import bayes_threshold
from speechbrain_unipet.training.runs import is_export, open_model
from speechbrain_unipet.utils.audio import AudioError, load_audio


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


#: Quality measures an exported calibration may use: the ones a pair of
#: recordings gives on its own (cohort means need a cohort).
EXPORTABLE_QUALITY = ("duration", "norm")


def check_exportable(calibrator):
    """Refuses calibrations an exported model cannot apply.

    Arguments
    ---------
    calibrator : ScoreCalibrator
        Fitted by ``speechbrain-unipet calibrate``.

    Raises
    ------
    ValueError
        If it was fitted on AS-norm or mean-subtracted scores, or uses
        cohort means.
    """
    scoring = dict(getattr(calibrator, "scoring", {}) or {})
    if (scoring.get("score_norm") or "none") != "none":
        raise ValueError(
            "This calibration was fitted on AS-norm scores; an exported "
            "model scores by cosine. Calibrate without --cohort for export."
        )
    if scoring.get("subtract_mean"):
        raise ValueError(
            "This calibration was fitted on mean-subtracted scores; an "
            "exported model scores raw embeddings by cosine. Calibrate "
            "without --subtract-mean for export."
        )
    extra = [
        n
        for n in calibrator.names
        if n != "score" and n.rsplit("_", 1)[0] not in EXPORTABLE_QUALITY
    ]
    if extra:
        raise ValueError(
            f"This calibration uses {extra}, which an exported model cannot "
            f"compute from two recordings: calibrate with --quality "
            f"{','.join(EXPORTABLE_QUALITY)} (or a subset) for export"
        )


def pair_features(calibrator, scores, emb1, emb2, seconds1, seconds2):
    """Calibration features of verification pairs, in the calibrator's
    order (``scoring.calibration.pair_features`` on tensors).

    Arguments
    ---------
    calibrator : ScoreCalibrator
    scores : torch.Tensor
        Cosine scores [B].
    emb1, emb2 : torch.Tensor
        Embeddings [B, E] (before normalisation).
    seconds1, seconds2 : torch.Tensor
        Durations [B] in seconds.

    Returns
    -------
    numpy.ndarray
        [B, F].
    """

    def numpy(t):
        """A tensor as float64 NumPy."""
        return t.double().cpu().numpy()

    return pair_quality_features(
        calibrator,
        numpy(scores),
        numpy(emb1.double().norm(dim=-1)),
        numpy(emb2.double().norm(dim=-1)),
        numpy(seconds1),
        numpy(seconds2),
    )


class CalibratedSpeakerRecognition(SpeakerRecognition):
    """``SpeakerRecognition`` whose ``verify_batch`` / ``verify_files``
    return calibrated scores (log-likelihood ratios) and Bayes decisions,
    when the exported folder carries a calibration
    (``speechbrain-unipet calibrate --export-folder``).

    SpeechBrain's ``SpeakerRecognition`` hard-codes a cosine similarity
    and a 0.25 threshold in its constructor and ``verify_batch``, which a
    ``hyperparams.yaml`` cannot change; this subclass reads the folder's
    ``calibration`` entry instead. Without one it behaves as its parent.
    The default threshold is the calibration's: the Bayes decision at its
    target prior (``threshold`` overrides it).

    Example
    -------
    >>> issubclass(CalibratedSpeakerRecognition, SpeakerRecognition)
    True
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calibrator = None
        calibration = getattr(self.hparams, "calibration", None)
        if calibration:
            self.calibrator = ScoreCalibrator.from_dict(
                calibration, source="the calibration of this exported model"
            )

    def default_threshold(self):
        """The decision threshold without an explicit one: the
        calibration's Bayes threshold, else SpeechBrain's 0.25."""
        if self.calibrator is None:
            return 0.25

        calibration = self.hparams.calibration
        if calibration.get("threshold") is not None:
            return float(calibration["threshold"])
        return bayes_threshold(calibration.get("decision_p_target", 0.01))

    def verify_batch(
        self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None
    ):
        """Scores (calibrated LLRs with a calibration) and decisions of
        pairs of waveform batches.

        Arguments
        ---------
        wavs1, wavs2 : torch.Tensor
            Waveforms [B, S].
        wav1_lens, wav2_lens : torch.Tensor or None
            Relative lengths.
        threshold : float or None
            Accept scores above it (None: ``default_threshold()``).

        Returns
        -------
        score : torch.Tensor
            [B, 1].
        decision : torch.Tensor
            Bool [B, 1], True for the same speaker.
        """
        if threshold is None:
            threshold = self.default_threshold()
        emb1 = self.encode_batch(wavs1, wav1_lens, normalize=False)
        emb2 = self.encode_batch(wavs2, wav2_lens, normalize=False)
        score = self.similarity(emb1, emb2)
        if self.calibrator is not None:
            rate = getattr(self.hparams, "sample_rate", 16000)

            def seconds(wavs, lens):
                """Durations [B] in seconds of a padded batch."""
                if lens is None:
                    lens = torch.ones(wavs.shape[0], device=wavs.device)
                return lens.float() * wavs.shape[1] / rate

            features = pair_features(
                self.calibrator,
                score.reshape(-1),
                emb1.reshape(emb1.shape[0], -1),
                emb2.reshape(emb2.shape[0], -1),
                seconds(wavs1, wav1_lens),
                seconds(wavs2, wav2_lens),
            )
            score = (
                torch.as_tensor(self.calibrator(features), dtype=score.dtype)
                .reshape(score.shape)
                .to(score.device)
            )
        return score, score > threshold


def verify_files(model, path_a, path_b, device="cpu", threshold=None):
    """Same speaker? Two recordings scored by a trained model.

    Arguments
    ---------
    model : str or pathlib.Path
        An exported model folder (its calibration applies) or a training
        run's output folder (cosine score).
    path_a, path_b : str
        Audio files.
    device : str
        Where to run.
    threshold : float or None
        Decision threshold (None: the calibration's; a training run or an
        uncalibrated export gives no decision).

    Returns
    -------
    dict
        ``score``, ``calibrated``, ``threshold`` and ``same_speaker``
        (None without a threshold).
    """

    def load(path, rate):
        """The recording [1, S] on ``device``, refused (naming the file)
        when it cannot give an embedding."""
        wav = load_audio(path, rate)[None]
        problem = row_problems(wav, torch.ones(1)).get(0)
        if problem is not None:
            raise AudioError(
                f"{path}: cannot give a speaker embedding: {problem}; give "
                "a recording with speech in it"
            )
        return wav.to(device)

    folder = pathlib.Path(model)
    calibrated = False
    if is_export(folder):
        verifier = CalibratedSpeakerRecognition.from_hparams(
            source=str(folder), savedir=str(folder), run_opts={"device": device}
        )
        calibrated = verifier.calibrator is not None
        if threshold is None and calibrated:
            threshold = verifier.default_threshold()
        rate = getattr(verifier.hparams, "sample_rate", 16000)
        a, b = load(path_a, rate), load(path_b, rate)
        score, _ = verifier.verify_batch(a, b, threshold=threshold or 0.0)
        score = float(score.reshape(-1)[0])
    else:
        model = open_model(folder, device)
        rate = model.sample_rate
        embs = []
        for path in (path_a, path_b):
            wav = load(path, rate)
            with torch.no_grad():
                emb, _ = speaker_embeddings(*model.parts, wav, sample_rate=rate)
            embs.append(emb.reshape(-1))
        score = float(torch.nn.functional.cosine_similarity(*embs, dim=0))
    return {
        "score": score,
        "calibrated": calibrated,
        "threshold": threshold,
        "same_speaker": None if threshold is None else score > threshold,
    }
