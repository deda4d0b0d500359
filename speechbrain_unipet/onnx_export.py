"""ONNX export of the whole waveform-to-embedding model.

``speechbrain-unipet export-onnx MODEL OUT`` turns a training run or an
exported folder into ``OUT/embedding.onnx``: waveforms ``[B, S]`` (float32,
16 kHz) and valid sample counts ``[B]`` (int64) in, embeddings ``[B, E]``
out, batch and time dynamic. Each row of a padded batch gives that
recording's embedding alone (the eager eval path's result, to float
rounding), so a service may batch recordings of any lengths.

What makes the graph faithful (each a trap of tracing the eager code):

* The eager path skips masks when nothing is padded and runs ECAPA-TDNN one
  utterance at a time (a Python loop a tracer unrolls for the example's
  batch). The graph keeps every mask (``backbones.hf_ssl.exporting``) and
  runs the back-end on the padded batch: SpeechBrain's ECAPA convolutions
  pad "same" by *reflection*, which a padded row would see as zeros, so each
  such convolution first reflects the row's last valid frames into its
  padding (``ReflectAtLengths``); squeeze-excitation and attentive pooling
  take the lengths already. Layer-stack back-ends mask padded frames
  themselves.
* SpeechBrain's ``length_to_mask`` calls ``len()``, which fixes the batch
  size of a traced graph; ECAPA's calls use an equal mask built from shapes
  while exporting.
* Long recordings are windowed as ``speaker_embeddings`` windows them
  (``MAX_CHUNK_SECONDS`` windows overlapping by ``CHUNK_OVERLAP_SECONDS``,
  embeddings averaged) by the runtime, ``speechbrain_unipet.onnx``, not in
  the graph: ``onnx_config.json`` carries the window lengths, and recordings
  up to one window are a single graph call. Input checks (too short, NaN,
  silence) live there too.
* LoRA is merged into the attention weights before export (zero overhead).

The exporter is PyTorch's dynamo-based ``torch.onnx.export`` (the
TorchScript exporter bakes traced shapes in). Weights go to external data
(``embedding.onnx.data``) when the model exceeds protobuf's 2 GB.

Authors
 * speechbrain-unipet contributors 2026
"""

import contextlib
import json
import pathlib
import shutil
import tempfile
import warnings

import numpy as np
import speechbrain.lobes.models.ECAPA_TDNN as sb_ecapa
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.evaluation.reports import read_scores
from speechbrain_unipet.lobes.embedding import (
    CHUNK_OVERLAP_SECONDS,
    CHUNKS_PER_BATCH,
    MAX_CHUNK_SECONDS,
    minimum_samples,
    reflect_padded_convs,
    speaker_embeddings,
)
from speechbrain_unipet.onnx import OnnxSpeakerModel
from speechbrain_unipet.scoring.metrics import eer, threshold_for_far
from speechbrain_unipet.training.runs import open_model
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import atomic_write

logger = get_logger(__name__)

#: Files of an ONNX export folder.
ONNX_FILE = "embedding.onnx"
INT8_FILE = "embedding.int8.onnx"
CONFIG_FILE = "onnx_config.json"
CARD_FILE = "README.md"

#: The exporter's ops (``DFT``, ``LayerNormalization``...) need opset 17.
MIN_OPSET = 17
DEFAULT_OPSET = 18

#: Above this many bytes of weights, protobuf cannot hold the model file.
PROTOBUF_LIMIT = 2 * 1024**3

#: Lengths (seconds) the export checks the ONNX graph at against PyTorch.
PARITY_SECONDS = (0.5, 3.0)


class OnnxExportError(UserError, ValueError):
    """A model, option or folder the ONNX export cannot use."""


def require_onnx_packages(*names):
    """Imports the ONNX packages, or says how to install them.

    Arguments
    ---------
    *names : str
        Module names (default: ``onnx``, ``onnxscript``, ``onnxruntime``).

    Returns
    -------
    list
        The imported modules.

    Raises
    ------
    OnnxExportError
        When one is missing.

    Example
    -------
    >>> require_onnx_packages("json")[0].__name__
    'json'
    """
    import importlib

    names = names or ("onnx", "onnxscript", "onnxruntime")
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise OnnxExportError(
                f"the ONNX export needs the '{name}' package, which is not "
                "installed: pip install 'speechbrain-unipet[onnx]'"
            ) from None
    return modules


