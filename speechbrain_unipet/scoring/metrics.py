"""Verification metrics on scores: DET curve, EER, minDCF, and the BOSARIS
calibration measures (Cllr, minCllr by PAV, actDCF, Bayes threshold) and
thresholds at a false-acceptance rate.

Authors
 * speechbrain-unipet contributors 2026
"""

import math
from collections import namedtuple

import numpy as np

from speechbrain_unipet.utils.errors import UserError


class CalibrationError(UserError, ValueError):
    """Scores, labels or a calibration file that cannot be used."""


Threshold = namedtuple("Threshold", ["threshold", "false_accept", "miss"])


def check_scores(values, name):
    """A 1-D float64 array of finite scores, or a ``ValueError`` naming
    ``name`` (shape, emptiness, type or non-finite values).

    Arguments
    ---------
    values : array-like
        Scores (1-D torch tensor, numpy array or list).
    name : str
        What the scores are, for the error message.

    Returns
    -------
    numpy.ndarray

    Example
    -------
    >>> check_scores([1, 2.5], "target_scores")
    array([1. , 2.5])
    """
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
    pos = np.sort(check_scores(positive_scores, "positive_scores"))
    neg = np.sort(check_scores(negative_scores, "negative_scores"))
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


LN2 = math.log(2.0)


def softplus(x):
    """log(1 + e^x) without overflow (the logistic loss of Cllr and of the
    calibrator).

    Arguments
    ---------
    x : numpy.ndarray
        Any values.

    Returns
    -------
    numpy.ndarray

    Example
    -------
    >>> [round(float(v), 4) for v in softplus(np.array([0.0, 1000.0]))]
    [0.6931, 1000.0]
    """
    return np.logaddexp(0.0, x)


def cllr(target_llrs, nontarget_llrs):
    """Log-likelihood-ratio cost in bits (BOSARIS).

    Arguments
    ---------
    target_llrs : array_like
        LLRs (natural log) of target trials.
    nontarget_llrs : array_like
        LLRs of non-target trials.

    Returns
    -------
    float

    Example
    -------
    >>> cllr([0.0], [0.0])
    1.0
    >>> round(cllr([10.0, 12.0], [-10.0, -12.0]), 4)
    0.0
    """
    tar = check_scores(target_llrs, "target_llrs")
    non = check_scores(nontarget_llrs, "nontarget_llrs")
    return float((softplus(-tar).mean() + softplus(non).mean()) / (2.0 * LN2))


