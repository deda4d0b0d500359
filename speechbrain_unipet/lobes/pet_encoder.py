"""PETEncoder: a parameter-efficiently tunable SSL speech encoder lobe.

The encoder only orchestrates: it loads and freezes the backbone, attaches
the method's PET components, runs them and mixes the hidden states with
learnable softmax weights. What a component does lives in the component
(``speechbrain_unipet.pet.component``), how several combine layer by layer
in ``pet.attached``, the HuggingFace calls in ``speechbrain_unipet.backbones``
and the PET file format in ``pet.state``.

Authors
 * speechbrain-unipet contributors 2026
"""

from typing import NamedTuple

import torch
from torch import nn

from speechbrain_unipet.backbones import lengths_to_mask, load_backbone
from speechbrain_unipet.lobes.layer_mix import weighted_layer_sum
from speechbrain_unipet.lobes.lengths import sample_lengths
from speechbrain_unipet.pet.attached import AttachedComponents
from speechbrain_unipet.pet.methods import get_method, option_values
from speechbrain_unipet.pet.state import PETStateMixin


class EncoderOutput(NamedTuple):
    """What ``PETEncoder.hidden_states`` returns.

    Arguments
    ---------
    hiddens : list
        The L+1 hidden states [B, T, D] (after hidden-state components).
    frame_mask : torch.Tensor or None
        Bool [B, T], True on valid frames (None: nothing padded).
    gates : dict
        UniPET gate values: branch -> [B, gated layers or L+1] (detached).
    """

    hiddens: list
    frame_mask: object
    gates: dict


