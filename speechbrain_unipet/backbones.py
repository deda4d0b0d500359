"""The one place that knows HuggingFace SSL encoder internals.

``SSLBackbone`` loads WavLM, HuBERT, wav2vec 2.0 or data2vec-audio (post-LN
base and pre-LN "stable layer norm" variants) through SpeechBrain's
``HFTransformersInterface`` (hub id cached under ``save_path`` or a local
folder) and runs the model *step by step* instead of calling its
``forward``. Owning the layer loop is what lets PET methods insert prompts
between layers, keep the sequence length and WavLM's relative position
bias consistent, and return every hidden state without HF's layerdrop or
output-capturing hooks (pitfalls 2 and 23).

Padding is handled so that a padded batch gives, on its valid frames, the
same result as each utterance alone: the first CNN layer's GroupNorm (base
models) uses statistics over valid samples only, waveform normalisation is
per utterance, and data2vec's stacked positional convolutions re-zero
padded frames between layers.

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import os
import pathlib
import types

import torch
import torch.nn.functional as F
from speechbrain.integrations.huggingface.huggingface import (
    HFTransformersInterface,
)
from speechbrain.utils.logger import get_logger
from torch import nn

logger = get_logger(__name__)

SUPPORTED_MODEL_TYPES = ("wavlm", "hubert", "wav2vec2", "data2vec-audio")


class SSLBackboneError(ValueError):
    """Raised when ``source`` is not a usable SSL speech encoder."""


def _check_local_source(source):
    """Clear errors for local folders that HF/SpeechBrain mis-handle."""
    path = pathlib.Path(str(source))
    if not path.exists():
        text = str(source)
        looks_local = text.startswith(("/", "./", "../", "~")) or (
            text.count("/") > 1
        )
        if looks_local:
            raise FileNotFoundError(
                f"SSL source folder '{source}' does not exist. Give a "
                "HuggingFace hub id (e.g. microsoft/wavlm-base-plus) or a "
                "local folder holding config.json and model weights."
            )
        return
    if path.is_file():
        raise SSLBackboneError(
            f"SSL source '{source}' is a file; give the folder that holds "
            "config.json and the model weights."
        )
    files = os.listdir(path)
    if "config.json" not in files:
        raise SSLBackboneError(
            f"SSL source folder '{source}' has no config.json, so it is not "
            "a HuggingFace model folder. Save one with "
            "model.save_pretrained(folder)."
        )
    if not any(f.endswith((".safetensors", ".bin")) for f in files):
        # SpeechBrain would fall back to a *.ckpt and silently load random
        # weights for WavLM/HuBERT lobes (pitfall 11).
        raise SSLBackboneError(
            f"SSL source folder '{source}' has config.json but no "
            "model.safetensors / pytorch_model.bin weights."
        )


def _read_do_normalize(source, save_path):
    """``do_normalize`` from the model's preprocessor config, if any."""
    path = pathlib.Path(str(source)) / "preprocessor_config.json"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("do_normalize", False))
    if pathlib.Path(str(source)).is_dir():
        return False
    try:
        from transformers import AutoFeatureExtractor

        fe = AutoFeatureExtractor.from_pretrained(source, cache_dir=save_path)
        return bool(getattr(fe, "do_normalize", False))
    except Exception:  # noqa: BLE001 -- an absent preprocessor is common
        logger.warning(
            "No preprocessor config for %s; waveforms are not normalised "
            "(set normalize_wav explicitly to change this).",
            source,
        )
        return False


def _wavlm_sdpa_self_attention(
    self, hidden_states, attention_mask, gated_position_bias
):
    """Drop-in for ``WavLMAttention.torch_multi_head_self_attention``.

    HF's version feeds a transposed (non-contiguous) input and the raw
    q/k/v weights to ``F.multi_head_attention_forward`` with
    ``need_weights=True``: on CPU the projections then run as a batched
    matmul over an expanded weight (about a fifth of WavLM's forward time
    at 2 s), the attention weights are materialised and averaged, and
    wrappers of ``q_proj`` etc. are bypassed. This computes the same
    ``softmax(q k^T / sqrt(d) + gated_bias)`` with the projection modules and
    ``F.scaled_dot_product_attention``; it returns no attention weights.
    """
    batch, length, dim = hidden_states.shape
    heads = self.num_heads
    shape = (batch, length, heads, dim // heads)
    q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
    k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
    v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
    bias = gated_position_bias.view(batch, heads, length, length).to(q.dtype)
    if attention_mask is not None:
        keys = attention_mask.ne(1)[:, None, None, :]
        bias = bias.masked_fill(keys, float("-inf"))
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=bias,
        dropout_p=self.dropout if self.training else 0.0,
    )
    out = out.transpose(1, 2).reshape(batch, length, dim)
    return self.out_proj(out), None