def pav(scores, labels):
    """Pool-adjacent-violators: the non-decreasing fit of ``labels`` (0/1)
    over ``scores`` in ascending order, ties pooled first (so that the
    order of tied scores does not matter).

    Written here because the maintained PAV (scikit-learn's
    ``IsotonicRegression``) is not a dependency; O(N log N) (the sort).

    Arguments
    ---------
    scores : numpy.ndarray
        [N] scores.
    labels : numpy.ndarray
        [N] 0/1.

    Returns
    -------
    numpy.ndarray
        [N] fitted target probabilities, in the order of ``scores``.

    Example
    -------
    >>> pav(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1])).tolist()
    [0.0, 0.5, 0.5, 1.0]
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Tied scores form one starting block.
    starts = np.flatnonzero(
        np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]])
    )
    sums = np.add.reduceat(labels[order].astype(np.float64), starts)
    counts = np.diff(np.append(starts, len(scores))).astype(np.float64)
    block_sum, block_count, block_len = [], [], []
    for s, c in zip(sums, counts, strict=True):
        block_sum.append(s)
        block_count.append(c)
        block_len.append(1)
        while (
            len(block_sum) > 1
            and block_sum[-2] / block_count[-2]
            >= block_sum[-1] / block_count[-1]
        ):
            s2, c2, n2 = block_sum.pop(), block_count.pop(), block_len.pop()
            block_sum[-1] += s2
            block_count[-1] += c2
            block_len[-1] += n2
    means = np.repeat(np.array(block_sum) / np.array(block_count), block_len)
    fitted = np.repeat(means, counts.astype(int))
    out = np.empty_like(fitted)
    out[order] = fitted
    return out


def pav_llrs(target_scores, nontarget_scores):
    """The LLRs of the optimal monotone calibration (PAV posteriors minus
    the empirical prior log-odds, as BOSARIS's ``opt_loglr``).

    Arguments
    ---------
    target_scores, nontarget_scores : array_like

    Returns
    -------
    target_llrs, nontarget_llrs : numpy.ndarray
        May hold -inf / +inf (scores only one class reaches).
    """
    tar = check_scores(target_scores, "target_scores")
    non = check_scores(nontarget_scores, "nontarget_scores")
    scores = np.concatenate([tar, non])
    labels = np.concatenate([np.ones(tar.size), np.zeros(non.size)])
    p = pav(scores, labels)
    with np.errstate(divide="ignore"):
        llr = np.log(p) - np.log1p(-p) - math.log(tar.size / non.size)
    return llr[: tar.size], llr[tar.size :]


def min_cllr(target_scores, nontarget_scores):
    """Cllr after the optimal monotone (PAV) calibration (BOSARIS).

    Arguments
    ---------
    target_scores : array_like
        Scores of target trials (any scale).
    nontarget_scores : array_like
        Scores of non-target trials.

    Returns
    -------
    float
        In bits; at most 1 and at most ``cllr`` of any monotone
        transformation of the scores.

    Example
    -------
    >>> min_cllr([3.0, 4.0], [1.0, 2.0])  # separable: no cost
    0.0
    >>> min_cllr([1.0, 2.0], [1.0, 2.0])  # useless scores: 1 bit
    1.0
    """
    tar, non = pav_llrs(target_scores, nontarget_scores)
    # softplus(-inf) = 0: a target at +inf LLR costs nothing; PAV never
    # gives a target -inf (its block holds a target) nor a non-target +inf.
    return float((softplus(-tar).mean() + softplus(non).mean()) / (2.0 * LN2))


def bayes_threshold(p_target=0.01, c_miss=1.0, c_fa=1.0):
    """The Bayes decision threshold of calibrated LLRs: accept
    ``llr >= -log(p c_miss / ((1-p) c_fa))``.

    Arguments
    ---------
    p_target : float
        Prior probability of a target trial.
    c_miss, c_fa : float
        Costs of a miss and a false acceptance.

    Returns
    -------
    float

    Example
    -------
    >>> round(bayes_threshold(0.01), 4), bayes_threshold(0.5)
    (4.5951, 0.0)
    """
    if not 0.0 < p_target < 1.0:
        raise CalibrationError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise CalibrationError(
            f"c_miss and c_fa must be positive, got {c_miss}, {c_fa}"
        )
    return math.log((1.0 - p_target) * c_fa / (p_target * c_miss))


def act_dcf(target_llrs, nontarget_llrs, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised actual detection cost at the Bayes threshold.

    Arguments
    ---------
    target_llrs, nontarget_llrs : array_like
        LLRs of target and non-target trials.
    p_target : float
        Prior of a target trial.
    c_miss, c_fa : float
        Costs.

    Returns
    -------
    float
        Normalised as ``metrics.min_dcf`` (1.0: no better than a fixed
        decision); never below the minDCF of the same scores.

    Example
    -------
    >>> act_dcf([5.0, 6.0], [-5.0, -6.0])
    0.0
    >>> act_dcf([1.0, 2.0], [-5.0, -6.0])  # targets below the threshold
    1.0
    """
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    tar = check_scores(target_llrs, "target_llrs")
    non = check_scores(nontarget_llrs, "nontarget_llrs")
    p_miss = float((tar < threshold).mean())
    p_fa = float((non >= threshold).mean())
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return cost / min(c_miss * p_target, c_fa * (1.0 - p_target))


def calibration_metrics(target_scores, nontarget_scores, p_target=0.01):
    """``cllr``, ``min_cllr`` and ``act_dcf`` of scores read as LLRs (what
    ``results.json`` reports, for raw and for calibrated scores).

    Arguments
    ---------
    target_scores, nontarget_scores : array_like
    p_target : float
        Prior of ``act_dcf``.

    Returns
    -------
    dict

    Example
    -------
    >>> sorted(calibration_metrics([2.0, 3.0], [-2.0, 0.5]))
    ['act_dcf', 'cllr', 'min_cllr']
    """
    return {
        "cllr": cllr(target_scores, nontarget_scores),
        "min_cllr": min_cllr(target_scores, nontarget_scores),
        "act_dcf": act_dcf(target_scores, nontarget_scores, p_target),
    }


def threshold_for_far(nontarget_scores, far, target_scores=None):
    """The lowest threshold (accept ``score >= threshold``) whose
    false-accept rate on the given non-target scores is at most ``far``.

    Arguments
    ---------
    nontarget_scores : array_like
        Scores of non-target trials of the user's own data.
    far : float
        Target false-accept rate in [0, 1].
    target_scores : array_like or None
        If given, the miss rate at the threshold is reported too.

    Returns
    -------
    Threshold
        ``threshold``, the ``false_accept`` rate reached and the ``miss``
        rate (None without target scores).

    Example
    -------
    >>> t = threshold_for_far([0.1, 0.2, 0.3, 0.4], 0.25, [0.35, 0.5])
    >>> t.false_accept, t.miss, 0.3 < t.threshold <= 0.4
    (0.25, 0.0, True)
    """
    non = np.sort(check_scores(nontarget_scores, "nontarget_scores"))
    if not 0.0 <= far <= 1.0:
        raise CalibrationError(f"far must be in [0, 1], got {far}")
    allowed = int(math.floor(far * non.size + 1e-9))
    if allowed >= non.size:
        threshold = float(non[0])
    else:
        # Just above the (n - allowed)-th smallest score: at most
        # ``allowed`` non-target scores (ties included) remain at or above.
        threshold = float(np.nextafter(non[non.size - allowed - 1], np.inf))
    achieved = float((non >= threshold).mean())
    miss = None
    if target_scores is not None:
        tar = check_scores(target_scores, "target_scores")
        miss = float((tar < threshold).mean())
    return Threshold(threshold, achieved, miss)
