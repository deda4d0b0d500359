"""W2V-BERT 2.0 (HF ``Wav2Vec2BertModel``, a Conformer) as an SSL backbone.

What differs from the Transformer encoders of ``hf_ssl``:

* **Front-end**: no CNN. The SeamlessM4T feature extractor's Kaldi fbank
  (80 mel bins, 25 ms / 10 ms, povey window, 16-bit scale), normalised per
  mel bin over each utterance, then two frames stacked into one of 160
  values (20 ms). HF computes it in NumPy on the CPU, one utterance at a
  time, before the model; here it runs on the model's device from the
  waveforms with ``torchaudio.compliance.kaldi.fbank`` over each
  utterance's *valid* samples, so padding changes nothing (equal to HF's
  extractor to 1e-4: tested).
* **Layers**: Conformer blocks, run here sublayer by sublayer as HF's
  ``Wav2Vec2BertEncoderLayer`` does: half-step FFN1, self-attention with
  relative-key position embeddings, the convolution module, half-step FFN2,
  the final LayerNorm. Every sublayer is pre-LN, so deep prompts are
  normalised by the attention's LayerNorm before their key/value
  projections (``pre_ln`` is True).
* **Two FFNs per layer**: ``FFN_PLACES`` is ``("ffn1", "ffn2")``. Inner
  adapters go parallel to both by default (``inner_position``: ``ffn``,
  ``ffn1``, ``ffn2``, ``mhsa`` or ``both``); Houlsby adapters and
  AdapterBias act on the last FFN (FFN2), the one whose output the layer's
  final LayerNorm reads, as they act on the only FFN of a Transformer layer.
  An adapter parallel to an FFN is halved with it (the Macaron half-step).
* **Prompts and relative positions**: deep prompts are keys/values in front
  of the frames at positions ``-P .. -1`` (as if prepended), so frame ``t``
  sees prompt ``j`` at distance ``j - P - t``, clamped like any distance to
  ``[-left_max, right_max]`` (64 / 8 in W2V-BERT 2.0: beyond 64 frames all
  prompts share the farthest-left embedding). A shallow prompt's tokens are
  part of the sequence (positions ``0 .. P-1``). **The convolution module
  never sees prompts**: deep prompts only enter the attention, and a
  shallow prompt's tokens skip the convolution module (their residual
  passes through), so the causal depthwise convolution over frames is the
  pretrained one.

Authors
 * speechbrain-unipet contributors 2026
"""

import functools
import hashlib
import json
import pathlib
import types

import torch
import torch.nn.functional as F

from speechbrain_unipet.backbones.hf_ssl import (
    SSLBackbone,
    SSLBackboneError,
    exporting,
)
from speechbrain_unipet.utils.precision import grouped_conv_outside_cpu_autocast

#: The SeamlessM4T feature extractor's fbank: 25 ms frames every 10 ms.
FBANK_FRAME_SAMPLES = 400
FBANK_HOP_SAMPLES = 160
#: Fbank frames stacked into one model frame.
FBANK_STACK = 2
#: Fewest samples that give one model frame (two fbank frames, 35 ms).
MIN_SAMPLES = FBANK_FRAME_SAMPLES + (FBANK_STACK - 1) * FBANK_HOP_SAMPLES

#: Our projection names (``lora_targets``) -> W2V-BERT's attention modules.
PROJECTIONS = {
    "q_proj": "linear_q",
    "k_proj": "linear_k",
    "v_proj": "linear_v",
    "out_proj": "linear_out",
}


def fbank_frames(sample_lengths):
    """Model frames (stacked fbank frames) of waveforms of these lengths.

    Arguments
    ---------
    sample_lengths : torch.Tensor
        Samples per waveform.

    Returns
    -------
    torch.Tensor
        Frames per waveform (0 below ``MIN_SAMPLES``).

    Example
    -------
    >>> fbank_frames(torch.tensor([16000, 559, 560]))
    tensor([49,  0,  1])
    """
    n = sample_lengths.long()
    raw = torch.where(
        n >= FBANK_FRAME_SAMPLES,
        torch.div(
            n - FBANK_FRAME_SAMPLES, FBANK_HOP_SAMPLES, rounding_mode="floor"
        )
        + 1,
        torch.zeros_like(n),
    )
    return torch.div(raw, FBANK_STACK, rounding_mode="floor")