class ReflectAtLengths:
    """Forward pre-hook for a "same"-padded SpeechBrain ``Conv1d``
    (channels first, ``[B, C, T]``): frames after each row's last valid one
    take the values reflection padding would give that row alone, so valid
    outputs of a padded batch equal the row's own.

    Frame ``n - 1 + j`` of a row of ``n`` valid frames becomes frame
    ``n - 1 - j`` (clamped at 0; only the first ``kernel // 2 * dilation``
    padded frames reach a valid output).

    Arguments
    ---------
    frames : callable
        Returns the valid frame counts [B] of the batch being embedded, or
        None (then the input passes unchanged).

    Example
    -------
    >>> counts = torch.tensor([3, 5])
    >>> hook = ReflectAtLengths(lambda: counts)
    >>> x = torch.arange(10.0).view(2, 1, 5)
    >>> hook(None, (x,))[0]
    tensor([[[0., 1., 2., 1., 0.]],
    <BLANKLINE>
            [[5., 6., 7., 8., 9.]]])
    """

    def __init__(self, frames):
        self.frames = frames

    def __call__(self, module, args):
        counts = self.frames()
        if counts is None:
            return None
        x = args[0]
        steps = torch.arange(x.shape[-1], device=x.device).unsqueeze(0)
        last = counts.to(x.device).unsqueeze(1) - 1
        source = torch.where(steps <= last, steps, (2 * last - steps).clamp(0))
        index = source.unsqueeze(1).expand(-1, x.shape[1], -1)
        return (torch.gather(x, 2, index), *args[1:])


def _graph_length_to_mask(length, max_len=None, dtype=None, device=None):
    """SpeechBrain's ``length_to_mask`` without ``len()`` (export only)."""
    steps = torch.arange(max_len, device=length.device, dtype=length.dtype)
    mask = steps.unsqueeze(0) < length.unsqueeze(1)
    return mask.to(dtype=dtype or length.dtype, device=device or length.device)


@contextlib.contextmanager
def graph_friendly_speechbrain():
    """Within the block, SpeechBrain's ECAPA-TDNN builds its masks without
    ``len()`` (same values), so a traced graph keeps a dynamic batch."""
    original = sb_ecapa.length_to_mask
    sb_ecapa.length_to_mask = _graph_length_to_mask
    try:
        yield
    finally:
        sb_ecapa.length_to_mask = original


def is_ecapa(embedding_model):
    """Whether the back-end is SpeechBrain's ECAPA-TDNN.

    Arguments
    ---------
    embedding_model : torch.nn.Module

    Returns
    -------
    bool
    """
    return isinstance(embedding_model, sb_ecapa.ECAPA_TDNN)


