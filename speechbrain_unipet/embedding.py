"""The one embedding path: PET encoder -> sentence mean normalisation ->
speaker embedding model, shared by training, validation, verification and
the exported model, so that they agree by construction.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch


def speaker_embeddings(
    encoder, normalizer, embedding_model, wavs, wav_lens=None
):
    """Speaker embeddings of a batch of waveforms, and the UniPET gates.

    In training mode (or without padding) the batch runs through the
    normaliser and the embedding model at once, as SpeechBrain's speaker
    recipes do. In eval mode a padded batch runs them on each utterance's
    valid frames: ECAPA-TDNN's convolutions would otherwise see padding at
    the end of shorter utterances, so the batch would not give the
    embeddings of its utterances one by one.

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

    Returns
    -------
    embeddings : torch.Tensor
        [B, 1, E].
    gates : dict
        The encoder's UniPET gate values (branch -> [B, ...]), detached.

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
    feats, gates = encoder(wavs, wav_lens, return_gates=True)
    padded = bool((wav_lens < 1).any())
    if embedding_model.training or not padded:
        feats = normalizer(feats, wav_lens)
        return embedding_model(feats, wav_lens), gates
    plain_encoder = getattr(encoder, "module", encoder)  # DDP
    frames = plain_encoder.frame_mask(wavs, wav_lens).sum(dim=1).tolist()
    whole = torch.ones(1, device=wavs.device)
    embeddings = [
        embedding_model(normalizer(feats[i : i + 1, :n], whole), whole)
        for i, n in enumerate(frames)
    ]
    return torch.cat(embeddings), gates
