"""Score calibration and its metrics: Cllr, min Cllr, actual DCF,
thresholds, and a quality-measure (QMF) logistic-regression calibrator.

Definitions (BOSARIS toolkit, Brümmer & de Villiers 2011; natural-log
likelihood ratios, LLRs):

* ``cllr = (mean softplus(-llr_tar) + mean softplus(llr_non)) / (2 ln 2)``
  in bits: 0 for perfect, 1 for a system that always says LLR 0; above 1
  means the scores mislead.
* ``min_cllr``: the Cllr after the best monotone calibration of the
  scores, found by pool-adjacent-violators (PAV) on the sorted scores:
  what calibration could reach; ``cllr - min_cllr`` is what is lost by
  miscalibration.
* ``act_dcf``: the normalised detection cost of deciding at the Bayes
  threshold ``-log(p c_miss / ((1-p) c_fa))`` of the LLRs (same
  normalisation as ``speechbrain_unipet.metrics.min_dcf``): meaningful
  only for calibrated scores.

``ScoreCalibrator`` is WeSpeaker's QMF (``wespeaker/bin/
score_calibration.py``): a linear model of the score and quality measures
(min / max of both sides' durations, embedding norms and AS-norm cohort
means) trained to minimise the Cllr at an effective prior, here as the
prior-weighted logistic regression of BOSARIS (L-BFGS on standardised
features).

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import math
import pathlib
from collections import namedtuple

import numpy as np
from scipy.optimize import minimize

LN2 = math.log(2.0)


class CalibrationError(ValueError):
    """Scores, labels or a calibration file that cannot be used."""


def _scores(values, name):
    from speechbrain_unipet.metrics import _scores as check

    return check(values, name)


def _softplus(x):
    """log(1 + e^x) without overflow."""
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
    tar = _scores(target_llrs, "target_llrs")
    non = _scores(nontarget_llrs, "nontarget_llrs")
    return float((_softplus(-tar).mean() + _softplus(non).mean()) / (2.0 * LN2))


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
    tar = _scores(target_scores, "target_scores")
    non = _scores(nontarget_scores, "nontarget_scores")
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
    return float((_softplus(-tar).mean() + _softplus(non).mean()) / (2.0 * LN2))


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
    tar = _scores(target_llrs, "target_llrs")
    non = _scores(nontarget_llrs, "nontarget_llrs")
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


Threshold = namedtuple("Threshold", ["threshold", "false_accept", "miss"])


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
    non = np.sort(_scores(nontarget_scores, "nontarget_scores"))
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
        tar = _scores(target_scores, "target_scores")
        miss = float((tar < threshold).mean())
    return Threshold(threshold, achieved, miss)


#: Quality measures of ``quality_features``, in their column order.
QUALITY_PAIRS = ("duration", "norm", "cohort")


def quality_features(
    scores,
    enrol_durations=None,
    test_durations=None,
    enrol_norms=None,
    test_norms=None,
    enrol_cohort_means=None,
    test_cohort_means=None,
):
    """Calibration inputs: the score, then min and max of each given pair
    of per-side quality measures (WeSpeaker's QMF set). Durations enter as
    log seconds: doubling a short test utterance matters more than
    doubling a long one.

    Arguments
    ---------
    scores : array_like
        [N] scores.
    enrol_durations, test_durations : array_like or None
        Seconds.
    enrol_norms, test_norms : array_like or None
        Embedding norms (before normalisation).
    enrol_cohort_means, test_cohort_means : array_like or None
        Mean of each side's top-n AS-norm cohort scores.

    Returns
    -------
    features : numpy.ndarray
        [N, F] float64.
    names : list of str
        ``score``, then ``<measure>_min`` / ``<measure>_max``.

    Example
    -------
    >>> x, names = quality_features([0.5], [2.0], [8.0])
    >>> names, np.exp(x[0, 1:]).round(3).tolist()
    (['score', 'duration_min', 'duration_max'], [2.0, 8.0])
    """
    columns = [_scores(scores, "scores")]
    names = ["score"]
    pairs = {
        "duration": (enrol_durations, test_durations),
        "norm": (enrol_norms, test_norms),
        "cohort": (enrol_cohort_means, test_cohort_means),
    }
    for name in QUALITY_PAIRS:
        a, b = pairs[name]
        if a is None and b is None:
            continue
        if a is None or b is None:
            raise CalibrationError(f"{name}: give both sides or neither")
        a, b = _scores(a, f"enrol {name}"), _scores(b, f"test {name}")
        if name == "duration":
            if (a <= 0).any() or (b <= 0).any():
                raise CalibrationError("durations must be positive seconds")
            a, b = np.log(a), np.log(b)
        if a.size != columns[0].size or b.size != columns[0].size:
            raise CalibrationError(
                f"{name}: {a.size} / {b.size} values for "
                f"{columns[0].size} scores"
            )
        columns += [np.minimum(a, b), np.maximum(a, b)]
        names += [f"{name}_min", f"{name}_max"]
    return np.stack(columns, axis=1), names


class ScoreCalibrator:
    """Linear calibration of a score and quality measures into LLRs,
    trained as BOSARIS's prior-weighted logistic regression (the Cllr at
    ``p_target``) on standardised features.

    ``llr = w . (x - mean) / std + b``. Training minimises
    ``p/N_tar sum softplus(-(llr + logit p)) + (1-p)/N_non sum
    softplus(llr + logit p) + l2 |w|^2`` with L-BFGS.

    Arguments
    ---------
    l2 : float
        Weight decay on ``w`` (keeps a separable toy set finite).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> tar, non = rng.normal(2, 1, 500), rng.normal(-2, 1, 500)
    >>> scores = np.concatenate([tar, non]) * 0.1 + 3
    >>> labels = np.r_[np.ones(500), np.zeros(500)]
    >>> cal = ScoreCalibrator().fit(scores[:, None], labels)
    >>> llr = cal(scores[:, None])
    >>> cllr(llr[:500], llr[500:]) < cllr(scores[:500], scores[500:])
    True
    """

    def __init__(self, l2=1e-4):
        self.l2 = l2
        self.names = None
        self.weights = None
        self.bias = None
        self.mean = None
        self.std = None
        self.p_target = None
        self.scoring = {}

    def fit(self, features, labels, names=None, p_target=0.05):
        """Fits the calibration.

        Arguments
        ---------
        features : array_like
            [N, F]; column 0 is the score.
        labels : array_like
            [N] 1 target / 0 non-target (both needed).
        names : list of str or None
            Feature names (``quality_features``'s); default ``score``,
            ``f1``...
        p_target : float
            Effective prior of the objective.

        Returns
        -------
        ScoreCalibrator
            self.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        y = np.asarray(labels).astype(int).reshape(-1)
        if x.shape[0] != y.size:
            raise CalibrationError(
                f"{x.shape[0]} feature rows for {y.size} labels"
            )
        if not set(np.unique(y)) <= {0, 1} or y.min() == y.max():
            raise CalibrationError(
                "Calibration needs target (1) and non-target (0) trials"
            )
        if not np.isfinite(x).all():
            raise CalibrationError("Calibration features hold NaN or inf")
        if not 0.0 < p_target < 1.0:
            raise CalibrationError(
                f"p_target must be in (0, 1), got {p_target}"
            )
        self.names = (
            list(names)
            if names
            else ["score"] + [f"f{k}" for k in range(1, x.shape[1])]
        )
        if len(self.names) != x.shape[1]:
            raise CalibrationError(
                f"{len(self.names)} names for {x.shape[1]} features"
            )
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        z = (x - self.mean) / self.std
        offset = math.log(p_target / (1.0 - p_target))
        weight = np.where(
            y == 1, p_target / y.sum(), (1 - p_target) / (y == 0).sum()
        )
        sign = np.where(y == 1, -1.0, 1.0)  # softplus(-a) for targets

        def objective(params):
            """The weighted Cllr objective and its gradient."""
            w, b = params[:-1], params[-1]
            a = sign * (z @ w + b + offset)
            loss = (weight * _softplus(a)).sum() + self.l2 * (w @ w)
            # d softplus(a)/da = sigmoid(a)
            g = weight * sign * np.exp(a - _softplus(a))
            grad = np.concatenate([z.T @ g + 2 * self.l2 * w, [g.sum()]])
            return loss, grad

        start = np.zeros(x.shape[1] + 1)
        result = minimize(objective, start, jac=True, method="L-BFGS-B")
        self.weights, self.bias = result.x[:-1], float(result.x[-1])
        self.p_target = float(p_target)
        if self.weights[0] <= 0:
            raise CalibrationError(
                "The calibration gives higher scores a lower likelihood of "
                "the same speaker (score weight "
                f"{self.weights[0]:.3g}): the scores are anti-correlated "
                "with the labels on these trials (an untrained model, or "
                "swapped labels?); calibration would invert decisions"
            )
        return self

    def __call__(self, features):
        """Calibrated LLRs of features [N, F] (or [N] scores).

        Arguments
        ---------
        features : array_like

        Returns
        -------
        numpy.ndarray
            [N] float64.
        """
        if self.weights is None:
            raise CalibrationError("The calibrator is not fitted")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != len(self.names):
            raise CalibrationError(
                f"The calibration expects {len(self.names)} features "
                f"({', '.join(self.names)}), got {x.shape[1]}"
            )
        return ((x - self.mean) / self.std) @ self.weights + self.bias

    apply = __call__

    def to_dict(self):
        """JSON-able parameters (``from_dict`` rebuilds the calibrator).

        Returns
        -------
        dict
        """
        return {
            "type": "speechbrain_unipet.calibration.ScoreCalibrator",
            "names": list(self.names),
            "weights": [float(v) for v in self.weights],
            "bias": self.bias,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "p_target": self.p_target,
            "scoring": dict(self.scoring),
        }

    @classmethod
    def from_dict(cls, data, source="calibration"):
        """A calibrator from ``to_dict``'s output.

        Arguments
        ---------
        data : dict
        source : str
            Named in errors (e.g. the file).

        Returns
        -------
        ScoreCalibrator
        """
        keys = ("names", "weights", "bias", "mean", "std", "p_target")
        missing = [k for k in keys if k not in (data or {})]
        if not isinstance(data, dict) or missing:
            raise CalibrationError(
                f"{source} is not a calibration (missing {missing}): make one "
                "with speechbrain-unipet calibrate"
            )
        n = len(data["names"])
        if not all(len(data[k]) == n for k in ("weights", "mean", "std")):
            raise CalibrationError(
                f"{source}: weights, mean and std must have one value per "
                f"feature ({n})"
            )
        cal = cls()
        cal.names = list(data["names"])
        cal.weights = np.asarray(data["weights"], dtype=np.float64)
        cal.bias = float(data["bias"])
        cal.mean = np.asarray(data["mean"], dtype=np.float64)
        cal.std = np.asarray(data["std"], dtype=np.float64)
        cal.p_target = float(data["p_target"])
        cal.scoring = dict(data.get("scoring") or {})
        return cal

    def save(self, path):
        """Writes the calibration as JSON (atomically).

        Arguments
        ---------
        path : str or pathlib.Path
        """
        from speechbrain_unipet.recipe import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path):
        """Reads a calibration JSON file.

        Arguments
        ---------
        path : str or pathlib.Path

        Returns
        -------
        ScoreCalibrator
        """
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(
                f"No calibration file {path}: make one with "
                "speechbrain-unipet calibrate"
            ) from None
        except json.JSONDecodeError as err:
            raise CalibrationError(
                f"{path} is not a calibration JSON file: {err}"
            ) from None
        return cls.from_dict(data, source=str(path))
