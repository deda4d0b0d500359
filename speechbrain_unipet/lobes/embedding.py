"""The one embedding path: PET encoder -> sentence mean normalisation ->
speaker embedding model, shared by training, validation, verification and
the exported model, so that they agree by construction.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch
from speechbrain.nnet.CNN import Conv1d as SBConv1d

from speechbrain_unipet.lobes.lengths import sample_lengths
from speechbrain_unipet.utils.audio import window_starts
from speechbrain_unipet.utils.errors import UserError

#: Longer utterances are embedded in windows of this many seconds (eval
#: mode), so that memory stays flat in the utterance length: WavLM's
#: relative position bias and the attention scores grow with the square of
#: the length (a 60 s file took 8.4 GB, a 10-minute one would ask 115 GB).
MAX_CHUNK_SECONDS = 20.0


#: Overlap of consecutive windows, in seconds.
CHUNK_OVERLAP_SECONDS = 2.0


#: Windows embedded together (memory grows with this, not with the length).
CHUNKS_PER_BATCH = 4


#: Fewer samples (16 kHz) give no frame: the SSL CNN's receptive field.
#: A back-end may need more frames (``minimum_samples``).
MIN_SAMPLES = 400


def backend_min_frames(embedding_model):
    """Fewest frames the back-end takes: SpeechBrain convolutions padded
    "same" by reflection need more frames than they pad (ECAPA-TDNN's
    dilation-4 convolution: 5); other back-ends take one.

    Arguments
    ---------
    embedding_model : torch.nn.Module

    Returns
    -------
    int

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> backend_min_frames(ECAPA_TDNN(32, lin_neurons=4))
    5
    """
    frames = 1
    for module in reflect_padded_convs(embedding_model):
        pad = module.dilation * (module.kernel_size - 1) // 2
        frames = max(frames, pad + 1)
    return frames


def reflect_padded_convs(embedding_model):
    """SpeechBrain ``Conv1d`` modules of a back-end that pad "same" by
    reflection (the ones whose output near the end depends on where the
    utterance ends).

    Arguments
    ---------
    embedding_model : torch.nn.Module

    Returns
    -------
    list

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> len(reflect_padded_convs(ECAPA_TDNN(32, lin_neurons=4))) > 0
    True
    """
    return [
        module
        for module in embedding_model.modules()
        if isinstance(module, SBConv1d)
        and module.kernel_size > 1
        and module.padding == "same"
        and module.padding_mode == "reflect"
    ]


def minimum_samples(encoder, embedding_model):
    """Fewest samples that give an embedding: enough for the back-end's
    fewest frames (``backend_min_frames``) out of the SSL front-end.

    Arguments
    ---------
    encoder : PETEncoder
        (Possibly DDP-wrapped.)
    embedding_model : torch.nn.Module

    Returns
    -------
    int

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> enc = PETEncoder(tiny_ssl_folder(getfixture("tmp_path")), "frozen")
    >>> ecapa = ECAPA_TDNN(32, lin_neurons=4)
    >>> n = minimum_samples(enc, ecapa)
    >>> [int(enc.backbone.frame_lengths(torch.tensor([m]))) for m in (n - 1, n)]
    [4, 5]
    """
    backbone = getattr(encoder, "module", encoder).backbone
    needed = backend_min_frames(
        getattr(embedding_model, "module", embedding_model)
    )
    low, high = 1, MIN_SAMPLES
    while int(backbone.frame_lengths(torch.tensor([high]))) < needed:
        low, high = high, high * 2
    while low < high:  # the first length with enough frames
        middle = (low + high) // 2
        if int(backbone.frame_lengths(torch.tensor([middle]))) >= needed:
            high = middle
        else:
            low = middle + 1
    return high


class InvalidAudioError(UserError, ValueError):
    """Rows of a batch that cannot give an embedding (no samples to speak
    of, NaN/inf, digital silence). The other rows were embedded.

    Arguments
    ---------
    problems : dict
        Row index -> what is wrong with it.
    embeddings : torch.Tensor
        [B, 1, E]: the other rows' embeddings, NaN for these rows.
    """

    def __init__(self, problems, embeddings):
        self.problems = problems
        self.embeddings = embeddings
        super().__init__(
            "cannot embed "
            + "; ".join(f"row {row}: {why}" for row, why in problems.items())
            + " (the other rows are embedded: see .embeddings)"
        )


def row_problems(wavs, wav_lens, min_samples=MIN_SAMPLES):
    """What makes each row of a batch unusable, if anything.

    Arguments
    ---------
    wavs : torch.Tensor
        Waveforms [B, S].
    wav_lens : torch.Tensor
        Relative lengths.
    min_samples : int
        Fewest valid samples that give a frame.

    Returns
    -------
    dict
        Row index -> reason, for the unusable rows only.

    Example
    -------
    >>> wavs = torch.randn(3, 800)
    >>> wavs[1] = 0.0
    >>> wavs[2, 5] = float("nan")
    >>> row_problems(wavs, torch.ones(3))
    {1: 'digital silence (all samples are 0)', 2: 'NaN or infinite samples'}
    """
    problems = {}
    for row, length in enumerate(sample_lengths(wavs, wav_lens).tolist()):
        valid = wavs[row, :length]
        if valid.numel() < min_samples:
            problems[row] = (
                f"{valid.numel()} samples, fewer than the {min_samples} "
                "that give an embedding"
            )
        elif not bool(torch.isfinite(valid).all()):
            problems[row] = "NaN or infinite samples"
        elif not bool(valid.abs().gt(0).any()):
            problems[row] = "digital silence (all samples are 0)"
    return problems


def speaker_embeddings(
    encoder,
    normalizer,
    embedding_model,
    wavs,
    wav_lens=None,
    max_chunk_seconds=MAX_CHUNK_SECONDS,
    chunk_overlap_seconds=CHUNK_OVERLAP_SECONDS,
    sample_rate=16000,
    check_rows=True,
):
    """Speaker embeddings of a batch of waveforms, and the UniPET gates.

    In training mode (or without padding) the batch runs through the
    normaliser and the embedding model at once, as SpeechBrain's speaker
    recipes do. In eval mode a padded batch runs them on each utterance's
    valid frames: ECAPA-TDNN's convolutions would otherwise see padding at
    the end of shorter utterances, so the batch would not give the
    embeddings of its utterances one by one. In eval mode, an utterance
    longer than ``max_chunk_seconds`` is cut into windows of that length
    (consecutive windows overlap by ``chunk_overlap_seconds``, the last one
    ends at the utterance's end) whose embeddings are averaged, so memory
    does not grow with the length.

    Arguments
    ---------
    encoder : PETEncoder
        The PET-tuned SSL encoder (possibly DDP-wrapped).
    normalizer : torch.nn.Module
        ``(feats, lens) -> feats``, e.g. SpeechBrain's
        ``InputNormalization(norm_type="sentence", std_norm=False)``.
    embedding_model : torch.nn.Module
        ``(feats, lens) -> [B, 1, E]``, e.g. ECAPA-TDNN.
    wavs : torch.Tensor
        Waveforms [B, S] (16 kHz).
    wav_lens : torch.Tensor or None
        Relative lengths in [0, 1] (None: nothing padded).
    max_chunk_seconds : float or None
        Window length for long utterances (None: never cut).
    chunk_overlap_seconds : float
        Overlap of consecutive windows.
    sample_rate : int
        Sample rate of ``wavs``.
    check_rows : bool
        In eval mode, refuse rows that cannot give an embedding (see
        ``Raises``). The training script's dev loss passes False: a silent
        dev crop must not end a run after an epoch of training.

    Returns
    -------
    embeddings : torch.Tensor
        [B, 1, E].
    gates : dict
        The encoder's UniPET gate values (branch -> [B, ...]), detached.

    Raises
    ------
    InvalidAudioError
        In eval mode, for rows with fewer than ``minimum_samples`` valid
        samples, NaN/inf samples or only zeros; it names the rows and holds
        the other rows' embeddings.

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> enc = PETEncoder(
    ...     tiny_ssl_folder(getfixture("tmp_path"), "wavlm"), "lora"
    ... )
    >>> norm = InputNormalization(norm_type="sentence", std_norm=False)
    >>> ecapa = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=4)
    >>> modules = torch.nn.ModuleList([enc, norm, ecapa]).eval()
    >>> wavs = torch.randn(2, 4000)
    >>> lens = torch.tensor([1.0, 0.5])
    >>> emb, gates = speaker_embeddings(enc, norm, ecapa, wavs, lens)
    >>> alone, _ = speaker_embeddings(enc, norm, ecapa, wavs[1:, :2000])
    >>> emb.shape, torch.allclose(emb[1], alone[0], atol=1e-4)
    (torch.Size([2, 1, 4]), True)
    """
    if wav_lens is None:
        wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
    if check_rows and not embedding_model.training:
        problems = row_problems(
            wavs, wav_lens, minimum_samples(encoder, embedding_model)
        )
        if problems:
            _embed_others_and_raise(
                problems,
                (encoder, normalizer, embedding_model),
                wavs,
                wav_lens,
                (max_chunk_seconds, chunk_overlap_seconds, sample_rate),
            )
    chunk = None
    if max_chunk_seconds and not embedding_model.training:
        chunk = int(round(max_chunk_seconds * sample_rate))
    if chunk is not None and wavs.shape[1] > chunk:
        hop = chunk - int(round(chunk_overlap_seconds * sample_rate))
        if hop < 1:
            raise ValueError(
                f"chunk_overlap_seconds={chunk_overlap_seconds} must be "
                f"shorter than max_chunk_seconds={max_chunk_seconds}"
            )
        return _windowed(
            (encoder, normalizer, embedding_model), wavs, wav_lens, chunk, hop
        )
    return _embed(encoder, normalizer, embedding_model, wavs, wav_lens)


def _embed_others_and_raise(problems, modules, wavs, wav_lens, chunking):
    """Embeds the usable rows, then raises ``InvalidAudioError``."""
    good = [r for r in range(wavs.shape[0]) if r not in problems]
    embeddings = None
    if good:
        index = torch.tensor(good, device=wavs.device)
        done, _ = speaker_embeddings(
            *modules, wavs[index], wav_lens[index], *chunking
        )
        embeddings = done.new_full(
            (wavs.shape[0], *done.shape[1:]), float("nan")
        )
        embeddings[index] = done
    raise InvalidAudioError(problems, embeddings)


def _embed(encoder, normalizer, embedding_model, wavs, wav_lens):
    """``speaker_embeddings`` without windows.

    A back-end reading the layer stack (``[L+1, B, T, D]`` features) gets
    it as the encoder gives it: the normaliser is for the weighted sum.
    Back-ends that mask padded frames themselves (``exact_with_padding``)
    embed a padded batch at once; the others (ECAPA-TDNN) one utterance at
    a time in eval mode."""
    feats, gates = encoder(wavs, wav_lens, return_gates=True)
    stacked = feats.dim() == 4

    def embed(feats, lens):
        """The back-end on (normalised) features."""
        if not stacked:
            feats = normalizer(feats, lens)
        return embedding_model(feats, lens)

    padded = bool((wav_lens < 1).any())
    if not padded:
        return embed(feats, wav_lens), gates
    plain_encoder = getattr(encoder, "module", encoder)  # DDP
    frames = plain_encoder.frame_mask(wavs, wav_lens).sum(dim=1)
    plain_model = getattr(embedding_model, "module", embedding_model)
    exact = getattr(plain_model, "exact_with_padding", False)
    if embedding_model.training or exact:
        # Layer-stack back-ends get the relative lengths of the valid
        # frames: the CNN's frame count differs from round(wav_lens * T)
        # by a frame at times, and a back-end masking padded frames would
        # count a zeroed one. (ECAPA-TDNN trains as SpeechBrain's recipes.)
        lens = frames / feats.shape[-2] if stacked or exact else wav_lens
        return embed(feats, lens), gates
    frames = frames.tolist()
    whole = torch.ones(1, device=wavs.device)
    return torch.cat(
        [
            embed(feats[..., i : i + 1, :n, :], whole)
            for i, n in enumerate(frames)
        ]
    ), gates


def _windowed(modules, wavs, wav_lens, chunk, hop):
    """Each utterance's windows embedded ``CHUNKS_PER_BATCH`` at a time and
    averaged (gates too)."""
    embeddings, gates = [], {}
    for row, length in enumerate(sample_lengths(wavs, wav_lens).tolist()):
        if length <= chunk:
            emb, row_gates = _embed(
                *modules,
                wavs[row : row + 1, :length],
                torch.ones(1, device=wavs.device),
            )
        else:
            windows = torch.stack(
                [
                    wavs[row, s : s + chunk]
                    for s in window_starts(length, chunk, hop)
                ]
            )
            parts = [
                _embed(
                    *modules, group, torch.ones(len(group), device=wavs.device)
                )
                for group in windows.split(CHUNKS_PER_BATCH)
            ]
            emb = torch.cat([p[0] for p in parts]).mean(dim=0, keepdim=True)
            row_gates = {
                k: torch.cat([p[1][k] for p in parts]).mean(dim=0, keepdim=True)
                for k in parts[0][1]
            }
        embeddings.append(emb)
        for key, value in row_gates.items():
            gates.setdefault(key, []).append(value)
    return torch.cat(embeddings), {k: torch.cat(v) for k, v in gates.items()}