def seamless_fbank(wav, num_mel_bins=80, sample_rate=16000):
    """The SeamlessM4T / W2V-BERT input features of one waveform.

    Arguments
    ---------
    wav : torch.Tensor
        One waveform [S] in [-1, 1], at least ``MIN_SAMPLES`` long.
    num_mel_bins : int
        Mel bins (80 in W2V-BERT 2.0).
    sample_rate : int
        Its sample rate.

    Returns
    -------
    torch.Tensor
        [fbank_frames(S), num_mel_bins * 2], float32.

    Example
    -------
    >>> seamless_fbank(torch.randn(16000) * 0.1).shape
    torch.Size([49, 160])
    """
    import torchaudio.compliance.kaldi as kaldi

    if wav.shape[-1] < MIN_SAMPLES:
        raise ValueError(
            f"W2V-BERT needs at least {MIN_SAMPLES} samples (two 25 ms "
            f"fbank frames), got {wav.shape[-1]}"
        )
    with torch.autocast(wav.device.type, enabled=False):
        feats = kaldi.fbank(
            wav.float()[None] * 2**15,  # Kaldi's 16-bit scale, as HF
            num_mel_bins=num_mel_bins,
            sample_frequency=sample_rate,
            dither=0.0,
            window_type="povey",
            low_freq=20.0,
            high_freq=0.0,
            energy_floor=0.0,
        )
        # Per mel bin over the utterance, unbiased variance (HF's ddof=1).
        feats = (feats - feats.mean(0)) / torch.sqrt(
            feats.var(0, unbiased=True) + 1e-7
        )
        frames = feats.shape[0] // FBANK_STACK
        return feats[: frames * FBANK_STACK].reshape(
            frames, num_mel_bins * FBANK_STACK
        )


@functools.lru_cache(maxsize=4)
def fbank_constants(num_mel_bins=80, sample_rate=16000):
    """The Povey window [400] and the mel matrix [num_mel_bins, 257] of
    torchaudio's Kaldi fbank, for ``batched_seamless_fbank`` (computed
    once, outside any traced graph: exporters cannot translate the window
    factory).

    Arguments
    ---------
    num_mel_bins : int
    sample_rate : int

    Returns
    -------
    tuple of torch.Tensor

    Example
    -------
    >>> [tuple(t.shape) for t in fbank_constants()]
    [(400,), (80, 257)]
    """
    import torchaudio.compliance.kaldi as kaldi

    window = kaldi._feature_window_function(
        "povey", FBANK_FRAME_SAMPLES, 0.42, torch.device("cpu"), torch.float32
    )
    banks, _ = kaldi.get_mel_banks(
        num_mel_bins, 512, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0
    )
    return window, F.pad(banks.float(), (0, 1))