class EmbeddingGraph(torch.nn.Module):
    """What ``embedding.onnx`` computes: ``(wavs [B, S], lengths [B]) ->
    embeddings [B, E]``, each row as ``speaker_embeddings`` gives that
    recording alone in eval mode (without windowing: recordings longer
    than one window are windowed by the caller).

    Arguments
    ---------
    encoder : PETEncoder
        LoRA merged, eval mode.
    normalizer : torch.nn.Module
        Sentence mean normalisation of the weighted sum.
    embedding_model : torch.nn.Module
        ECAPA-TDNN or a back-end with ``exact_with_padding``.

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> enc = PETEncoder(tiny_ssl_folder(getfixture("tmp_path")), "bitfit")
    >>> norm = InputNormalization(norm_type="sentence", std_norm=False)
    >>> ecapa = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=4)
    >>> graph = EmbeddingGraph(enc, norm, ecapa).eval()
    >>> wavs = torch.randn(2, 4000)
    >>> with torch.no_grad():
    ...     batch = graph(wavs, torch.tensor([4000, 2500]))
    ...     alone, _ = speaker_embeddings(enc, norm, ecapa, wavs[1:, :2500])
    >>> batch.shape, torch.allclose(batch[1], alone[0, 0], atol=1e-5)
    (torch.Size([2, 4]), True)
    """

    def __init__(self, encoder, normalizer, embedding_model):
        super().__init__()
        check_exportable_parts(encoder, embedding_model)
        self.encoder = encoder
        self.normalizer = normalizer
        self.embedding_model = embedding_model
        self._frames = None
        self._hooks = []
        if is_ecapa(embedding_model):
            hook = ReflectAtLengths(lambda: self._frames)
            for module in reflect_padded_convs(embedding_model):
                self._hooks.append(module.register_forward_pre_hook(hook))

    def remove_hooks(self):
        """Takes the padding hooks off the back-end (the graph is done)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def forward(self, wavs, lengths):
        """Embeddings of a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            [B, S] float32 at the model's sample rate.
        lengths : torch.Tensor
            [B] int64: valid samples of each row (at least
            ``minimum_samples``).

        Returns
        -------
        torch.Tensor
            [B, E].
        """
        total = wavs.shape[1]
        feats = self.encoder(wavs, lengths.to(torch.float64) / total)
        backbone = self.encoder.backbone
        frames = backbone.frame_lengths(lengths).clamp(min=1)
        steps = feats.shape[-2]
        if feats.dim() == 4:  # the layer stack, for a back-end masking it
            rel = frames.to(feats.dtype) / steps
            return self.embedding_model(feats, rel)[:, 0]
        # Half a frame short of the count: SpeechBrain's masks compare
        # ``arange(T) < lengths * T``, which rounding must not tip over.
        rel = (frames.to(feats.dtype) - 0.5) / steps
        feats = self.normalizer(feats, rel)
        self._frames = frames
        try:
            return self.embedding_model(feats, rel)[:, 0]
        finally:
            self._frames = None


def check_exportable_parts(encoder, embedding_model):
    """Refuses a model the graph could not reproduce.

    Arguments
    ---------
    encoder : PETEncoder
    embedding_model : torch.nn.Module

    Raises
    ------
    OnnxExportError
        For a back-end that is neither ECAPA-TDNN nor masks padded frames
        itself.
    """
    if not (
        is_ecapa(embedding_model)
        or getattr(embedding_model, "exact_with_padding", False)
    ):
        raise OnnxExportError(
            f"the back-end {type(embedding_model).__name__} cannot be "
            "exported: the graph embeds padded batches, which needs "
            "ECAPA-TDNN or a back-end with exact_with_padding (MHFA, "
            "CA-MHFA, MFA)"
        )


def check_destination(out_folder):
    """The output folder must be new or empty (nothing is overwritten).

    Arguments
    ---------
    out_folder : str or pathlib.Path

    Raises
    ------
    OnnxExportError
        When it is a file or a folder with files in it.

    Example
    -------
    >>> check_destination(getfixture("tmp_path") / "new")
    """
    out = pathlib.Path(out_folder)
    if out.exists() and not out.is_dir():
        raise OnnxExportError(f"{out} is a file: give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise OnnxExportError(
            f"{out} is not empty: give a new or empty folder (nothing is "
            "overwritten)"
        )


def _example_batch(sample_rate):
    """Two rows of different lengths: the traced graph keeps the masks."""
    gen = torch.Generator().manual_seed(0)
    wavs = torch.randn(2, int(1.2 * sample_rate), generator=gen) * 0.1
    lengths = torch.tensor([wavs.shape[1], int(0.7 * sample_rate)])
    return wavs, lengths


def _weight_bytes(module):
    return sum(
        t.numel() * t.element_size() for t in module.state_dict().values()
    )


def build_graph(model):
    """The export graph of an opened model, LoRA merged.

    Arguments
    ---------
    model : LoadedModel

    Returns
    -------
    EmbeddingGraph
    """
    encoder, normalizer, embedding_model = model.parts
    check_exportable_parts(encoder, embedding_model)
    with torch.no_grad():
        merged = sum(component.merge() for component in encoder.components)
    if merged:
        logger.info("LoRA merged into %d projections before export", merged)
    return EmbeddingGraph(encoder, normalizer, embedding_model).eval()


def export_graph(graph, path, sample_rate, opset=DEFAULT_OPSET):
    """Writes ``graph`` to ``path`` as ONNX, batch and time dynamic.

    Arguments
    ---------
    graph : EmbeddingGraph
    path : pathlib.Path
        The ``.onnx`` file (weights beside it, ``.data``, above 2 GB).
    sample_rate : int
    opset : int

    Returns
    -------
    bool
        Whether the weights went to external data.
    """
    batch = torch.export.Dim("batch", min=1)
    # The range the exporter proves the shapes for: from the fewest samples
    # that give an embedding (the runtime refuses shorter rows).
    encoder, embedding_model = graph.encoder, graph.embedding_model
    samples = torch.export.Dim(
        "samples", min=minimum_samples(encoder, embedding_model)
    )
    external = _weight_bytes(graph) >= PROTOBUF_LIMIT * 0.9
    wavs, lengths = _example_batch(sample_rate)
    with (
        torch.no_grad(),
        graph_friendly_speechbrain(),
        warnings.catch_warnings(),
    ):
        # Both inputs share the batch axis: the exporter says it keeps one
        # name for it.
        warnings.filterwarnings("ignore", message=".*axis name")
        torch.onnx.export(
            graph,
            (wavs, lengths),
            str(path),
            input_names=["wavs", "lengths"],
            output_names=["embeddings"],
            dynamic_shapes={
                "wavs": {0: batch, 1: samples},
                "lengths": {0: batch},
            },
            opset_version=opset,
            dynamo=True,
            external_data=external,
            verbose=False,
        )
    check_dynamic_inputs(path)
    return external


def check_dynamic_inputs(path):
    """Refuses a graph whose batch or time axis was fixed while tracing.

    Arguments
    ---------
    path : pathlib.Path
        An ONNX file.

    Raises
    ------
    OnnxExportError
        Naming the fixed axis.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        fixed = [i for i, d in enumerate(dims) if not d.dim_param]
        if fixed:
            raise OnnxExportError(
                f"the exported graph fixed axis {fixed} of '{value.name}' "
                "to the traced example's size: some code in the model "
                "turned a shape into a Python number (report this with the "
                "model's method and back-end)"
            )