def conv_output_lengths(lengths, kernel, stride):
    """Frames produced by an unpadded conv over ``lengths`` samples."""
    return torch.div(lengths - kernel, stride, rounding_mode="floor") + 1


def lengths_to_mask(lengths, max_len):
    """Bool mask [B, max_len], True on the first ``lengths[b]`` steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


class SSLBackbone(HFTransformersInterface):
    """A HuggingFace SSL speech encoder, run layer by layer.

    The config is overridden so that nothing is random at train time:
    ``layerdrop=0``, no SpecAugment-style masking. The model itself stays in
    ``eval()`` whatever ``.train()`` is called with; the encoder switches on
    dropout only where weights train.

    Arguments
    ---------
    source : str
        HuggingFace hub id or local folder (``config.json`` + weights).
    save_path : str
        Where hub downloads are cached (SpeechBrain convention).
    normalize_wav : bool or None
        Zero-mean unit-variance normalisation of each waveform over its valid
        samples; ``None`` reads ``do_normalize`` from the preprocessor config.
    """

    def __init__(self, source, save_path="", normalize_wav=None):
        _check_local_source(source)
        save_path = str(save_path or "")
        try:
            super().__init__(source, save_path=save_path, freeze=False)
        except SSLBackboneError:
            raise
        except (OSError, ValueError) as err:
            raise SSLBackboneError(
                f"Could not load the SSL encoder '{source}': {err}\n"
                "Offline? Give a local folder made with save_pretrained, or "
                "a hub id already downloaded under save_path."
            ) from err
        self.model.eval()
        self.source = str(source)
        if normalize_wav is None:
            normalize_wav = _read_do_normalize(source, save_path)
        self.normalize_wav = bool(normalize_wav)
        self.model_type = self.config.model_type
        self.pre_ln = bool(getattr(self.config, "do_stable_layer_norm", False))
        self.hidden_size = self.config.hidden_size
        self.num_layers = self.config.num_hidden_layers
        self.intermediate_size = self.config.intermediate_size
        if self.model_type == "wavlm":
            self._use_sdpa_attention()

    def _use_sdpa_attention(self):
        for layer in self.layers:
            attn = layer.attention
            if not hasattr(type(attn), "torch_multi_head_self_attention"):
                logger.warning(
                    "This transformers version has no "
                    "WavLMAttention.torch_multi_head_self_attention; WavLM "
                    "keeps its own attention (slower on CPU)."
                )
                return
            attn.torch_multi_head_self_attention = types.MethodType(
                _wavlm_sdpa_self_attention, attn
            )

    def override_config(self, config):
        """Checks the model type and removes train-time randomness."""
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise SSLBackboneError(
                f"'{getattr(config, '_name_or_path', '?')}' is a "
                f"'{config.model_type}' model, not a supported SSL speech "
                f"encoder. Supported model types: {list(SUPPORTED_MODEL_TYPES)}"
            )
        config.layerdrop = 0.0
        # No time/feature masking; ``masked_spec_embed`` is still loaded
        # (so checkpoints load cleanly) but stays frozen and unused.
        config.apply_spec_augment = False
        return config

    def train(self, mode=True):
        """Keeps the HF model in eval mode (dropout is the encoder's call)."""
        super().train(mode)
        self.model.eval()
        return self

    # ------------------------------------------------------------ structure
    @property
    def encoder(self):
        """The HF encoder (positional conv, layers, norms)."""
        return self.model.encoder

    @property
    def layers(self):
        """The Transformer layers, an ``nn.ModuleList``."""
        return self.model.encoder.layers

    def attention(self, index):
        """Self-attention module of layer ``index``."""
        return self.layers[index].attention

    def feed_forward(self, index):
        """Feed-forward module of layer ``index``."""
        return self.layers[index].feed_forward

    def attention_projection(self, index, name):
        """``q_proj``, ``k_proj``, ``v_proj`` or ``out_proj`` of a layer."""
        valid = ("q_proj", "k_proj", "v_proj", "out_proj")
        if name not in valid:
            raise ValueError(
                f"Unknown attention projection '{name}' in lora_targets. "
                f"Valid: {list(valid)}"
            )
        return getattr(self.attention(index), name)

    def transformer_modules(self):
        """Modules that full fine-tuning trains (CNN excluded)."""
        return [self.model.feature_projection, self.model.encoder]

    def unused_transformer_parameters(self):
        """Parameters the hidden-state stack never uses.

        For pre-LN models the encoder's final ``layer_norm`` only feeds
        ``last_hidden_state``, which the layer mixture does not read
        (pitfall 23); training it would be a DDP unused parameter.
        """
        if self.pre_ln:
            return list(self.model.encoder.layer_norm.parameters())
        return []

    # -------------------------------------------------------------- lengths
    def frame_lengths(self, sample_lengths):
        """Number of CNN frames for each waveform length (in samples)."""
        lengths = sample_lengths
        convs = zip(
            self.config.conv_kernel, self.config.conv_stride, strict=True
        )
        for k, s in convs:
            lengths = conv_output_lengths(lengths, k, s)
        return lengths

    # --------------------------------------------------------------- stages
    def preprocess(self, wav, sample_lengths):
        """Per-utterance waveform normalisation over valid samples."""
        if not self.normalize_wav:
            return wav
        mask = lengths_to_mask(sample_lengths, wav.shape[1]).to(wav.dtype)
        count = mask.sum(1, keepdim=True).clamp(min=1.0)
        mean = (wav * mask).sum(1, keepdim=True) / count
        var = (((wav - mean) * mask) ** 2).sum(1, keepdim=True) / count
        return (wav - mean) / torch.sqrt(var + 1e-7) * mask

    def extract_features(self, wav, sample_lengths=None):
        """CNN features [B, T, C].

        With padding, the first layer's GroupNorm (one group per channel,
        statistics over time) is computed on valid frames only, so padded
        batches match unpadded single inputs.
        """
        conv_layers = self.model.feature_extractor.conv_layers
        x = wav[:, None]
        padded = sample_lengths is not None and bool(
            (sample_lengths < wav.shape[1]).any()
        )
        first = conv_layers[0]
        if padded and isinstance(
            getattr(first, "layer_norm", None), nn.GroupNorm
        ):
            x = first.conv(x)
            lengths = conv_output_lengths(
                sample_lengths,
                self.config.conv_kernel[0],
                self.config.conv_stride[0],
            )
            mask = lengths_to_mask(lengths, x.shape[-1]).unsqueeze(1)
            mask = mask.to(x.dtype)
            count = mask.sum(-1, keepdim=True).clamp(min=1.0)
            mean = (x * mask).sum(-1, keepdim=True) / count
            var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
            norm = first.layer_norm
            x = (x - mean) / torch.sqrt(var + norm.eps)
            x = x * norm.weight[:, None] + norm.bias[:, None]
            x = first.activation(x)
            rest = conv_layers[1:]
        else:
            rest = conv_layers
        for layer in rest:
            x = layer(x)
        return x.transpose(1, 2)

    def project(self, features):
        """Feature projection (LayerNorm + Linear) to the model dimension."""
        out = self.model.feature_projection(features)
        return out[0] if isinstance(out, tuple) else out

    def encoder_input(self, x, frame_mask, prefix_length=0):
        """Positional convolution (+ LayerNorm for post-LN models).

        Arguments
        ---------
        x : torch.Tensor
            Projected features [B, T, D] (possibly with prompt positions
            first).
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid frames (prompt positions included).
        prefix_length : int
            Unused here; kept for symmetry with ``run_layer``.

        Returns
        -------
        torch.Tensor
            The input of the first layer, i.e. HF's ``hidden_states[0]``.
        """
        enc = self.model.encoder
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
        pos = enc.pos_conv_embed
        if hasattr(pos, "layers") and frame_mask is not None:
            # data2vec-audio: several conv layers; re-zero padding between
            # them so that it cannot leak into valid frames.
            h = x.transpose(1, 2)
            keep = frame_mask.unsqueeze(1).to(h.dtype)
            for layer in pos.layers:
                h = layer(h * keep)
            x = x + h.transpose(1, 2)
        else:
            x = x + pos(x)
        if not self.pre_ln:
            x = enc.layer_norm(x)
        return enc.dropout(x)

    def initial_state(self, x, index):
        """Layer state for a sequence whose length changed before ``index``.

        WavLM computes its relative position bias in layer 0 and hands it
        on; if prompts change the length after layer 0, the bias is
        recomputed here with layer 0's bucket embedding.
        """
        if self.model_type != "wavlm" or index == 0:
            return None
        attn = self.layers[0].attention
        batch, length = x.shape[0], x.shape[1]
        bias = attn.compute_bias(length, length)
        return (
            bias.unsqueeze(0)
            .repeat(batch, 1, 1, 1)
            .view(batch * attn.num_heads, length, length)
        )

    def layer_mask(self, x, frame_mask):
        """The attention mask in the form this model's layers expect."""
        if frame_mask is None or bool(frame_mask.all()):
            return None
        if self.model_type == "wavlm":
            return frame_mask  # used as key_padding_mask = mask.ne(1)
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.model.config,
            inputs_embeds=x,
            attention_mask=frame_mask,
        )

    def run_layer(self, index, x, mask, state=None):
        """Runs Transformer layer ``index``.

        ``state`` carries WavLM's relative position bias, computed by the
        first layer for the current (constant) sequence length.
        """
        layer = self.layers[index]
        if self.model_type == "wavlm":
            kwargs = {"attention_mask": mask, "position_bias": state}
            if not self.pre_ln:
                kwargs["index"] = index
            x, state = layer(x, **kwargs)
            return x, state
        return layer(x, attention_mask=mask), None
