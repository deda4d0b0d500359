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

import contextlib
import hashlib
import json
import os
import pathlib
import types
import warnings

import torch
import torch.nn.functional as F
from speechbrain.integrations.huggingface.huggingface import (
    HFTransformersInterface,
)
from speechbrain.utils.logger import get_logger
from torch import nn

from speechbrain_unipet.utils.errors import MissingFileError, UserError
from speechbrain_unipet.utils.precision import grouped_conv_outside_cpu_autocast

logger = get_logger(__name__)

#: Transformer encoders ``SSLBackbone`` runs; ``wav2vec2-bert`` (W2V-BERT
#: 2.0, a Conformer) is ``w2v_bert.W2VBertBackbone``.
TRANSFORMER_MODEL_TYPES = ("wavlm", "hubert", "wav2vec2", "data2vec-audio")
SUPPORTED_MODEL_TYPES = (*TRANSFORMER_MODEL_TYPES, "wav2vec2-bert")


class SSLBackboneError(UserError, ValueError):
    """Raised when ``source`` is not a usable SSL speech encoder."""


def exporting():
    """Whether a graph exporter traces this call (``torch.onnx.export``).

    The eager code skips work by looking at the data (no padding: no mask);
    a traced graph must not depend on the example it was traced with, so it
    keeps the general, masked path for every input.
    """
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _check_local_source(source):
    """Clear errors for local folders that HF/SpeechBrain mis-handle."""
    path = pathlib.Path(str(source))
    if not path.exists():
        text = str(source)
        looks_local = text.startswith(("/", "./", "../", "~")) or (
            text.count("/") > 1
        )
        if looks_local:
            raise MissingFileError(
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


def _attend(attn, hidden_states, attention_mask, bias=None, prefix_kv=None):
    """SDPA self-attention with the module's q/k/v/out projections.

    Keys and values of ``prefix_kv`` (deep prompts, [B or 1, P, D]) go
    in front of the frames' own: the frames attend to the prompts, but no
    query, FFN or output is computed for prompt positions, whose outputs a
    prompted layer would throw away anyway.

    ``attention_mask`` is a bool [B, T] frame mask (True = valid), a 4-D
    mask prepared by HF (only when HF's own encoder calls the layer), or
    None; ``bias`` an additive [.., H, T, P + T] position bias (WavLM).
    """
    batch, length, dim = hidden_states.shape
    heads = attn.num_heads
    q = attn.q_proj(hidden_states)
    k = attn.k_proj(hidden_states)
    v = attn.v_proj(hidden_states)
    prefix = prefix_kv
    if prefix is not None:
        prefix_k, prefix_v = prefix
        k = torch.cat([prefix_k.to(k.dtype).expand(batch, -1, -1), k], 1)
        v = torch.cat([prefix_v.to(v.dtype).expand(batch, -1, -1), v], 1)
    q, k, v = (
        t.view(batch, -1, heads, dim // heads).transpose(1, 2)
        for t in (q, k, v)
    )
    mask = attention_mask
    if mask is not None and mask.dim() == 2:
        mask = mask.bool()
        if prefix is not None:
            mask = F.pad(mask, (prefix[0].shape[1], 0), value=True)
        mask = mask[:, None, None, :]
    elif mask is not None and prefix is not None:
        raise ValueError("prompt prefixes need a [batch, time] frame mask")
    if bias is not None:
        bias = bias.to(q.dtype)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        mask = bias
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=attn.dropout if attn.training else 0.0,
    )
    out = out.transpose(1, 2).reshape(batch, length, dim)
    return attn.out_proj(out)


def _wav2vec2_attention_forward(
    self,
    hidden_states,
    key_value_states=None,
    attention_mask=None,
    output_attentions=False,
    prefix_kv=None,
    **kwargs,
):
    """Drop-in ``forward`` of Wav2Vec2/HuBERT/Data2VecAudio attention.

    Self-attention only (as in these encoders); returns no attention
    weights. ``prefix_kv`` is injected by ``SSLBackbone.run_layer``; see
    ``_attend``.
    """
    if key_value_states is not None:
        raise ValueError("cross-attention is not used by SSL encoders")
    return _attend(self, hidden_states, attention_mask, None, prefix_kv), None


def _wavlm_attention_forward(
    self,
    hidden_states,
    attention_mask=None,
    position_bias=None,
    prefix_kv=None,
    **kwargs,
):
    """Drop-in ``forward`` of ``WavLMAttention``.

    The same gated relative position bias as HF, but the attention runs
    through ``F.scaled_dot_product_attention`` with the projection modules.
    HF's version feeds a transposed input and the raw q/k/v weights to
    ``F.multi_head_attention_forward`` with ``need_weights=True``: on CPU the
    projections then run as a batched matmul over an expanded weight (about
    a fifth of WavLM's forward time at 2 s), the attention weights are
    materialised, and wrappers of ``q_proj`` etc. are bypassed. The bias may
    be [B * H, T, S] (HF) or [H, T, S] (shared by the batch); with a prompt
    prefix S = P + T.
    """
    batch, length, _ = hidden_states.shape
    heads = self.num_heads
    if position_bias is None:
        position_bias = self.compute_bias(length, length)
    # WavLM's gate: from each query frame, per head (HF's equations).
    gate_in = hidden_states.view(batch, length, heads, -1).permute(0, 2, 1, 3)
    proj = self.gru_rel_pos_linear(gate_in)
    proj = proj.view(batch, heads, length, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
    gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
    bias = position_bias.reshape(-1, heads, length, position_bias.shape[-1])
    out = _attend(self, hidden_states, attention_mask, gate * bias, prefix_kv)
    return out, None, position_bias


_ATTENTION_FORWARDS = {
    "wavlm": _wavlm_attention_forward,
    "hubert": _wav2vec2_attention_forward,
    "wav2vec2": _wav2vec2_attention_forward,
    "data2vec-audio": _wav2vec2_attention_forward,
}


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
            with warnings.catch_warnings():
                # SpeechBrain calls a transformers method renamed in v5;
                # the warning is not actionable for our users.
                warnings.filterwarnings(
                    "ignore",
                    message=".*gradient_checkpointing_disable.*",
                    category=FutureWarning,
                )
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
        self._use_own_attention()

    def _use_own_attention(self):
        """Swaps each layer's attention ``forward`` for ``_attend`` (SDPA,
        prompt prefixes); the modules and their weights stay HF's."""
        forward = _ATTENTION_FORWARDS[self.model_type]
        for layer in self.layers:
            layer.attention.forward = types.MethodType(forward, layer.attention)

    def override_config(self, config):
        """Checks the model type and removes train-time randomness."""
        if config.model_type not in TRANSFORMER_MODEL_TYPES:
            if config.model_type in SUPPORTED_MODEL_TYPES:
                raise SSLBackboneError(
                    f"'{config.model_type}' models load with "
                    "speechbrain_unipet.backbones.load_backbone"
                )
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

    #: Config fields that define the architecture (what a PET state's
    #: shapes and placement depend on).
    ARCHITECTURE_FIELDS = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
        "feat_extract_norm",
        "do_stable_layer_norm",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "num_buckets",
        "max_bucket_distance",
    )

    def fingerprint(self):
        """A short hash of the architecture and of the CNN weights.

        The CNN feature encoder is frozen in every method (and untouched by
        a LoRA merge), so its weights identify the pretrained checkpoint: a
        PET state saved on one backbone can be refused on another of the
        same type and size.

        Returns
        -------
        str
            16 hex digits.
        """
        if getattr(self, "_fingerprint", None) is None:
            arch = {
                k: getattr(self.config, k, None)
                for k in self.ARCHITECTURE_FIELDS
            }
            digest = hashlib.sha256(
                json.dumps(arch, sort_keys=True, default=list).encode()
            )
            cnn = self.model.feature_extractor.state_dict()
            for name, tensor in sorted(cnn.items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

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

    # On CPU the CNN runs on groups of utterances whose first-layer output
    # stays below this size. glibc serves larger blocks with a fresh mmap
    # (and page faults) on every call, and blocks up to 32 MiB from its heap
    # once one was freed: at 4 x 2 s this makes the whole CNN ~25 % faster,
    # with identical numbers. None: one batched call.
    cpu_cnn_group_bytes = 16 * 2**20

    def extract_features(self, wav, sample_lengths=None):
        """CNN features [B, T, C].

        With padding, the first layer's GroupNorm (one group per channel,
        statistics over time) is computed on valid frames only, so padded
        batches match unpadded single inputs. On CPU, the batch is split as
        ``cpu_cnn_group_bytes`` says.
        """
        if exporting():  # one call: len() would fix the graph's batch size
            return self._extract_features(wav, sample_lengths)
        group = self._cpu_cnn_group(wav)
        if group >= len(wav):
            return self._extract_features(wav, sample_lengths)
        waves = wav.split(group)
        lengths = (
            [None] * len(waves)
            if sample_lengths is None
            else sample_lengths.split(group)
        )
        return torch.cat(
            [
                self._extract_features(w, n)
                for w, n in zip(waves, lengths, strict=True)
            ]
        )

    def _cpu_cnn_group(self, wav):
        """Utterances per CNN call (all of them off CPU or when disabled)."""
        if wav.device.type != "cpu" or not self.cpu_cnn_group_bytes:
            return len(wav)
        frames = (wav.shape[1] - self.config.conv_kernel[0]) // (
            self.config.conv_stride[0]
        ) + 1
        per_utterance = (
            self.config.conv_dim[0] * max(frames, 1) * wav.element_size()
        )
        return max(1, self.cpu_cnn_group_bytes // per_utterance)

    def _extract_features(self, wav, sample_lengths=None):
        conv_layers = self.model.feature_extractor.conv_layers
        x = wav[:, None]
        padded = sample_lengths is not None and (
            exporting() or bool((sample_lengths < wav.shape[1]).any())
        )
        first = conv_layers[0]
        if padded and isinstance(
            getattr(first, "layer_norm", None), nn.GroupNorm
        ):
            # Statistics in fp32 also under bf16/fp16 autocast, as torch's
            # own group_norm does there.
            x = first.conv(x)
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
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

    def features(self, wav, sample_lengths=None):
        """Waveforms -> projected CNN features and the frame mask.

        Normalisation and the CNN run without autograd (the CNN is frozen
        in every method); the feature projection follows the caller's
        grad mode (full fine-tuning trains it).

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S].
        sample_lengths : torch.Tensor or None
            Valid samples per waveform (None: no padding).

        Returns
        -------
        features : torch.Tensor
            [B, T, D].
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid frames; None when nothing is padded.
        """
        lengths = sample_lengths
        if lengths is None:
            lengths = torch.full(
                (wav.shape[0],), wav.shape[1], device=wav.device
            )
        with torch.no_grad():
            wav = self.preprocess(wav, lengths)
            feats = self.extract_features(wav, sample_lengths)
        frame_mask = None
        if sample_lengths is not None:
            frame_mask = lengths_to_mask(
                self.frame_lengths(sample_lengths), feats.shape[1]
            )
            if not exporting() and bool(frame_mask.all()):
                frame_mask = None
        return self.project(feats), frame_mask

    def encoder_input(self, x, frame_mask):
        """Positional convolution (+ LayerNorm for post-LN models).

        Arguments
        ---------
        x : torch.Tensor
            Projected features [B, T, D] (a shallow prompt's tokens
            first, if any).
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid positions (prompt tokens included).

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
                h = grouped_conv_outside_cpu_autocast(layer, h * keep)
            x = x + h.transpose(1, 2)
        else:
            x = x + grouped_conv_outside_cpu_autocast(pos, x)
        if not self.pre_ln:
            x = enc.layer_norm(x)
        return enc.dropout(x)

    def layer_context(self, x, frame_mask, prefix_length=0, input_tokens=0):
        """What every layer of one forward pass shares.

        Arguments
        ---------
        x : torch.Tensor
            The first layer's input [B, T, D].
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid positions.
        prefix_length : int
            Prompt tokens some layers get as an attention prefix (0: none).
        input_tokens : int
            Leading shallow-prompt tokens of ``x`` (unused: no module of a
            Transformer layer treats them apart).

        Returns
        -------
        dict
            ``mask`` (the frame mask, None without padding) and, for WavLM,
            ``bias``: the relative position bias [H, T, T] and
            ``prefix_bias`` [H, T, P + T], where the prompts sit at
            positions 0..P-1 before the frames, as if they were prepended to
            the sequence.
        """
        mask = frame_mask
        if mask is not None and not exporting() and bool(mask.all()):
            mask = None
        context = {"mask": mask}
        if self.model_type == "wavlm":
            attn = self.layers[0].attention
            length = x.shape[1] + prefix_length
            full = attn.compute_bias(length, length)[:, prefix_length:]
            full = full.contiguous()
            context["bias"] = full[:, :, prefix_length:].contiguous()
            if prefix_length:
                context["prefix_bias"] = full
        return context

    def prompt_projection_modules(self, index):
        """The modules prompt tokens meet in layer ``index`` on their way to
        keys and values: (LayerNorm before the projections, None for post-LN
        layers; key projection; value projection)."""
        layer = self.layers[index]
        norm = layer.layer_norm if self.pre_ln else None
        return norm, layer.attention.k_proj, layer.attention.v_proj

    def prefix_kv(self, index, prompts, scale=None):
        """Keys and values of prompt tokens for layer ``index``.

        Arguments
        ---------
        index : int
            The layer.
        prompts : torch.Tensor
            Prompt tokens [1, P, D], the layer's input at the prompt positions.
        scale : torch.Tensor or None
            Per-utterance factor [B] on the prompt tokens (UniPET's gate).

        Returns
        -------
        tuple
            Keys and values, [1 or B, P, D].
        """
        basis = self.prefix_kv_basis(index, prompts)
        return self.scale_prefix_kv(basis, scale)

    def prefix_kv_basis(self, index, prompts):
        """The part of ``prefix_kv(index, prompts, scale)`` that does not
        depend on the gate ``scale``: one projection of the prompts serves
        the whole batch, and is reused across forward passes at inference.

        The gate scales the prompts before the projections. A projection is
        affine, proj(s * p) = s * (proj(p) - proj(0)) + proj(0). A pre-LN
        layer normalises first, and its LayerNorm factors exactly too:
        LN(s * p) = c * z + beta, with z = gamma * (p - mean(p)) and
        c = s / sqrt(s^2 * var(p) + eps), per token. Either way, keys are
        ``factor * keys + keys_offset`` (``scale_prefix_kv``), which is
        what the literal computation gives (tested against it).

        Arguments
        ---------
        index : int
            The layer.
        prompts : torch.Tensor
            Prompt tokens [1, P, D].

        Returns
        -------
        dict
            ``keys``/``values`` [1, P, D], ``keys_offset``/``values_offset``
            [1, 1, D], and for pre-LN layers ``var`` [1, P, 1] and ``eps``.
        """
        norm, k_proj, v_proj = self.prompt_projection_modules(index)
        length = prompts.shape[1]
        zero = prompts.new_zeros(1, 1, prompts.shape[-1])
        basis = {}
        if norm is None:
            rows = torch.cat([prompts, zero], 1)
        else:
            var, mean = torch.var_mean(
                prompts, -1, unbiased=False, keepdim=True
            )
            centred = prompts - mean
            if norm.weight is not None:
                centred = centred * norm.weight.to(prompts.dtype)
            shift = zero if norm.bias is None else norm.bias.to(prompts.dtype)
            rows = torch.cat([centred, zero, shift.expand_as(zero)], 1)
            basis.update(var=var, eps=norm.eps)
        for name, projection in (("keys", k_proj), ("values", v_proj)):
            out = projection(rows)
            at_zero = out[:, length : length + 1]
            basis[name] = out[:, :length] - at_zero
            basis[f"{name}_offset"] = out[:, -1:]
        return basis

    @staticmethod
    def scale_prefix_kv(basis, scale=None):
        """``prefix_kv(index, p, scale)`` from ``prefix_kv_basis(index, p)``.

        Arguments
        ---------
        basis : dict
            From ``prefix_kv_basis``.
        scale : torch.Tensor or None
            Per-utterance factor [B] on the prompt tokens.

        Returns
        -------
        tuple
            Keys and values, [1 or B, P, D].
        """
        keys = basis["keys"]
        factor = None if scale is None else scale[:, None, None]
        if "var" in basis:
            var = basis["var"].float()
            if factor is None:
                factor = torch.rsqrt(var + basis["eps"])
            else:
                factor = factor.float()
                factor = factor * torch.rsqrt(factor**2 * var + basis["eps"])
        if factor is None:
            return keys + basis["keys_offset"], basis["values"] + basis[
                "values_offset"
            ]
        factor = factor.to(keys.dtype)
        return (
            torch.addcmul(basis["keys_offset"], factor, keys),
            torch.addcmul(basis["values_offset"], factor, basis["values"]),
        )

    def prefix_kv_parameters(self, index):
        """The tensors ``prefix_kv(index, prompts)`` depends on besides the
        prompts (LoRA factors of a wrapped projection included)."""
        modules = [
            m for m in self.prompt_projection_modules(index) if m is not None
        ]
        return [p for m in modules for p in m.parameters()]

    #: The hook places of a layer's feed-forward networks, in order (a
    #: Conformer has two).
    FFN_PLACES = ("feed_forward",)
    #: FFN place -> the place of its output projection (AdapterBias).
    FFN_INTERMEDIATE = {"feed_forward": "ffn_intermediate"}

    #: Where ``run_layer`` hooks can act: ``attention`` and ``feed_forward``
    #: (``fn(input, output) -> output`` on the sublayer, before its residual
    #: add) and ``ffn_intermediate`` (``fn(intermediate, output) -> output``
    #: on the FFN's output projection: its input is the activated
    #: intermediate representation).
    HOOK_PLACES = ("attention", "feed_forward", "ffn_intermediate")

    def _hook_target(self, index, place):
        """The HF module a hook place maps to in layer ``index``."""
        layer = self.layers[index]
        if place == "attention":
            return layer.attention
        if place == "feed_forward":
            return layer.feed_forward
        if place == "ffn_intermediate":
            return layer.feed_forward.output_dense
        raise ValueError(
            f"Unknown hook place '{place}'. Valid: {list(self.HOOK_PLACES)}"
        )

    @contextlib.contextmanager
    def layer_hooks(self, index, hooks=(), prefix_kv=None):
        """Installs ``hooks`` and a prompt prefix on layer ``index`` for the
        duration of a ``with`` block (one layer call).

        The hooks are registered per call, so a PET component's hook is a
        closure over that call's state (its gates, the frame mask) instead
        of reading module attributes, and HF's attention tuple convention
        stays here.

        Arguments
        ---------
        index : int
            The layer.
        hooks : sequence
            ``(place, fn)`` pairs, ``place`` one of ``HOOK_PLACES``.
        prefix_kv : tuple or None
            Prompt keys and values from ``prefix_kv`` for the attention.

        Example
        -------
        >>> from speechbrain_unipet.testing import tiny_ssl_folder
        >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "hubert")
        >>> bb = SSLBackbone(str(folder))
        >>> x = torch.randn(1, 5, bb.hidden_size)
        >>> ctx = bb.layer_context(x, None)
        >>> zero_ffn = ("feed_forward", lambda inp, out: out * 0)
        >>> with bb.layer_hooks(0, [zero_ffn]):
        ...     hooked = bb.run_layer(0, x, ctx)
        >>> torch.equal(hooked, bb.run_layer(0, x, ctx, hooks=[zero_ffn]))
        True
        >>> torch.equal(hooked, bb.run_layer(0, x, ctx))  # hooks removed
        False
        """
        handles = []
        try:
            for place, fn in hooks:
                module = self._hook_target(index, place)
                handles.append(
                    module.register_forward_hook(_sublayer_hook(place, fn))
                )
            if prefix_kv is not None:
                handles.append(
                    self.attention(index).register_forward_pre_hook(
                        _prefix_kv_hook(prefix_kv), with_kwargs=True
                    )
                )
            yield
        finally:
            for handle in handles:
                handle.remove()

    def run_layer(self, index, x, context, prefix_kv=None, hooks=()):
        """Runs Transformer layer ``index`` on ``x`` [B, T, D].

        Arguments
        ---------
        index : int
            The layer.
        x : torch.Tensor
            Layer input [B, T, D].
        context : dict
            From ``layer_context``.
        prefix_kv : tuple or None
            Prompt keys and values from ``prefix_kv``.
        hooks : sequence
            ``(place, fn)`` pairs for ``layer_hooks``.

        Returns
        -------
        torch.Tensor
            The layer output [B, T, D].
        """
        layer = self.layers[index]
        kwargs = {"attention_mask": context["mask"]}
        if self.model_type == "wavlm":
            key = "bias" if prefix_kv is None else "prefix_bias"
            kwargs["position_bias"] = context[key]
        with self.layer_hooks(index, hooks, prefix_kv):
            out = layer(x, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    # ------------------------------------------------------------- training
    def set_trainable(self, mode):
        """Freezes the backbone, then unfreezes what ``mode`` says.

        Arguments
        ---------
        mode : str
            ``none``; ``biases`` (BitFit: the biases of the Transformer and
            the feature projection); ``transformer`` (full fine-tuning: all
            of them; the CNN stays frozen). Parameters the hidden-state
            stack never reads stay frozen in every mode.
        """
        if mode not in ("none", "biases", "transformer"):
            raise ValueError(
                f"unknown unfreeze mode '{mode}': none | biases | transformer"
            )
        for param in self.parameters():
            param.requires_grad = False
        if mode != "none":
            for module in self.transformer_modules():
                for name, param in module.named_parameters():
                    if mode == "transformer" or name.endswith("bias"):
                        param.requires_grad = True
        for param in self.unused_transformer_parameters():
            param.requires_grad = False

    def save_pretrained(self, folder):
        """Writes the model (HF ``save_pretrained``) and a preprocessor
        config holding this backbone's waveform normalisation.

        Arguments
        ---------
        folder : str or pathlib.Path
            Destination folder (created).
        """
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.save_preprocessor_config(folder)

    def save_preprocessor_config(self, folder):
        """Writes ``preprocessor_config.json`` (16 kHz, mono, this backbone's
        ``do_normalize``) unless ``folder`` already has one.

        Arguments
        ---------
        folder : str or pathlib.Path
            Destination folder.
        """
        from transformers import Wav2Vec2FeatureExtractor

        if (pathlib.Path(folder) / "preprocessor_config.json").is_file():
            return
        Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            do_normalize=self.normalize_wav,
            return_attention_mask=True,
        ).save_pretrained(folder)


def _sublayer_hook(place, fn):
    """A torch forward hook calling ``fn(input, output)`` on plain tensors
    (HF's attention returns a tuple whose first item is the output)."""

    def _hook(module, args, output):
        if place == "attention":
            return (fn(args[0], output[0]),) + tuple(output[1:])
        return fn(args[0], output)

    return _hook


def _prefix_kv_hook(prefix_kv):
    """A forward pre-hook passing ``prefix_kv`` to our attention forward."""

    def _hook(module, args, kwargs):
        return args, {**kwargs, "prefix_kv": prefix_kv}

    return _hook
