"""Speaker-embedding back-ends that read the whole hidden-state stack of an
SSL encoder instead of one layer-weighted sum.

All three take what ``PETEncoder(..., output_all_hiddens=True)`` returns,
the stacked hidden states ``[L+1, B, T, D]`` (layer-major, padded frames
zero), with SpeechBrain relative lengths, and return speaker embeddings
``[B, 1, lin_neurons]`` as SpeechBrain's ``ECAPA_TDNN`` does:

* ``MHFA``: multi-head factorized attentive pooling (Peng et al., SLT 2022,
  arXiv 2210.01273): keys and values are two learnable layer-weighted sums,
  compressed; each head attends over time with a logit read from the keys.
* ``CAMHFA``: context-aware MHFA (Peng et al., ICASSP 2025, arXiv
  2409.15234): each head's logit reads a window of ``context`` neighbouring
  key frames (a convolution whose kernels are the grouped queries).
* ``LayerAdapterMFA``: a small adapter on every hidden state, the adapted
  layers concatenated (multi-layer feature aggregation) and pooled by
  attentive statistics (WeSpeaker's ``W2VBert_Adapter_MFA``).

Every pooling over time ignores padded frames (softmax logits set to
``-inf``, statistics over valid frames only, the context window of
``CAMHFA`` sees zeros there as the convolution's own zero padding), so that
in eval mode a padded batch gives each utterance's own embedding
(``exact_with_padding``). A row has ``round(lengths[b] * T)`` valid frames,
clamped to [1, T] (``frame_mask``).

The lengths must be relative *frame* lengths: the waveform's relative
lengths can be one frame off the encoder's, whose CNN frame count is not
proportional to the samples (``round(0.3 * 49) = 15`` frames where the CNN
gives 14), and the back-end would then count a zeroed frame as valid. From
the encoder: ``relative_lengths(encoder.frame_mask(wav, wav_lens))``.

Authors
 * speechbrain-unipet contributors 2026
"""

import numbers

import torch
from torch import nn

from speechbrain_unipet.backbones import lengths_to_mask
from speechbrain_unipet.utils.precision import grouped_conv_outside_cpu_autocast


def valid_frames(lengths, frames):
    """Valid frames per row from SpeechBrain relative lengths.

    ``round(lengths * frames)`` in float64 (as ``PETEncoder`` rounds sample
    lengths), clamped to [1, frames]: a row always keeps one frame, so that
    no softmax over time runs over nothing but ``-inf``.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in [0, 1], shape [B].
    frames : int
        Frames T of the padded batch.

    Returns
    -------
    torch.Tensor
        Long [B].

    Example
    -------
    >>> valid_frames(torch.tensor([1.0, 0.44, 0.0]), 10)
    tensor([10,  4,  1])
    """
    counts = torch.round(lengths.to(torch.float64) * frames).long()
    return counts.clamp(min=1, max=frames)


def frame_mask(lengths, frames, device=None):
    """Bool mask [B, T] of valid frames (``valid_frames``), or None.

    Arguments
    ---------
    lengths : torch.Tensor or None
        Relative lengths in [0, 1], shape [B]; None: nothing padded.
    frames : int
        Frames T of the padded batch.
    device : torch.device or None
        Device of the mask (default: that of ``lengths``).

    Returns
    -------
    torch.Tensor or None
        True on valid frames; None when ``lengths`` is None.

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    if lengths is None:
        return None
    counts = valid_frames(lengths.to(device), frames)
    # (Not SpeechBrain's length_to_mask: its len() call would fix the batch
    # size of an exported graph.)
    return lengths_to_mask(counts, frames)


def relative_lengths(mask):
    """Relative frame lengths [B] of a frame mask, the inverse of
    ``frame_mask``: what to give the back-ends with the encoder's
    hidden states (``relative_lengths(encoder.frame_mask(wav, wav_lens))``).

    Arguments
    ---------
    mask : torch.Tensor or None
        Bool [B, T], True on valid frames (None: nothing padded).

    Returns
    -------
    torch.Tensor or None
        Float [B]: valid frames / T; None when ``mask`` is None.

    Example
    -------
    >>> mask = frame_mask(torch.tensor([1.0, 0.3]), 49)
    >>> mask.sum(1)
    tensor([49, 15])
    >>> mask[1, 14:] = False  # the CNN's count: 14 frames
    >>> torch.equal(frame_mask(relative_lengths(mask), 49), mask)
    True
    """
    if mask is None:
        return None
    return mask.sum(dim=1) / mask.shape[1]


def _check_positive_int(name, value):
    """Raises a ValueError naming ``name`` unless ``value`` is an int > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _masked_softmax(logits, mask):
    """Softmax over the last axis (time) of ``logits`` [B, H, T], padded
    frames (``mask`` [B, T] False) excluded: their weight is exactly 0."""
    if mask is not None:
        logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
    return torch.softmax(logits, dim=-1)


