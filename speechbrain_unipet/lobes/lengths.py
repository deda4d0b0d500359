"""SpeechBrain's relative lengths turned into sample counts.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch


def sample_lengths(wav, wav_lens):
    """Valid samples per waveform from SpeechBrain's relative lengths.

    Arguments
    ---------
    wav : torch.Tensor
        Waveforms [B, S].
    wav_lens : torch.Tensor
        Relative lengths in [0, 1].

    Returns
    -------
    torch.Tensor
        Long [B], at least 1 and at most S.

    Example
    -------
    >>> sample_lengths(torch.zeros(2, 10), torch.tensor([1.0, 0.44]))
    tensor([10,  4])
    """
    total = wav.shape[1]
    lens = torch.round(wav_lens.to(torch.float64) * total).long()
    return lens.clamp(min=1, max=total).to(wav.device)
