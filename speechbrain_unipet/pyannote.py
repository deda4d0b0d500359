"""Our speaker models as the embedding model of pyannote.audio 4's speaker
verification and diarization pipelines.

pyannote.audio 4.0.7 cannot load SpeechBrain models beside SpeechBrain
1.1.2: for a name with "speechbrain" in it, it calls
``EncoderClassifier.from_hparams(..., token=..., huggingface_cache_dir=...,
revision=...)``, keywords SpeechBrain 1.1.2 passes on to the class, which
fails (``TypeError: ... unexpected keyword argument 'token'``). Any other
name or object goes to pyannote's own ``Model`` route, which takes a
``pyannote.audio.Model`` instance as it is. So ``PyannoteEmbedding`` is such
a ``Model``: it loads a training run, an exported folder or an ONNX folder
(``export-onnx``; then onnxruntime embeds) and gives pyannote what it reads:

* ``audio.sample_rate`` (the model's rate) and ``dimension``;
* ``forward(waveforms [B, 1, S], weights=None)``: embeddings [B, D]. Frame
  weights (pyannote's speaker masks, any frame rate) select samples as
  pyannote's SpeechBrain route does: stretched to the samples (nearest),
  kept above 0.5, the kept samples of a row joined. A row left with fewer
  than ``min_num_samples`` samples gives NaN (pyannote skips those);
* a batch where *no* row is long enough raises ``ValueError``, so pyannote's
  search for the shortest input (``min_num_samples``, which catches any
  exception for its own models) ends at ``min_num_samples``: the fewest
  samples that give an embedding (``lobes.embedding.minimum_samples``).

Usage::

    from pyannote.audio.pipelines import SpeakerDiarization
    from speechbrain_unipet.pyannote import PyannoteEmbedding

    pipeline = SpeakerDiarization(
        segmentation="pyannote/segmentation-3.0",
        embedding=PyannoteEmbedding("my_model"),
    )

Needs ``pip install 'speechbrain-unipet[pyannote]'``.

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np
import torch
import torch.nn.functional as F

from speechbrain_unipet.lobes.embedding import (
    minimum_samples,
    speaker_embeddings,
)
from speechbrain_unipet.onnx import OnnxSpeakerModel, is_onnx_export
from speechbrain_unipet.training.runs import open_model
from speechbrain_unipet.utils.errors import UserError

try:
    from pyannote.audio import Model
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "speechbrain_unipet.pyannote needs pyannote.audio 4: "
        "pip install 'speechbrain-unipet[pyannote]'"
    ) from err


class PyannoteEmbedding(Model):
    """A speaker model of this package as a ``pyannote.audio.Model``.

    Arguments
    ---------
    folder : str or pathlib.Path
        A training run, an exported model or an ONNX folder.
    int8 : bool
        ONNX folders: run the int8 model.
    average_last : int
        Training runs: average the last N checkpoints (0: the best).
    """

    def __init__(self, folder, int8=False, average_last=0):
        runtime, parts = None, None
        if is_onnx_export(folder):
            runtime = OnnxSpeakerModel(folder, int8=int8)
            rate = runtime.sample_rate
            min_samples = runtime.min_samples
            dimension = int(runtime.config["embedding_dim"])
        else:
            model = open_model(folder, "cpu", average_last)
            rate = model.sample_rate
            min_samples = minimum_samples(*model.parts[::2])
            parts = torch.nn.ModuleList(model.parts).eval()
            with torch.no_grad():
                probe, _ = speaker_embeddings(
                    *parts, torch.randn(1, rate) * 0.1, sample_rate=rate
                )
            dimension = int(probe.shape[-1])
        super().__init__(sample_rate=rate, num_channels=1)
        self.source = str(folder)
        self.runtime = runtime
        self.parts = parts
        self.min_num_samples = int(min_samples)
        self._dimension = dimension

    @property
    def dimension(self):
        """Embedding size."""
        return self._dimension

    def train(self, mode=True):
        """Always eval mode: this model embeds, it does not train.

        Arguments
        ---------
        mode : bool
            Ignored.

        Returns
        -------
        PyannoteEmbedding
        """
        return super().train(False)

    def selected(self, waveforms, weights=None):
        """The samples of each row that count (see the module doc).

        Arguments
        ---------
        waveforms : torch.Tensor
            [B, 1, S].
        weights : torch.Tensor or None
            [B, F] frame weights.

        Returns
        -------
        list of torch.Tensor
            1-D signals.
        """
        if waveforms.dim() != 3 or waveforms.shape[1] != 1:
            raise UserError(
                "PyannoteEmbedding takes mono waveforms [batch, 1, samples], "
                f"got shape {tuple(waveforms.shape)}"
            )
        rows = waveforms[:, 0].float()
        if weights is None:
            return list(rows)
        keep = (
            F.interpolate(
                weights.float().unsqueeze(1), size=rows.shape[1], mode="nearest"
            ).squeeze(1)
            > 0.5
        )
        return [row[mask] for row, mask in zip(rows, keep, strict=True)]

    def forward(self, waveforms, weights=None):
        """Embeddings of a batch (NaN rows where too few samples count).

        Arguments
        ---------
        waveforms : torch.Tensor
            [B, 1, S] at ``audio.sample_rate``.
        weights : torch.Tensor or None
            [B, F] frame weights (pyannote's masks).

        Returns
        -------
        torch.Tensor
            [B, dimension], float32, on the waveforms' device.
        """
        signals = self.selected(waveforms, weights)
        good = [
            i for i, s in enumerate(signals) if len(s) >= self.min_num_samples
        ]
        if not good:
            raise ValueError(
                f"no row has the {self.min_num_samples} samples that give "
                "an embedding"
            )
        out = torch.full(
            (len(signals), self.dimension),
            float("nan"),
            device=waveforms.device,
        )
        chosen = [signals[i] for i in good]
        if self.runtime is not None:
            embeddings = self.runtime.embed_batch(
                [s.detach().cpu().numpy() for s in chosen]
            )
            out[good] = torch.from_numpy(np.asarray(embeddings)).to(out.device)
            return out
        lengths = torch.tensor([len(s) for s in chosen])
        wavs = torch.zeros(len(chosen), int(lengths.max()))
        for row, signal in enumerate(chosen):
            wavs[row, : len(signal)] = signal.cpu()
        device = next(self.parts.parameters()).device
        with torch.no_grad():
            embeddings, _ = speaker_embeddings(
                *self.parts,
                wavs.to(device),
                (lengths / lengths.max()).to(device),
                sample_rate=self.audio.sample_rate,
            )
        out[good] = embeddings.reshape(len(chosen), -1).float().to(out.device)
        return out