class _LayerStackBackend(nn.Module):
    """What the three back-ends share: argument checks, the stack's shape
    check and the frame mask.

    Arguments
    ---------
    input_size : int
        Hidden size D of the SSL model.
    num_layers : int
        Number of stacked hidden states (Transformer layers + 1).
    lin_neurons : int
        Embedding size.
    """

    # The recipe makes the encoder return all hidden states for back-ends
    # that say so.
    layer_stack_input = True
    # Padded frames are masked: a padded eval batch gives every row its own
    # embedding, so the embedding path may run padded batches at once.
    exact_with_padding = True

    def __init__(self, input_size, num_layers, lin_neurons):
        super().__init__()
        self.input_size = _check_positive_int("input_size", input_size)
        self.num_layers = _check_positive_int("num_layers", num_layers)
        self.lin_neurons = _check_positive_int("lin_neurons", lin_neurons)

    def _check_stack(self, x, lengths):
        """Checks the stack's shape; returns the frame mask (or None)."""
        if (
            x.dim() != 4
            or x.shape[0] != self.num_layers
            or x.shape[-1] != self.input_size
        ):
            raise ValueError(
                f"{type(self).__name__} expects hidden states [num_layers="
                f"{self.num_layers}, batch, frames, input_size="
                f"{self.input_size}], got {tuple(x.shape)}"
            )
        if lengths is not None and lengths.shape != (x.shape[1],):
            raise ValueError(
                f"lengths must have shape [batch={x.shape[1]}], got "
                f"{tuple(lengths.shape)}"
            )
        return frame_mask(lengths, x.shape[2], device=x.device)


class _FactorizedAttentiveBackend(_LayerStackBackend):
    """MHFA's skeleton: two softmax layer weightings (keys, values), each
    compressed to ``compression_dim``; ``heads`` attention maps over time,
    each pooling the compressed values; heads concatenated, projected.
    Subclasses define ``attention`` (compressed keys -> logits).

    Module names follow the reference implementation (``weights_k``,
    ``cmp_linear_k``, ``att_head``, ``pooling_fc``...) so that its
    checkpoints map onto these ones.

    Arguments
    ---------
    input_size : int
        Hidden size D of the SSL model.
    num_layers : int
        Number of stacked hidden states (Transformer layers + 1).
    heads : int
        Attention heads (attention maps over time).
    compression_dim : int
        Size of the compressed keys and values.
    lin_neurons : int
        Embedding size.
    key_bias : bool
        Bias in the key compression.
    """

    def __init__(
        self,
        input_size,
        num_layers,
        heads,
        compression_dim,
        lin_neurons,
        key_bias,
    ):
        super().__init__(input_size, num_layers, lin_neurons)
        self.heads = _check_positive_int("heads", heads)
        self.compression_dim = _check_positive_int(
            "compression_dim", compression_dim
        )
        # Zeros: uniform weights over the layers at the start (the
        # reference's ones, after the softmax, are the same).
        self.weights_k = nn.Parameter(torch.zeros(self.num_layers))
        self.weights_v = nn.Parameter(torch.zeros(self.num_layers))
        self.cmp_linear_k = nn.Linear(
            self.input_size, self.compression_dim, bias=key_bias
        )
        self.cmp_linear_v = nn.Linear(self.input_size, self.compression_dim)
        self.pooling_fc = nn.Linear(
            self.heads * self.compression_dim, self.lin_neurons
        )

    def attention(self, keys, mask):
        """Attention logits from the compressed keys.

        Arguments
        ---------
        keys : torch.Tensor
            Compressed keys [B, T, compression_dim].
        mask : torch.Tensor or None
            Bool [B, T], True on valid frames.

        Returns
        -------
        torch.Tensor
            Logits [B, heads, T] (padded frames are masked afterwards).
        """
        raise NotImplementedError

    def forward(self, x, lengths=None):
        """Speaker embeddings from the stacked hidden states.

        Arguments
        ---------
        x : torch.Tensor
            Hidden states [L+1, B, T, D] (``num_layers`` first).
        lengths : torch.Tensor or None
            Relative frame lengths [B] in [0, 1] (``relative_lengths``);
            None: nothing padded.

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, lin_neurons].
        """
        mask = self._check_stack(x, lengths)
        layers, batch, frames, dim = x.shape
        # Both layer weightings in one matmul, reading the stack once.
        weights = torch.softmax(
            torch.stack([self.weights_k, self.weights_v]), dim=-1
        )
        mixed = torch.matmul(weights.to(x.dtype), x.reshape(layers, -1))
        keys_in, values_in = mixed.view(2, batch, frames, dim).unbind(0)
        keys = self.cmp_linear_k(keys_in)
        values = self.cmp_linear_v(values_in)
        attn = _masked_softmax(self.attention(keys, mask), mask)
        # Padded frames have weight exactly 0; values are zeroed there too so
        # that non-finite garbage could not turn 0 * x into NaN.
        if mask is not None:
            values = values.masked_fill(~mask.unsqueeze(-1), 0.0)
        pooled = torch.bmm(attn.to(values.dtype), values)  # [B, H, C]
        return self.pooling_fc(pooled.flatten(1)).unsqueeze(1)


