"""Running an ONNX export (``speechbrain-unipet export-onnx``) with
onnxruntime: the ``embed`` / ``verify`` surface of the PyTorch model,
without torch, transformers or SpeechBrain.

Audio is decoded, down-mixed and resampled as the PyTorch interface does
(``utils.audio.load_numpy``: the same decoders, torchaudio's resampling
filter in NumPy). Recordings longer than the export's window
(``max_chunk_seconds`` in ``onnx_config.json``) are embedded in overlapping
windows whose embeddings are averaged, as ``speaker_embeddings`` does;
shorter ones are one graph call, padded batches included.

Example
-------
``OnnxSpeakerModel("onnx_folder").verify_files("a.wav", "b.wav")``

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import math
import pathlib

import numpy as np

from speechbrain_unipet.scoring.calibration import (
    ScoreCalibrator,
    pair_features,
)
from speechbrain_unipet.scoring.metrics import bayes_threshold
from speechbrain_unipet.utils.audio import AudioError, load_numpy, window_starts
from speechbrain_unipet.utils.errors import MissingFileError, UserError

CONFIG_FILE = "onnx_config.json"


class OnnxModelError(UserError, ValueError):
    """A folder that is not an ONNX export, or a missing onnxruntime."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxModelError(
            "running an ONNX model needs onnxruntime, which is not "
            "installed: pip install onnxruntime (or "
            "'speechbrain-unipet[onnx]')"
        ) from None
    return onnxruntime


def is_onnx_export(folder):
    """Whether ``folder`` holds an ONNX export (its ``onnx_config.json``).

    Arguments
    ---------
    folder : str or pathlib.Path

    Returns
    -------
    bool

    Example
    -------
    >>> is_onnx_export(getfixture("tmp_path"))
    False
    """
    return (pathlib.Path(folder) / CONFIG_FILE).is_file()


def row_problem(signal, min_samples):
    """Why a recording cannot give an embedding, or None (the checks of
    ``lobes.embedding.row_problems``).

    Arguments
    ---------
    signal : numpy.ndarray
        [S] samples.
    min_samples : int

    Returns
    -------
    str or None

    Example
    -------
    >>> row_problem(np.zeros(800), 400)
    'digital silence (all samples are 0)'
    """
    if signal.size < min_samples:
        return (
            f"{signal.size} samples, fewer than the {min_samples} "
            "that give an embedding"
        )
    if not np.isfinite(signal).all():
        return "NaN or infinite samples"
    if not np.any(signal != 0):
        return "digital silence (all samples are 0)"
    return None


