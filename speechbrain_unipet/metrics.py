"""Exact, sort-based speaker-verification metrics: EER, minDCF, DET.

SpeechBrain's ``EER`` loops over ~2N thresholds in Python (O(N^2)) and its
``minDCF`` builds an (N x N) matrix and is not normalised, which fails on
VoxCeleb1-E/H or CN-Celeb sized trial lists. Here every distinct score is a
threshold and the error rates at all of them come from one sort and two
``searchsorted`` calls: O(N log N) time, O(N) memory.

Convention: a threshold ``t`` accepts a trial when ``score >= t``. The
operating points are "accept scores >= s" for every distinct score ``s``,
plus "accept nothing" (``t = inf``).

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np


def _scores(values, name):
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of scores, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(
            f"{name} is empty: both target (positive) and non-target "
            "(negative) trials are needed"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} holds {bad} non-finite score(s) (nan/inf)")
    return arr


def det_curve(positive_scores, negative_scores):
    """Miss and false-alarm rates at every distinct threshold.

    Arguments
    ---------
    positive_scores : array-like
        Scores of target trials (1-D torch tensor, numpy array or list).
    negative_scores : array-like
        Scores of non-target trials.

    Returns
    -------
    p_miss : numpy.ndarray
        Fraction of target scores below each threshold (non-decreasing).
    p_fa : numpy.ndarray
        Fraction of non-target scores at or above it (non-increasing).
    thresholds : numpy.ndarray
        The distinct scores in ascending order, then ``inf``.

    Example
    -------
    >>> p_miss, p_fa, th = det_curve([0.9, 0.5], [0.5, 0.1])
    >>> th.tolist(), p_miss.tolist(), p_fa.tolist()
    ([0.1, 0.5, 0.9, inf], [0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, 0.0])
    """
    pos = np.sort(_scores(positive_scores, "positive_scores"))
    neg = np.sort(_scores(negative_scores, "negative_scores"))
    thresholds = np.append(np.unique(np.concatenate([pos, neg])), np.inf)
    p_miss = np.searchsorted(pos, thresholds, side="left") / pos.size
    p_fa = 1.0 - np.searchsorted(neg, thresholds, side="left") / neg.size
    return p_miss, p_fa, thresholds


def eer(positive_scores, negative_scores):
    """Equal error rate.

    The operating point where ``|p_fa - p_miss|`` is smallest (the first one
    in ascending threshold order on ties); the EER is the mean of the two
    rates there, as SpeechBrain's ``EER`` defines it.

    Arguments
    ---------
    positive_scores : array_like
        Scores of target (same-speaker) trials.
    negative_scores : array_like
        Scores of non-target trials.

    Returns
    -------
    eer : float
        A fraction in [0, 1].
    threshold : float
        Accept ``score >= threshold`` to operate there.

    Example
    -------
    >>> eer([0.9, 0.8, 0.5], [0.4, 0.2, 0.1])
    (0.0, 0.5)
    >>> round(eer([0.9, 0.8, 0.3], [0.85, 0.2, 0.1])[0], 4)
    0.3333
    """
    p_miss, p_fa, thresholds = det_curve(positive_scores, negative_scores)
    idx = int(np.argmin(np.abs(p_fa - p_miss)))
    return float((p_fa[idx] + p_miss[idx]) / 2), float(thresholds[idx])


def min_dcf(
    positive_scores, negative_scores, p_target=0.01, c_miss=1.0, c_fa=1.0
):
    """Normalised minimum detection cost (NIST SRE definition).

    ``C = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)``,
    minimised over thresholds and divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of the best
    trivial system; 1.0 means "no better than always rejecting/accepting".

    Arguments
    ---------
    positive_scores : array_like
        Scores of target (same-speaker) trials.
    negative_scores : array_like
        Scores of non-target trials.
    p_target : float
        Prior probability of a target trial.
    c_miss : float
        Cost of a miss.
    c_fa : float
        Cost of a false acceptance.

    Returns
    -------
    min_dcf : float
        The normalised minimum cost.
    threshold : float
        Accept ``score >= threshold`` to reach it.

    Example
    -------
    >>> min_dcf([0.9, 0.8], [0.1, 0.2])
    (0.0, 0.8)
    >>> min_dcf([0.1, 0.2], [0.9, 0.8])[0]  # worse than trivial -> 1.0
    1.0
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(
            f"c_miss and c_fa must be positive, got {c_miss}, {c_fa}"
        )
    p_miss, p_fa, thresholds = det_curve(positive_scores, negative_scores)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    idx = int(np.argmin(cost))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[idx] / norm), float(thresholds[idx])