class MHFA(_FactorizedAttentiveBackend):
    """Multi-head factorized attentive pooling (MHFA) over the layer stack.

    Peng et al., "An attention-based backend allowing efficient fine-tuning
    of transformer models for speaker verification", SLT 2022
    (arXiv 2210.01273); reference implementation ``MHFA`` in
    ``wespeaker/models/ssl_backend.py`` of BUTSpeechFIT/wespeaker_ssl_public
    (same in JunyiPeng00/Wespeaker_SSL).

    Keys and values are two learnable softmax-weighted sums of the L+1
    hidden states, each compressed by a linear layer to ``compression_dim``.
    A linear layer reads ``heads`` logits from every key frame; each head's
    softmax over (valid) time weights the compressed values; the ``heads``
    pooled vectors are concatenated and projected to ``lin_neurons``.

    Defaults: the published setting (BUTSpeechFIT/wespeaker_ssl_public,
    ``examples/voxceleb/v4/conf/MHFA/MHFA_Base_Frozen.yaml``: ``head_nb:
    64``, ``embed_dim: 256``; ``compression_dim`` 128, the reference's
    default): 64 heads, ``compression_dim=128``, ``lin_neurons=256``. At
    WavLM Base+ sizes (D=768, 13 states) that is 2,302,362 parameters.

    Deviation from the reference: the key compression and the logit layer
    have no bias. A bias there adds a per-head constant to the logits of all
    frames, which the softmax over time cancels: those 192 reference
    parameters never receive a gradient (DDP without unused-parameter search
    needs every parameter to get one) and change no output. A reference
    checkpoint loads with ``strict=False`` (``cmp_linear_k.bias`` and
    ``att_head.bias`` left out) and gives the reference's outputs.

    Arguments
    ---------
    input_size : int
        Hidden size D of the SSL model.
    num_layers : int
        Number of stacked hidden states (Transformer layers + 1).
    heads : int
        Attention heads.
    compression_dim : int
        Size of the compressed keys and values.
    lin_neurons : int
        Embedding size.

    Example
    -------
    >>> backend = MHFA(input_size=32, num_layers=3, heads=4, compression_dim=8)
    >>> stack = torch.randn(3, 2, 50, 32)  # [L+1, B, T, D]
    >>> backend(stack, torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 1, 256])
    """

    def __init__(
        self,
        input_size,
        num_layers,
        heads=64,
        compression_dim=128,
        lin_neurons=256,
    ):
        super().__init__(
            input_size,
            num_layers,
            heads,
            compression_dim,
            lin_neurons,
            key_bias=False,
        )
        self.att_head = nn.Linear(self.compression_dim, self.heads, bias=False)

    def attention(self, keys, mask):
        """Per-frame attention logits.

        Arguments
        ---------
        keys : torch.Tensor
            Compressed keys [B, T, compression_dim].
        mask : torch.Tensor or None
            Bool [B, T], True on valid frames (unused: frames do not mix).

        Returns
        -------
        torch.Tensor
            Logits [B, heads, T].
        """
        return self.att_head(keys).transpose(1, 2)