class PETEncoder(PETStateMixin, nn.Module):
    """HF SSL encoder (WavLM / HuBERT / wav2vec 2.0 / data2vec-audio) with a
    PET method inserted, returning the layer-weighted sum of hidden states.

    The backbone is frozen except what the method unfreezes; the CNN
    feature encoder runs without autograd. When no trainable tensor sits
    inside the Transformer (``frozen``, ``inter_adapter``), the whole
    backbone runs without autograd. Methods and their option defaults:
    ``speechbrain_unipet.pet.PET_METHODS``.

    Arguments
    ---------
    source : str or None
        HuggingFace hub id or local folder of the SSL model. ``None`` defers
        loading to the first ``load_pet_file`` (exported folders).
    method : str
        A key of ``PET_METHODS``.
    save_path : str
        Cache folder for hub downloads (SpeechBrain convention).
    output_all_hiddens : bool
        Return all hidden states [L+1, B, T, D] instead of their learnable
        softmax-weighted sum [B, T, D] (the layer weights then do not train).
    normalize_wav : bool or None
        Per-utterance waveform normalisation; ``None`` follows the model's
        preprocessor config.
    gradient_checkpointing : bool
        Recompute each Transformer layer in backward (non-reentrant, so it
        works with DDP and frozen inputs) to save activation memory.
    options : dict or None
        Method options by name (``adapter_dim``, ``prompt_length``...); an
        option left out or ``None`` takes the method's default.

    Example
    -------
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "wavlm")
    >>> enc = PETEncoder(folder, method="unipet", options={"adapter_dim": 8})
    >>> enc(torch.randn(2, 4000), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 49, 32])
    >>> trainable, total = enc.count_parameters()
    >>> 0 < trainable < total
    True
    """

    def __init__(
        self,
        source,
        method="unipet",
        save_path="",
        output_all_hiddens=False,
        normalize_wav=None,
        gradient_checkpointing=False,
        options=None,
    ):
        super().__init__()
        self.method = get_method(method)
        # Validated now (before any model is loaded), used at attach time.
        self.component_options = self.method.component_options(options)
        self.options = option_values(self.component_options)
        self.output_all_hiddens = output_all_hiddens
        self.gradient_checkpointing = gradient_checkpointing
        self._save_path = save_path
        self._normalize_wav = normalize_wav
        self.pet = nn.ModuleDict()
        self.components = []
        self.source = None
        self.backbone = None
        if source is not None:
            self.attach_backbone(source)

    def attach_backbone(self, source):
        """Loads the SSL model from ``source`` and builds the components.

        Called by the constructor, or later when the encoder was built with
        ``source=None`` (exported models whose backbone sits next to the PET
        checkpoint; see ``load_pet_file``).

        Arguments
        ---------
        source : str or pathlib.Path
            HuggingFace hub id or local model folder.
        """
        if self.backbone is not None:
            raise RuntimeError("PETEncoder already has a backbone")
        self.source = str(source)
        self.backbone = load_backbone(
            self.source, self._save_path, self._normalize_wav
        )
        self.num_layers = self.backbone.num_layers
        self.hidden_size = self.backbone.hidden_size
        # Before the components: the tensors they create (LoRA factors in
        # backbone modules too) are trainable.
        self.backbone.set_trainable(self.method.unfreeze)
        self.components = AttachedComponents(
            self.backbone, self.component_options, self.pet
        )
        self.layer_weights = nn.Parameter(
            torch.zeros(self.num_layers + 1),
            requires_grad=not self.output_all_hiddens,
        )
        self.train(self.training)

    def set_output_all_hiddens(self, enabled=True):
        """Returns all hidden states ``[L+1, B, T, D]`` (``enabled``) or
        their weighted sum, as the constructor's ``output_all_hiddens``;
        the layer weights train only for the weighted sum. Used when the
        speaker back-end reads the layer stack itself.

        Arguments
        ---------
        enabled : bool
            Return all hidden states.
        """
        self.output_all_hiddens = bool(enabled)
        if self.backbone is not None:
            self.layer_weights.requires_grad_(not self.output_all_hiddens)

    @property
    def grad_through_backbone(self):
        """Whether autograd runs through the Transformer stack."""
        return self.components.needs_backbone_grad or any(
            p.requires_grad for p in self.backbone.parameters()
        )

    def train(self, mode=True):
        """Frozen parts stay in eval mode (no dropout); PET modules, and the
        Transformer under full fine-tuning, follow ``mode``.

        Arguments
        ---------
        mode : bool
            Training mode.

        Returns
        -------
        PETEncoder
        """
        super().train(mode)
        for component in self.components:
            component.train(mode)
        if self.backbone is not None and self.method.unfreeze == "transformer":
            for module in self.backbone.transformer_modules():
                module.train(mode)
        return self

    def forward(self, wav, wav_lens=None, return_gates=False):
        """Encodes a batch of waveforms.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S] (16 kHz).
        wav_lens : torch.Tensor or None
            Relative lengths in [0, 1] (SpeechBrain convention).
        return_gates : bool
            Also return the UniPET gate values (see ``EncoderOutput``).

        Returns
        -------
        torch.Tensor
            [B, T, D] weighted sum, or [L+1, B, T, D] with
            ``output_all_hiddens``. Padded frames are zero. With
            ``return_gates``, a pair (that tensor, gates).
        """
        hiddens, frame_mask, gates = self.hidden_states(wav, wav_lens)
        out = torch.stack(hiddens)
        if not self.output_all_hiddens:
            out = weighted_layer_sum(out, self.layer_weights)
        if frame_mask is not None:
            out = out * frame_mask.unsqueeze(-1).to(out.dtype)
        return (out, gates) if return_gates else out

    def frame_mask(self, wav, wav_lens=None):
        """Bool [B, T] mask of valid output frames (None if no padding).

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor or None
            Relative lengths.

        Returns
        -------
        torch.Tensor or None
        """
        if wav_lens is None:
            return None
        frames = self.backbone.frame_lengths(sample_lengths(wav, wav_lens))
        total = self.backbone.frame_lengths(
            torch.tensor([wav.shape[1]], device=wav.device)
        )
        return lengths_to_mask(frames, int(total[0]))

    def hidden_states(self, wav, wav_lens=None):
        """All L+1 hidden states, the frame mask and the gate values.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S].
        wav_lens : torch.Tensor or None
            Relative lengths.

        Returns
        -------
        EncoderOutput
        """
        if self.backbone is None:
            raise RuntimeError(
                "PETEncoder has no backbone yet: give `source`, or load a PET "
                "checkpoint that has a backbone/ folder next to it."
            )
        if wav.dim() != 2:
            raise ValueError(
                f"PETEncoder expects waveforms [batch, samples], got shape "
                f"{tuple(wav.shape)}"
            )
        samples = None if wav_lens is None else sample_lengths(wav, wav_lens)
        use_grad = torch.is_grad_enabled() and self.grad_through_backbone
        with torch.set_grad_enabled(use_grad):
            hiddens, frame_mask, gates = self.components.layer_stack(
                wav, samples, self.gradient_checkpointing and self.training
            )
        hiddens, stack_gates = self.components.process_hiddens(
            hiddens, frame_mask
        )
        gates.update({k: v.detach() for k, v in stack_gates.items()})
        return EncoderOutput(hiddens, frame_mask, gates)

    # ------------------------------------------------------------ utilities
    def count_parameters(self):
        """Returns ``(trainable, total)`` parameter counts.

        Returns
        -------
        tuple
        """
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def merge_lora(self):
        """Folds LoRA updates into the attention weights (zero overhead).

        Returns
        -------
        int
            The number of projections merged.
        """
        merged = sum(component.merge() for component in self.components)
        if not merged:
            raise ValueError(
                f"merge_lora: method '{self.method.name}' has no LoRA to merge"
            )
        return merged