class OnnxSpeakerModel:
    """A speaker-embedding model exported to ONNX, run by onnxruntime.

    Arguments
    ---------
    folder : str or pathlib.Path
        Written by ``speechbrain-unipet export-onnx``.
    int8 : bool
        Run the int8 model (exported with ``--int8``).
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's choice).
    providers : list or None
        onnxruntime execution providers (None: CPU).
    """

    def __init__(self, folder, int8=False, threads=None, providers=None):
        self.folder = pathlib.Path(folder)
        if not is_onnx_export(self.folder):
            raise OnnxModelError(
                f"{self.folder} is not an ONNX export (no {CONFIG_FILE}): "
                "write one with speechbrain-unipet export-onnx MODEL OUT"
            )
        with open(self.folder / CONFIG_FILE, encoding="utf-8") as f:
            self.config = json.load(f)
        name = self.config["model"]
        if int8:
            name = self.config.get("int8_model")
            if not name:
                raise OnnxModelError(
                    f"{self.folder} has no int8 model: export with --int8"
                )
        path = self.folder / name
        if not path.is_file():
            raise MissingFileError(f"{path} is missing: export again")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.sample_rate = int(self.config["sample_rate"])
        self.min_samples = int(self.config["min_samples"])
        rate = self.sample_rate
        self.chunk = None
        if self.config.get("max_chunk_seconds"):
            self.chunk = int(round(self.config["max_chunk_seconds"] * rate))
            overlap = int(round(self.config["chunk_overlap_seconds"] * rate))
            self.hop = self.chunk - overlap
        self.chunks_per_batch = int(self.config.get("chunks_per_batch", 4))
        self.calibrator = None
        if self.config.get("calibration"):
            self.calibrator = ScoreCalibrator.from_dict(
                self.config["calibration"],
                source=f"the calibration in {self.folder / CONFIG_FILE}",
            )

    def _run(self, signals):
        """One graph call on a padded batch of 1-D signals."""
        lengths = np.array([len(s) for s in signals], dtype=np.int64)
        wavs = np.zeros((len(signals), int(lengths.max())), np.float32)
        for row, signal in enumerate(signals):
            wavs[row, : len(signal)] = signal
        (out,) = self.session.run(None, {"wavs": wavs, "lengths": lengths})
        return out

    def embed_batch(self, signals, lengths=None):
        """Embeddings of several recordings, each as if alone.

        Arguments
        ---------
        signals : list of numpy.ndarray or numpy.ndarray
            1-D signals at ``sample_rate``, or a padded [B, S] array.
        lengths : sequence of int or None
            Valid samples of each row of a padded array.

        Returns
        -------
        numpy.ndarray
            [B, E] float32.

        Raises
        ------
        AudioError
            Naming the rows that are too short, damaged or silent.
        """
        if isinstance(signals, np.ndarray) and signals.ndim == 2:
            if lengths is None:
                lengths = [signals.shape[1]] * signals.shape[0]
            signals = [
                row[: int(n)] for row, n in zip(signals, lengths, strict=True)
            ]
        signals = [np.asarray(s, dtype=np.float32).reshape(-1) for s in signals]
        problems = {
            row: why
            for row, s in enumerate(signals)
            if (why := row_problem(s, self.min_samples)) is not None
        }
        if problems:
            raise AudioError(
                "cannot embed "
                + "; ".join(f"row {r}: {why}" for r, why in problems.items())
            )
        out = [None] * len(signals)
        short = [r for r, s in enumerate(signals) if not self._windowed(s)]
        if short:
            for row, emb in zip(
                short, self._run([signals[r] for r in short]), strict=True
            ):
                out[row] = emb
        for row, signal in enumerate(signals):
            if out[row] is None:
                out[row] = self._embed_windows(signal)
        return np.stack(out)

    def _windowed(self, signal):
        return self.chunk is not None and len(signal) > self.chunk

    def _embed_windows(self, signal):
        windows = [
            signal[s : s + self.chunk]
            for s in window_starts(len(signal), self.chunk, self.hop)
        ]
        groups = math.ceil(len(windows) / self.chunks_per_batch)
        parts = [
            self._run(
                windows[
                    g * self.chunks_per_batch : (g + 1) * self.chunks_per_batch
                ]
            )
            for g in range(groups)
        ]
        return np.concatenate(parts).mean(axis=0)

    def embed(self, signal):
        """The embedding [E] of one recording (1-D samples).

        Arguments
        ---------
        signal : numpy.ndarray

        Returns
        -------
        numpy.ndarray
        """
        return self.embed_batch([signal])[0]

    def load(self, path, start=0, stop=None):
        """Samples of an audio file (region) at the model's rate.

        Arguments
        ---------
        path : str or pathlib.Path
        start, stop : int
            Region in samples at the file's rate (``stop=None``: to the end).

        Returns
        -------
        numpy.ndarray
        """
        return load_numpy(path, self.sample_rate, start, stop)

    def embed_file(self, path, start=0, stop=None):
        """The embedding of an audio file (region); errors name the file.

        Arguments
        ---------
        path : str or pathlib.Path
        start, stop : int
            Region in samples at the file's rate.

        Returns
        -------
        numpy.ndarray
        """
        signal = self.load(path, start, stop)
        problem = row_problem(signal, self.min_samples)
        if problem is not None:
            raise AudioError(
                f"{path}: cannot give a speaker embedding: {problem}; give "
                "a recording with speech in it"
            )
        return self.embed(signal)

    def score(self, emb_a, emb_b):
        """Cosine score of two embeddings.

        Arguments
        ---------
        emb_a, emb_b : numpy.ndarray

        Returns
        -------
        float
        """
        a = np.asarray(emb_a, np.float64)
        b = np.asarray(emb_b, np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def default_threshold(self):
        """The decision threshold without an explicit one: the
        calibration's (its own, or the Bayes threshold at its decision
        prior), None without a calibration.

        Returns
        -------
        float or None
        """
        if self.calibrator is None:
            return None
        calibration = self.config["calibration"]
        if calibration.get("threshold") is not None:
            return float(calibration["threshold"])
        return bayes_threshold(calibration.get("decision_p_target", 0.01))

    def verify_files(self, path_a, path_b, threshold=None):
        """Same speaker? As the PyTorch ``verify_files`` answers: the
        cosine score, or the calibrated LLR where the export carries a
        calibration (then its threshold decides by default).

        Arguments
        ---------
        path_a, path_b : str
        threshold : float or None

        Returns
        -------
        dict
            ``score``, ``calibrated``, ``threshold``, ``same_speaker``
            (None without a threshold).
        """
        signals = [self.load(path) for path in (path_a, path_b)]
        for path, signal in zip((path_a, path_b), signals, strict=True):
            problem = row_problem(signal, self.min_samples)
            if problem is not None:
                raise AudioError(
                    f"{path}: cannot give a speaker embedding: {problem}; "
                    "give a recording with speech in it"
                )
        emb_a, emb_b = (self.embed(s) for s in signals)
        score = self.score(emb_a, emb_b)
        if self.calibrator is not None:
            features = pair_features(
                self.calibrator,
                [score],
                [np.linalg.norm(emb_a.astype(np.float64))],
                [np.linalg.norm(emb_b.astype(np.float64))],
                [len(signals[0]) / self.sample_rate],
                [len(signals[1]) / self.sample_rate],
            )
            score = float(self.calibrator(features)[0])
            if threshold is None:
                threshold = self.default_threshold()
        return {
            "score": score,
            "calibrated": self.calibrator is not None,
            "threshold": threshold,
            "same_speaker": None if threshold is None else score > threshold,
        }