def batched_seamless_fbank(
    wav, sample_lengths, num_mel_bins=80, sample_rate=16000
):
    """``seamless_fbank`` of a padded batch in one pass of tensor ops, each
    row as its valid samples alone: what an exported graph computes (the
    eager path calls torchaudio's Kaldi fbank per utterance, a loop a
    tracer would unroll for one batch size).

    Written out because torchaudio's ``fbank`` takes one waveform; this is
    its computation with W2V-BERT's options (no dither, DC offset removed
    per frame, pre-emphasis 0.97, Povey window, 512-point power spectrum,
    torchaudio's own mel matrix and window, log floored at float32's
    epsilon), then the per-utterance normalisation over each row's valid
    frames and the stacking of frame pairs. Equal to ``seamless_fbank`` row
    by row (tested).

    Arguments
    ---------
    wav : torch.Tensor
        [B, S] in [-1, 1].
    sample_lengths : torch.Tensor
        [B] valid samples (at least ``MIN_SAMPLES``).
    num_mel_bins : int
    sample_rate : int

    Returns
    -------
    torch.Tensor
        [B, fbank_frames(S), num_mel_bins * 2]; frames past a row's
        ``fbank_frames`` are not meaningful.

    Example
    -------
    >>> wav = torch.randn(2, 16000) * 0.1
    >>> batch = batched_seamless_fbank(wav, torch.tensor([16000, 8000]))
    >>> alone = seamless_fbank(wav[1, :8000])
    >>> batch.shape, torch.allclose(batch[1, :24], alone, atol=1e-3)
    (torch.Size([2, 49, 160]), True)
    """
    x = wav.float() * 2**15
    total = x.shape[1]
    raw_frames = (total - FBANK_FRAME_SAMPLES) // FBANK_HOP_SAMPLES + 1
    index = torch.arange(raw_frames, device=x.device).unsqueeze(
        1
    ) * FBANK_HOP_SAMPLES + torch.arange(
        FBANK_FRAME_SAMPLES, device=x.device
    ).unsqueeze(0)
    frames = x[:, index]  # [B, F, 400]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - 0.97 * previous
    window, banks = fbank_constants(num_mel_bins, sample_rate)
    frames = frames * window.to(x.device)
    padded = 512  # the next power of two of the 400-sample frame
    spectrum = torch.view_as_real(torch.fft.rfft(frames, n=padded))
    power = spectrum.pow(2).sum(-1)  # [B, F, 257]
    banks = banks.to(x.device)
    feats = torch.matmul(power, banks.T)
    feats = torch.clamp(feats, min=torch.finfo(torch.float32).eps).log()
    valid = (
        sample_lengths.long() - FBANK_FRAME_SAMPLES
    ) // FBANK_HOP_SAMPLES + 1
    mask = (
        (
            torch.arange(raw_frames, device=x.device).unsqueeze(0)
            < valid.unsqueeze(1)
        )
        .to(feats.dtype)
        .unsqueeze(-1)
    )
    count = mask.sum(1, keepdim=True)
    mean = (feats * mask).sum(1, keepdim=True) / count
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / (count - 1)
    feats = (feats - mean) / torch.sqrt(var + 1e-7)
    stacked = raw_frames // FBANK_STACK
    return feats[:, : stacked * FBANK_STACK].reshape(
        feats.shape[0], stacked, num_mel_bins * FBANK_STACK
    )


def _relative_key_bias(attn, q, prefix_length):
    """HF's relative-key position scores ``q . E[clamp(k_pos - q_pos)]``,
    scaled, for queries at 0..T-1 and keys at -P..T-1 ([B, H, T, P + T]).

    Only ``left + right + 1`` distances exist, so the query is multiplied
    with that table once and the scores gathered, instead of HF's einsum
    over a [T, P + T, head] embedding tensor (same numbers)."""
    length = q.shape[2]
    left, right = (
        attn.left_max_position_embeddings,
        (attn.right_max_position_embeddings),
    )
    query_pos = torch.arange(length, device=q.device)[:, None]
    key_pos = torch.arange(-prefix_length, length, device=q.device)[None]
    index = (key_pos - query_pos).clamp(-left, right) + left
    table = attn.distance_embedding.weight.to(q.dtype)
    scores = (q @ table.T) * attn.scaling  # [B, H, T, left + right + 1]
    return scores.gather(-1, index.expand(*scores.shape[:2], -1, -1))


