"""Where a training segment is read and how it is speed-perturbed: one
place for the file-based pipeline and the shard reader.

Authors
 * speechbrain-unipet contributors 2026
"""

import torch


def speed_perturbers(sample_rate, speeds):
    """One single-speed perturber per speed (None for the first, 1.0):
    SpeechBrain's ``SpeedPerturb`` picks a speed at random on each call
    without telling which, and the label needs it."""
    from speechbrain.augment.time_domain import SpeedPerturb

    return [None] + [
        SpeedPerturb(sample_rate, speeds=[round(100 * speed)])
        for speed in speeds[1:]
    ]


def speed_perturbed(sig, perturber, length):
    """``sig`` played at the perturber's speed, ``length`` samples."""
    if perturber is None:
        return sig
    return perturber(sig.unsqueeze(0)).squeeze(0)[:length]


def training_region(start, stop, utt_start, utt_stop, speeds, random_chunk):
    """Where a training segment is read: ``(start, stop, speed_index)``.

    With several ``speeds`` one is drawn and ``length * speed`` samples
    are read (resampled to ``length`` afterwards); with ``random_chunk``
    the span moves to a random place of the region ``[utt_start,
    utt_stop)``, never beyond it (dev audio lies outside).

    Arguments
    ---------
    start, stop : int or str
        The CSV row's segment (samples).
    utt_start, utt_stop : int or str
        Its region.
    speeds : sequence of float
        The training speeds (first 1.0).
    random_chunk : bool
        Random place within the region.

    Returns
    -------
    tuple of int

    Example
    -------
    >>> training_region(0, 100, 0, 1000, (1.0,), False)
    (0, 100, 0)
    """
    start, stop = int(start), int(stop)
    first, last_sample = int(utt_start), int(utt_stop)
    index = 0
    if len(speeds) > 1:
        index = int(torch.randint(len(speeds), (1,)))
        # The samples that last `length` once played at this speed.
        needed = round((stop - start) * speeds[index])
        start = max(first, min(start, last_sample - needed))
        stop = min(start + needed, last_sample)
    if random_chunk:
        span, last = stop - start, last_sample - (stop - start)
        if last > first:
            start = torch.randint(first, last + 1, (1,)).item()
            stop = start + span
    return start, stop, index