def quantize_int8(source, target, external=False):
    """Dynamic int8 quantisation of the weights of MatMul/Gemm ops
    (onnxruntime's ``quantize_dynamic``; activations stay float).

    Arguments
    ---------
    source, target : pathlib.Path
        The float model and the file to write.
    external : bool
        Write the weights beside ``target`` (``.data``), as the source has
        them.
    """
    (quantization,) = require_onnx_packages("onnxruntime.quantization")
    quantization.quantize_dynamic(
        str(source),
        str(target),
        weight_type=quantization.QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"MatMulConstBOnly": True},
        use_external_data_format=external,
    )


def cosine_rows(a, b):
    """Cosine similarity of corresponding rows.

    Arguments
    ---------
    a, b : numpy.ndarray
        [B, E].

    Returns
    -------
    numpy.ndarray
        [B].

    Example
    -------
    >>> cosine_rows(np.eye(2), np.array([[1.0, 0.0], [1.0, 1.0]])).round(3)
    array([1.   , 0.707])
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    )


def parity_signals(sample_rate, seconds=PARITY_SECONDS, seed=0):
    """Test recordings: a voice-like signal of each length (seconds).

    Arguments
    ---------
    sample_rate : int
    seconds : sequence of float
    seed : int

    Returns
    -------
    list
        float32 arrays.

    Example
    -------
    >>> [len(s) for s in parity_signals(16000, (0.5, 1.0))]
    [8000, 16000]
    """
    rng = np.random.default_rng(seed)
    signals = []
    for length in seconds:
        t = np.arange(int(length * sample_rate)) / sample_rate
        f0 = 110 + 60 * rng.random()
        voice = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.random()) / k
            for k in range(1, 9)
        )
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
        breath = 0.02 * rng.standard_normal(t.size)
        signals.append((0.1 * envelope * voice + breath).astype(np.float32))
    return signals


def torch_embeddings(model, signals):
    """Each signal alone through the PyTorch eval path (windowed as it
    windows).

    Arguments
    ---------
    model : LoadedModel
    signals : list of numpy.ndarray

    Returns
    -------
    numpy.ndarray
        [N, E].
    """
    rows = []
    with torch.no_grad():
        for signal in signals:
            emb, _ = speaker_embeddings(
                *model.parts,
                torch.from_numpy(signal)[None],
                sample_rate=model.sample_rate,
                **model.chunking,
            )
            rows.append(emb.reshape(-1).numpy())
    return np.stack(rows)


def parity_report(model, runtime, signals):
    """Cosines of the ONNX runtime's embeddings to PyTorch's, alone and as
    one padded batch.

    Arguments
    ---------
    model : LoadedModel
    runtime : speechbrain_unipet.onnx.OnnxSpeakerModel
    signals : list of numpy.ndarray

    Returns
    -------
    dict
        ``seconds``, ``cosine_alone``, ``cosine_padded_batch`` (lists) and
        ``min_cosine``.
    """
    reference = torch_embeddings(model, signals)
    alone = np.stack([runtime.embed(s) for s in signals])
    batched = runtime.embed_batch(signals)
    report = {
        "seconds": [round(len(s) / model.sample_rate, 3) for s in signals],
        "cosine_alone": cosine_rows(alone, reference).round(6).tolist(),
        "cosine_padded_batch": cosine_rows(batched, reference)
        .round(6)
        .tolist(),
    }
    report["min_cosine"] = float(
        min(report["cosine_alone"] + report["cosine_padded_batch"])
    )
    return report


def onnx_config(model, opset, external, int8):
    """What the runtime needs besides the graph (``onnx_config.json``)."""
    encoder, _, embedding_model = model.parts
    chunking = {
        "max_chunk_seconds": MAX_CHUNK_SECONDS,
        "chunk_overlap_seconds": CHUNK_OVERLAP_SECONDS,
        **model.chunking,
    }
    config = {
        "format": "speechbrain-unipet-onnx/1",
        "model": ONNX_FILE,
        "int8_model": INT8_FILE if int8 else None,
        "external_data": external,
        "opset": opset,
        "sample_rate": model.sample_rate,
        "min_samples": minimum_samples(encoder, embedding_model),
        "chunks_per_batch": CHUNKS_PER_BATCH,
        **chunking,
        "source": str(model.model_id),
        "method": encoder.method.name,
        "backbone": encoder.backbone.model_type,
        "backend": type(embedding_model).__name__,
        "inputs": {
            "wavs": "float32 [batch, samples]",
            "lengths": "int64 [batch]",
        },
        "outputs": {"embeddings": "float32 [batch, embedding_dim]"},
    }
    thresholds = trial_thresholds(model)
    if thresholds:
        config["thresholds"] = thresholds
    calibration = getattr(model.hparams, "calibration", None)
    if isinstance(model.hparams, dict):
        calibration = model.hparams.get("calibration")
    if calibration:
        config["calibration"] = calibration
    return config


def trial_thresholds(model):
    """Cosine thresholds from a training run's verification scores
    (``scores.txt``: the EER point and 1 % false accepts), or None.

    Arguments
    ---------
    model : LoadedModel

    Returns
    -------
    dict or None
        ``trials``, ``eer``, ``eer_threshold``, ``far_1pct_threshold``,
        ``far_1pct_miss``.
    """
    if model.kind != "run":
        return None
    scores_file = pathlib.Path(str(model.model_id).split("#")[0]) / "scores.txt"
    if not scores_file.is_file():
        return None
    trials, scores = read_scores(scores_file)
    labels = np.array([t.label == 1 for t in trials])
    if labels.all() or not labels.any():
        return None
    rate, at = eer(scores[labels], scores[~labels])
    far = threshold_for_far(scores[~labels], 0.01, scores[labels])
    return {
        "trials": len(trials),
        "scores": str(scores_file),
        "eer": rate,
        "eer_threshold": at,
        "far_1pct_threshold": far.threshold,
        "far_1pct_miss": far.miss,
    }


def export_onnx(
    model_folder,
    out_folder,
    opset=DEFAULT_OPSET,
    int8=False,
    check=True,
    average_last=0,
):
    """Exports a trained model to an ONNX folder (see the module doc).

    Arguments
    ---------
    model_folder : str or pathlib.Path
        A training run or an exported model folder.
    out_folder : str or pathlib.Path
        New or empty folder.
    opset : int
        ONNX opset (at least ``MIN_OPSET``).
    int8 : bool
        Also write ``embedding.int8.onnx`` (dynamic int8 weights).
    check : bool
        Compare the ONNX runtime's embeddings with PyTorch's (0.5 s, 3 s,
        alone and as a padded batch) and store the figures.
    average_last : int
        For a training run: average its last N checkpoints (0: the best).

    Returns
    -------
    dict
        The written ``onnx_config.json``.
    """
    check_options(opset, out_folder)
    model = open_model(model_folder, "cpu", average_last)
    return write_onnx_folder(model, out_folder, opset, int8, check)


def check_options(opset, out_folder):
    """What ``export_onnx`` refuses before loading anything.

    Arguments
    ---------
    opset : int
    out_folder : str or pathlib.Path

    Raises
    ------
    OnnxExportError
        Opset below ``MIN_OPSET``, missing ONNX packages, a non-empty
        output folder.
    """
    if int(opset) < MIN_OPSET:
        raise OnnxExportError(
            f"opset {opset} is too low: the graph needs opset {MIN_OPSET} "
            f"or newer (LayerNormalization, DFT); the default is "
            f"{DEFAULT_OPSET}"
        )
    require_onnx_packages()
    check_destination(out_folder)


def write_onnx_folder(
    model, out_folder, opset=DEFAULT_OPSET, int8=False, check=True
):
    """Writes the ONNX folder of an opened model (``export_onnx`` after
    loading). The folder appears complete or not at all.

    Arguments
    ---------
    model : LoadedModel
        Its encoder's LoRA is merged in place.
    out_folder : str or pathlib.Path
        New or empty folder.
    opset : int
    int8 : bool
    check : bool

    Returns
    -------
    dict
        The written ``onnx_config.json``.
    """
    check_options(opset, out_folder)
    out = pathlib.Path(out_folder)
    graph = build_graph(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=".onnx-", dir=out.parent))
    try:
        external = export_graph(
            graph, work / ONNX_FILE, model.sample_rate, opset
        )
        if int8:
            quantize_int8(work / ONNX_FILE, work / INT8_FILE, external)
        config = onnx_config(model, opset, external, int8)
        (probe,) = parity_signals(model.sample_rate, (0.5,))
        config["embedding_dim"] = int(torch_embeddings(model, [probe]).shape[1])
        atomic_write(work / CONFIG_FILE, json.dumps(config, indent=2))
        if check:
            signals = parity_signals(model.sample_rate)
            config["parity"] = parity_report(
                model, OnnxSpeakerModel(work), signals
            )
            if int8:
                config["parity_int8"] = parity_report(
                    model, OnnxSpeakerModel(work, int8=True), signals
                )
            atomic_write(work / CONFIG_FILE, json.dumps(config, indent=2))
        atomic_write(work / CARD_FILE, model_card(config))
        out.mkdir(parents=True, exist_ok=True)
        for item in work.iterdir():
            shutil.move(str(item), out / item.name)
    finally:
        graph.remove_hooks()
        shutil.rmtree(work, ignore_errors=True)
    return config


def model_card(config):
    """The README of an ONNX folder: inputs, how to run it, parity."""
    lines = [
        "# Speaker embedding model (ONNX)",
        "",
        f"Exported by speechbrain-unipet from `{config['source']}`: "
        f"{config['backbone']} with {config['method']}, "
        f"{config['backend']} back-end; opset {config['opset']}.",
        "",
        "- `embedding.onnx`: `wavs` float32 [batch, samples] at "
        f"{config['sample_rate']} Hz and `lengths` int64 [batch] (valid "
        "samples of each row, at least "
        f"{config['min_samples']}) -> `embeddings` float32 [batch, dim].",
        "  Each row of a padded batch gives that recording's embedding alone.",
        f"- Recordings longer than {config['max_chunk_seconds']:g} s: "
        "average the embeddings of windows of that length overlapping by "
        f"{config['chunk_overlap_seconds']:g} s (the last ending at the "
        "end), as `speechbrain_unipet.onnx` does.",
        "",
        "```python",
        "from speechbrain_unipet.onnx import OnnxSpeakerModel",
        "model = OnnxSpeakerModel('THIS_FOLDER')",
        "print(model.verify_files('a.wav', 'b.wav'))",
        "```",
        "",
    ]
    for key, title in (("parity", "fp32"), ("parity_int8", "int8")):
        report = config.get(key)
        if report:
            lines.append(
                f"Parity with PyTorch ({title}): cosine "
                + ", ".join(
                    f"{c:.6f} at {s:g} s"
                    for s, c in zip(
                        report["seconds"], report["cosine_alone"], strict=True
                    )
                )
                + f"; padded batch min {min(report['cosine_padded_batch']):.6f}."
            )
    thresholds = config.get("thresholds")
    if thresholds:
        lines += [
            "",
            f"Cosine thresholds from {thresholds['trials']} trial scores of "
            f"the training run: EER {100 * thresholds['eer']:.2f} % at "
            f"{thresholds['eer_threshold']:.4f}; 1 % false accepts at "
            f"{thresholds['far_1pct_threshold']:.4f} (miss "
            f"{100 * thresholds['far_1pct_miss']:.2f} %).",
        ]
    calibration = config.get("calibration")
    if calibration:
        lines += [
            "",
            "Calibration (applied by `verify_files`): "
            f"threshold {calibration.get('threshold')}, decision prior "
            f"{calibration.get('decision_p_target')}.",
        ]
    return "\n".join(lines) + "\n"