def _conformer_attention_forward(
    self,
    hidden_states,
    attention_mask=None,
    relative_position_embeddings=None,
    prefix_kv=None,
    **kwargs,
):
    """Drop-in ``forward`` of ``Wav2Vec2BertSelfAttention``: SDPA through
    the projection modules (so LoRA-wrapped ones are used), relative-key
    positions, optional prompt prefixes (``prefix_kv``, see the module
    docstring). ``attention_mask`` is a bool [B, T] frame mask (ours), a
    4-D mask prepared by HF's own encoder loop, or None."""
    batch, length, dim = hidden_states.shape
    heads, head = self.num_heads, self.head_size
    q = self.linear_q(hidden_states)
    k = self.linear_k(hidden_states)
    v = self.linear_v(hidden_states)
    prefix = 0
    if prefix_kv is not None:
        prefix_k, prefix_v = prefix_kv
        prefix = prefix_k.shape[1]
        k = torch.cat([prefix_k.to(k.dtype).expand(batch, -1, -1), k], 1)
        v = torch.cat([prefix_v.to(v.dtype).expand(batch, -1, -1), v], 1)
    q, k, v = (
        t.view(batch, -1, heads, head).transpose(1, 2) for t in (q, k, v)
    )
    bias = None
    if self.position_embeddings_type == "relative_key":
        bias = _relative_key_bias(self, q, prefix)
    mask = attention_mask
    if mask is not None and mask.dim() == 2:
        mask = F.pad(mask.bool(), (prefix, 0), value=True)[:, None, None, :]
    elif mask is not None and prefix:
        raise ValueError("prompt prefixes need a [batch, time] frame mask")
    if mask is not None and mask.dtype != torch.bool:
        # HF's eager path: an additive float mask.
        bias = mask.to(q.dtype) if bias is None else bias + mask.to(q.dtype)
        mask = None
    if bias is not None and mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
        mask = None
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=bias if bias is not None else mask,
        dropout_p=self.dropout.p if self.training else 0.0,
        scale=self.scaling,
    )
    out = out.transpose(1, 2).reshape(batch, length, dim)
    return self.linear_out(out), None


def _convolution_module(module, x, frame_mask):
    """HF's ``Wav2Vec2BertConvolutionModule.forward`` with the depthwise
    convolution in fp32 under CPU autocast (``precision``)."""
    h = module.layer_norm(x)
    if frame_mask is not None:
        h = h.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
    h = module.glu(module.pointwise_conv1(h.transpose(1, 2)))
    # Causal: the whole kernel looks back, so padding at the end never
    # reaches a valid frame.
    h = F.pad(h, (module.depthwise_conv.kernel_size[0] - 1, 0))
    h = grouped_conv_outside_cpu_autocast(module.depthwise_conv, h)
    h = module.depthwise_layer_norm(h.transpose(1, 2)).transpose(1, 2)
    h = module.pointwise_conv2(module.activation(h))
    return module.dropout(h).transpose(1, 2)