class CAMHFA(_FactorizedAttentiveBackend):
    """Context-aware MHFA: each head's attention logit at frame t reads the
    compressed keys of frames t - R ... t + R (``context = 2R + 1``).

    Peng et al., "CA-MHFA: A Context-Aware Multi-Head Factorized Attentive
    Pooling for SSL-Based Speaker Verification", ICASSP 2025
    (arXiv 2409.15234); reference implementation ``MHFA_Group_Conv2D`` in
    ``wespeaker/models/ssl_backend.py`` of JunyiPeng00/Wespeaker_SSL.

    As ``MHFA``, except the logits: a head is a group of ``context``
    learnable queries, one per relative frame position, all reading the one
    compressed key stream (keys and values shared by every head); its logit
    at frame t is the sum of their dot products with keys t - R ... t + R.
    That is a convolution over time with ``heads`` output channels and
    kernel ``context`` (zero padding R each side: T logits), written here as
    ``Conv1d(compression_dim, heads, context)``, which equals the
    reference's ``Conv2d(1, heads, (context, compression_dim))``: its weight
    ``[heads, 1, context, C]`` is ``att_head.weight.transpose(1, 2)
    .unsqueeze(1)`` of this one. With ``context=1`` this is ``MHFA``.

    Naming: the reference's ``group_nb`` is the number of attention maps
    (``heads`` here) and its kernel height is ``head_nb // group_nb + 1``
    (``context`` here). Defaults: the main published VoxCeleb setting,
    JunyiPeng00/Wespeaker_SSL ``examples/voxceleb/v2/conf/CA_MHFA/
    wavlm_base_MHFA_LR_Pooling_Group4_Conv2D_64_L4.yaml`` (``head_nb:
    256``, ``embed_dim: 256``, ``group: 64``; the one with a large-margin
    stage, ``..._64_L4_lm.yaml``, and the one its CN-Celeb recipe uses):
    64 heads, ``context`` 256 // 64 + 1 = 5, ``compression_dim`` 128 (the
    reference's default), ``lin_neurons=256``. Its other VoxCeleb
    configurations have kernels of 3 (``_64_L2``, ``_32_L2``) or 5.

    ``groups`` (not in the reference, default 1 = the reference): heads in
    ``groups`` groups, each group's queries reading only its slice of
    ``compression_dim / groups`` key channels (a grouped convolution, as
    heads of ordinary multi-head attention each read a slice of the keys);
    it divides the query parameters by ``groups``.

    Padding: the compressed keys are zeroed on padded frames before the
    convolution, so a window that runs past the end of an utterance sees
    zeros there, exactly what the utterance alone sees from the
    convolution's own zero padding: padded batches stay exact. The key
    compression keeps its bias (as the reference): unlike in ``MHFA`` it is
    not cancelled by the softmax, since the windows at the utterance's ends
    see fewer biased frames.

    Defaults at WavLM Base+ sizes (D=768, 13 states): 2,335,258
    parameters (2,368,026 with ``context=9``).

    Arguments
    ---------
    input_size : int
        Hidden size D of the SSL model.
    num_layers : int
        Number of stacked hidden states (Transformer layers + 1).
    heads : int
        Attention heads (groups of queries; attention maps over time).
    compression_dim : int
        Size of the compressed keys and values.
    context : int
        Frames each head's logit reads, centred (odd).
    groups : int
        Key-channel groups; divides ``heads`` and ``compression_dim``.
    lin_neurons : int
        Embedding size.

    Example
    -------
    >>> backend = CAMHFA(
    ...     input_size=32, num_layers=3, heads=4, compression_dim=8, context=5
    ... )
    >>> stack = torch.randn(3, 2, 50, 32)  # [L+1, B, T, D]
    >>> backend(stack, torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 1, 256])
    """

    def __init__(
        self,
        input_size,
        num_layers,
        heads=64,
        compression_dim=128,
        context=5,
        groups=1,
        lin_neurons=256,
    ):
        super().__init__(
            input_size,
            num_layers,
            heads,
            compression_dim,
            lin_neurons,
            key_bias=True,
        )
        self.context = _check_positive_int("context", context)
        if self.context % 2 == 0:
            raise ValueError(
                f"context must be odd (a window centred on its frame), got "
                f"{context!r}"
            )
        self.groups = _check_positive_int("groups", groups)
        if self.heads % self.groups or self.compression_dim % self.groups:
            raise ValueError(
                f"groups ({self.groups}) must divide heads ({self.heads}) "
                f"and compression_dim ({self.compression_dim})"
            )
        # No bias: a per-head constant is cancelled by the softmax over time.
        self.att_head = nn.Conv1d(
            self.compression_dim,
            self.heads,
            self.context,
            padding=self.context // 2,
            groups=self.groups,
            bias=False,
        )

    def attention(self, keys, mask):
        """Context-window attention logits.

        Arguments
        ---------
        keys : torch.Tensor
            Compressed keys [B, T, compression_dim].
        mask : torch.Tensor or None
            Bool [B, T], True on valid frames; padded frames are zeroed
            before the convolution.

        Returns
        -------
        torch.Tensor
            Logits [B, heads, T].
        """
        if mask is not None:
            keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)
        return grouped_conv_outside_cpu_autocast(
            self.att_head, keys.transpose(1, 2)
        )


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on [B, T, C] whose training statistics come
    from valid frames only.

    SpeechBrain's ``BatchNorm1d`` (and torch's) average over every frame of
    the batch, padded ones included, which would let the padding length
    shift the statistics in training. In eval mode (running statistics) it
    is the plain per-frame affine map, so batch 1 works. State dict as
    ``torch.nn.BatchNorm1d``.

    Arguments
    ---------
    num_features : int
        Channels C.

    Example
    -------
    >>> norm = MaskedBatchNorm1d(3)
    >>> x = torch.randn(2, 5, 3)
    >>> mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    >>> y = norm(x, mask)
    >>> torch.allclose(y[mask].mean(0), torch.zeros(3), atol=1e-6)
    True
    """

    def forward(self, x, mask=None):
        """Normalises ``x``; padded frames of the output are 0 in training.

        Arguments
        ---------
        x : torch.Tensor
            Input [B, T, C].
        mask : torch.Tensor or None
            Bool [B, T], True on valid frames; None: all valid.

        Returns
        -------
        torch.Tensor
            [B, T, C].
        """
        if mask is None or not self.training:
            flat = super().forward(x.reshape(-1, x.shape[-1]))
            return flat.view(x.shape)
        # Statistics (and running-statistics updates) over valid frames.
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


class AttentiveStatsPooling(nn.Module):
    """Channel-wise attentive statistics pooling with masked padding
    (WeSpeaker's ``ASP`` in ``wespeaker/models/pooling_layers.py``).

    Every channel has its own softmax over time, from a bottleneck
    ``Linear(C, hidden) -> ReLU -> BatchNorm -> Linear(hidden, C)``
    (the reference's kernel-1 convolutions); output: the attention-weighted
    mean and standard deviation of every channel, [B, 2C].

    Hand-written: SpeechBrain's ``AttentiveStatisticsPooling`` is the
    ECAPA variant (global-context input, tanh, BatchNorm before the
    activation) and masks ``arange(T) < lengths * T`` without rounding, one
    frame off the convention here (``frame_mask``); its BatchNorm also
    averages over padded frames in training. The standard deviation is
    computed from the centred values (mathematically the reference's
    ``E[x^2] - mean^2``, numerically safer), floored at the reference's
    variance 1e-5.

    Arguments
    ---------
    channels : int
        Channels C of the input.
    hidden : int
        Bottleneck size of the attention.

    Example
    -------
    >>> pool = AttentiveStatsPooling(channels=6, hidden=4)
    >>> pool(
    ...     torch.randn(2, 10, 6), frame_mask(torch.tensor([1.0, 0.5]), 10)
    ... ).shape
    torch.Size([2, 12])
    """

    def __init__(self, channels, hidden):
        super().__init__()
        self.linear1 = nn.Linear(channels, hidden)
        self.norm = MaskedBatchNorm1d(hidden)
        self.linear2 = nn.Linear(hidden, channels)

    def forward(self, x, mask=None):
        """Pools ``x`` over its valid frames.

        Arguments
        ---------
        x : torch.Tensor
            Frames [B, T, C].
        mask : torch.Tensor or None
            Bool [B, T], True on valid frames; None: all valid.

        Returns
        -------
        torch.Tensor
            [B, 2C]: weighted means, then weighted standard deviations.
        """
        hidden = self.norm(torch.relu(self.linear1(x)), mask)
        logits = self.linear2(hidden).transpose(1, 2)  # [B, C, T]
        weights = _masked_softmax(logits, mask).transpose(1, 2)  # [B, T, C]
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        mean = (weights * x).sum(dim=1)
        var = (weights * (x - mean.unsqueeze(1)).pow(2)).sum(dim=1)
        return torch.cat([mean, var.clamp(min=1e-5).sqrt()], dim=1)


class LayerAdapterMFA(_LayerStackBackend):
    """Layer adapters + multi-layer feature aggregation (MFA) + attentive
    statistics pooling.

    WeSpeaker's ``W2VBert_Adapter_MFA``
    (``wespeaker/models/w2vbert_adapter_mfa.py``, from
    ZXHY-82/w2v-BERT-2.0_SV): every hidden state l gets its own adapter
    ``Linear(D, adapter_dim) -> LayerNorm -> ReLU ->
    Linear(adapter_dim, adapter_dim)``; the adapted states are concatenated
    over layers, ``(L+1) * adapter_dim`` channels, pooled by channel-wise
    attentive statistics (``AttentiveStatsPooling``, its attention
    bottleneck ``adapter_dim`` as the reference's ``hidden_dim``), and
    projected to ``lin_neurons`` by a linear bottleneck (the reference has
    no BatchNorm after it).

    Reference options left out: ``n_mfa_layers`` (here always all L+1
    states: the back-end reads the whole stack) and ``dropout`` (default 0
    there) before the bottleneck.

    Defaults: the reference's (WeSpeaker ``examples/voxceleb/v2/conf/
    w2vbert_s1_lora.yaml``: ``embed_dim: 256``, ``adapter_dim: 128``).
    At WavLM Base+ sizes (D=768, 13 states): 2,777,856 parameters.

    Arguments
    ---------
    input_size : int
        Hidden size D of the SSL model.
    num_layers : int
        Number of stacked hidden states (Transformer layers + 1).
    adapter_dim : int
        Output size of every layer adapter.
    lin_neurons : int
        Embedding size.

    Example
    -------
    >>> backend = LayerAdapterMFA(input_size=32, num_layers=3, adapter_dim=8)
    >>> stack = torch.randn(3, 2, 50, 32)  # [L+1, B, T, D]
    >>> backend(stack, torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 1, 256])
    """

    def __init__(
        self, input_size, num_layers, adapter_dim=128, lin_neurons=256
    ):
        super().__init__(input_size, num_layers, lin_neurons)
        self.adapter_dim = _check_positive_int("adapter_dim", adapter_dim)
        self.adapter_layers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(self.input_size, self.adapter_dim),
                nn.LayerNorm(self.adapter_dim),
                nn.ReLU(),
                nn.Linear(self.adapter_dim, self.adapter_dim),
            )
            for _ in range(self.num_layers)
        )
        channels = self.num_layers * self.adapter_dim
        self.pooling = AttentiveStatsPooling(channels, self.adapter_dim)
        self.bottleneck = nn.Linear(2 * channels, self.lin_neurons)

    def forward(self, x, lengths=None):
        """Speaker embeddings from the stacked hidden states.

        Arguments
        ---------
        x : torch.Tensor
            Hidden states [L+1, B, T, D] (``num_layers`` first).
        lengths : torch.Tensor or None
            Relative frame lengths [B] in [0, 1] (``relative_lengths``);
            None: nothing padded.

        Returns
        -------
        torch.Tensor
            Embeddings [B, 1, lin_neurons].
        """
        mask = self._check_stack(x, lengths)
        adapted = torch.cat(
            [
                adapter(h)
                for adapter, h in zip(self.adapter_layers, x, strict=True)
            ],
            dim=-1,
        )
        return self.bottleneck(self.pooling(adapted, mask)).unsqueeze(1)