class W2VBertBackbone(SSLBackbone):
    """W2V-BERT 2.0 (``facebook/w2v-bert-2.0``) run layer by layer, with
    the same public interface as ``SSLBackbone`` (see the module
    docstring for what differs).

    Arguments
    ---------
    source : str
        HuggingFace hub id or local folder (``config.json`` + weights).
    save_path : str
        Where hub downloads are cached (SpeechBrain convention).
    normalize_wav : bool or None
        Zero-mean unit-variance normalisation of each waveform before the
        fbank; ``None`` reads ``do_normalize`` from the preprocessor config
        (W2V-BERT's has none: off).

    Example
    -------
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "wav2vec2-bert")
    >>> bb = W2VBertBackbone(str(folder))
    >>> x, mask = bb.features(torch.randn(2, 8000), torch.tensor([8000, 5000]))
    >>> x.shape, mask.sum(1).tolist()
    (torch.Size([2, 24, 32]), [24, 14])
    """

    SUPPORTED = ("wav2vec2-bert",)
    FFN_PLACES = ("ffn1", "ffn2")
    FFN_INTERMEDIATE = {
        "ffn1": "ffn1_intermediate",
        "ffn2": "ffn2_intermediate",
    }
    HOOK_PLACES = (
        "attention",
        "ffn1",
        "ffn2",
        "ffn1_intermediate",
        "ffn2_intermediate",
    )
    ARCHITECTURE_FIELDS = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "feature_projection_input_dim",
        "conv_depthwise_kernel_size",
        "position_embeddings_type",
        "left_max_position_embeddings",
        "right_max_position_embeddings",
    )

    def __init__(self, source, save_path="", normalize_wav=None):
        super().__init__(source, save_path, normalize_wav)
        # Every Conformer sublayer is pre-LN (prompts are normalised).
        self.pre_ln = True
        position = self.config.position_embeddings_type
        if position not in ("relative_key", None):
            raise SSLBackboneError(
                f"W2V-BERT with position_embeddings_type={position!r} is not "
                "supported (facebook/w2v-bert-2.0 uses 'relative_key')"
            )
        self.num_mel_bins = (
            self.config.feature_projection_input_dim // FBANK_STACK
        )
        fbank_constants(self.num_mel_bins, 16000)  # now, not inside an export
        # Before anything trains: full fine-tuning trains every tensor
        # that could identify the checkpoint later.
        self.fingerprint()

    def _use_own_attention(self):
        for layer in self.layers:
            layer.self_attn.forward = types.MethodType(
                _conformer_attention_forward, layer.self_attn
            )

    def override_config(self, config):
        """Checks the model type and removes train-time randomness."""
        if config.model_type not in self.SUPPORTED:
            raise SSLBackboneError(
                f"'{getattr(config, '_name_or_path', '?')}' is a "
                f"'{config.model_type}' model, not W2V-BERT"
            )
        config.layerdrop = 0.0
        config.apply_spec_augment = False
        return config

    # ------------------------------------------------------------ structure
    def attention(self, index):
        """Self-attention module of layer ``index``."""
        return self.layers[index].self_attn

    def feed_forward(self, index):
        """The last feed-forward module (FFN2) of layer ``index``."""
        return self.layers[index].ffn2

    def attention_projection(self, index, name):
        """``q_proj``, ``k_proj``, ``v_proj`` or ``out_proj`` of a layer
        (W2V-BERT's ``linear_q``, ``linear_k``, ``linear_v``,
        ``linear_out``)."""
        if name not in PROJECTIONS:
            raise ValueError(
                f"Unknown attention projection '{name}' in lora_targets. "
                f"Valid: {list(PROJECTIONS)}"
            )
        return getattr(self.attention(index), PROJECTIONS[name])

    def unused_transformer_parameters(self):
        """None: every encoder tensor feeds the hidden-state stack."""
        return []

    def fingerprint(self):
        """A short hash of the architecture and of the pretrained feature
        projection and first convolution module (computed when the backbone
        is loaded, before anything trains; W2V-BERT has no frozen CNN to
        hash).

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
            # Modules no PET method rewrites in the weights it exports
            # (merged LoRA rewrites the attention projections).
            modules = (
                self.model.feature_projection,
                self.layers[0].conv_module,
            )
            for module in modules:
                for name, tensor in sorted(module.state_dict().items()):
                    digest.update(name.encode())
                    digest.update(
                        tensor.detach().float().cpu().numpy().tobytes()
                    )
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    # --------------------------------------------------------------- stages
    def frame_lengths(self, sample_lengths):
        """Model frames for each waveform length (in samples)."""
        return fbank_frames(sample_lengths)

    def extract_features(self, wav, sample_lengths=None):
        """Fbank features [B, T, 160] of each utterance's valid samples,
        zero-padded."""
        if exporting():
            if sample_lengths is None:
                sample_lengths = torch.full(
                    (wav.shape[0],), wav.shape[1], device=wav.device
                )
            return batched_seamless_fbank(
                wav, sample_lengths, self.num_mel_bins
            ).to(wav.dtype)
        lengths = (
            sample_lengths.tolist()
            if sample_lengths is not None
            else [wav.shape[1]] * len(wav)
        )
        short = [n for n in lengths if n < MIN_SAMPLES]
        if short:
            raise ValueError(
                f"W2V-BERT needs at least {MIN_SAMPLES} samples (35 ms) per "
                f"utterance; got {short[0]}"
            )
        feats = [
            seamless_fbank(w[:n], self.num_mel_bins)
            for w, n in zip(wav, lengths, strict=True)
        ]
        total = int(fbank_frames(torch.tensor(wav.shape[1])))
        out = wav.new_zeros(len(feats), total, feats[0].shape[-1])
        for row, f in enumerate(feats):
            out[row, : f.shape[0]] = f.to(out.dtype)
        return out

    def encoder_input(self, x, frame_mask):
        """The first layer's input (HF's ``hidden_states[0]``): padded
        positions zeroed, as HF's encoder does.

        Arguments
        ---------
        x : torch.Tensor
            Projected features [B, T, D] (a shallow prompt's tokens first).
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid positions.

        Returns
        -------
        torch.Tensor
        """
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
        return self.model.encoder.dropout(x)

    def layer_context(self, x, frame_mask, prefix_length=0, input_tokens=0):
        """What every layer of one forward pass shares.

        Arguments
        ---------
        x : torch.Tensor
            The first layer's input [B, T, D].
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid positions (input tokens included).
        prefix_length : int
            Unused (relative positions are computed per layer).
        input_tokens : int
            Leading shallow-prompt tokens, which skip the convolution
            module.

        Returns
        -------
        dict
            ``mask`` (None without padding), ``conv_mask`` (the frames'
            part) and ``input_tokens``.
        """
        mask = frame_mask
        if mask is not None and not exporting() and bool(mask.all()):
            mask = None
        return {
            "mask": mask,
            "conv_mask": None if mask is None else mask[:, input_tokens:],
            "input_tokens": int(input_tokens),
        }

    def prompt_projection_modules(self, index):
        """(the attention's LayerNorm, key projection, value projection) of
        layer ``index``: prompts are normalised like the frames."""
        attn = self.layers[index].self_attn
        return (
            self.layers[index].self_attn_layer_norm,
            attn.linear_k,
            attn.linear_v,
        )

    def _hook_target(self, index, place):
        layer = self.layers[index]
        targets = {
            "attention": layer.self_attn,
            "ffn1": layer.ffn1,
            "ffn2": layer.ffn2,
            "ffn1_intermediate": layer.ffn1.output_dense,
            "ffn2_intermediate": layer.ffn2.output_dense,
        }
        if place not in targets:
            raise ValueError(
                f"Unknown hook place '{place}' on W2V-BERT. Valid: "
                f"{list(self.HOOK_PLACES)}"
            )
        return targets[place]

    def run_layer(self, index, x, context, prefix_kv=None, hooks=()):
        """Runs Conformer layer ``index`` on ``x`` [B, T, D] (HF's
        ``Wav2Vec2BertEncoderLayer.forward``, sublayer by sublayer).

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
        tokens = context["input_tokens"]
        with self.layer_hooks(index, hooks, prefix_kv):
            x = layer.ffn1(layer.ffn1_layer_norm(x)) * 0.5 + x
            attended, _ = layer.self_attn(
                layer.self_attn_layer_norm(x), attention_mask=context["mask"]
            )
            x = layer.self_attn_dropout(attended) + x
            conv = _convolution_module(
                layer.conv_module, x[:, tokens:], context["conv_mask"]
            )
            if tokens:
                conv = F.pad(conv, (0, 0, tokens, 0))
            x = x + conv
            x = layer.ffn2(layer.ffn2_layer_norm(x)) * 0.5 + x
            return layer.final_layer_norm(x)

    def save_preprocessor_config(self, folder):
        """Writes the SeamlessM4T feature extractor's
        ``preprocessor_config.json`` unless ``folder`` has one.

        Arguments
        ---------
        folder : str or pathlib.Path
            Destination folder.
        """
        from transformers import SeamlessM4TFeatureExtractor

        if (pathlib.Path(folder) / "preprocessor_config.json").is_file():
            return
        SeamlessM4TFeatureExtractor(
            feature_size=self.num_mel_bins,
            num_mel_bins=self.num_mel_bins,
            sampling_rate=16000,
            stride=FBANK_STACK,
        ).save_pretrained(folder)
