"""Score calibration: quality features of a trial and the logistic-
regression calibrator that maps scores (and qualities) to LLRs, saved
beside an exported model.

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import math
import pathlib

import numpy as np
from scipy.optimize import minimize

from speechbrain_unipet.scoring.metrics import (
    CalibrationError,
    check_scores,
    softplus,
)
from speechbrain_unipet.utils.files import atomic_write

#: Quality measures of ``quality_features``, in their column order
#: (WeSpeaker's: durations, embedding magnitudes, AS-norm cohort means).
QUALITY_PAIRS = ("duration", "norm", "cohort")


#: Functions of the two sides' values of a measure, in column order.
PAIR_FUNCTIONS = ("min", "max", "diff", "ratio")


#: Durations are capped at this many seconds (WeSpeaker's ``--max_dur 20``
#: in ``local/score_calibration.sh``).
MAX_DURATION = 20.0


#: Version of ``ScoreCalibrator.to_dict``: 2 holds the features above and
#: the Cllr objective; 1 (no ``format`` key) had log-duration min/max, raw
#: embedding norms and AS-norm scores of an older cohort.
CALIBRATION_FORMAT = 2


def pair_features(calibrator, scores, norms1, norms2, seconds1, seconds2):
    """Calibration features of verification pairs, in the calibrator's
    order: what an exported model (PyTorch or ONNX) computes from two
    recordings alone.

    Arguments
    ---------
    calibrator : ScoreCalibrator
    scores : array_like
        Cosine scores [B].
    norms1, norms2 : array_like
        Embedding norms [B] (before normalisation).
    seconds1, seconds2 : array_like
        Durations [B] in seconds.

    Returns
    -------
    numpy.ndarray
        [B, F].

    Example
    -------
    >>> cal = ScoreCalibrator()
    >>> cal.names = ["score", "norm_min", "norm_max", "norm_diff", "norm_ratio"]
    >>> pair_features(cal, [0.5], [1.0], [2.0], [3.0], [4.0]).round(2).tolist()
    [[0.5, 1.0, 2.0, 1.0, 2.0]]
    """
    quality = {n.rsplit("_", 1)[0] for n in calibrator.names if n != "score"}
    kwargs = {}
    if "duration" in quality:
        kwargs.update(
            enrol_durations=np.asarray(seconds1, np.float64),
            test_durations=np.asarray(seconds2, np.float64),
        )
    if "norm" in quality:
        kwargs.update(
            enrol_norms=np.asarray(norms1, np.float64),
            test_norms=np.asarray(norms2, np.float64),
        )
    features, names = quality_features(np.asarray(scores, np.float64), **kwargs)
    if list(names) != list(calibrator.names):
        raise ValueError(
            f"calibration features {calibrator.names} cannot be computed "
            f"(got {names})"
        )
    return features


def quality_features(
    scores,
    enrol_durations=None,
    test_durations=None,
    enrol_norms=None,
    test_norms=None,
    enrol_cohort_means=None,
    test_cohort_means=None,
):
    """Calibration inputs as WeSpeaker's ``gather_calibration_factors``:
    the score, then for each given pair of per-side quality measures its
    ``min``, ``max``, ``max - min`` and ``max / min`` (durations first
    capped at ``MAX_DURATION`` seconds, in seconds, no log).

    Arguments
    ---------
    scores : array_like
        [N] scores.
    enrol_durations, test_durations : array_like or None
        Seconds.
    enrol_norms, test_norms : array_like or None
        Norms of the embeddings after mean subtraction, before
        normalisation (``score_trials``'s details).
    enrol_cohort_means, test_cohort_means : array_like or None
        Mean of each side's top-n AS-norm cohort scores.

    Returns
    -------
    features : numpy.ndarray
        [N, F] float64.
    names : list of str
        ``score``, then ``<measure>_min``, ``_max``, ``_diff``, ``_ratio``.

    Example
    -------
    >>> x, names = quality_features([0.5], [2.0], [30.0])
    >>> names
    ['score', 'duration_min', 'duration_max', 'duration_diff', 'duration_ratio']
    >>> x[0].tolist()
    [0.5, 2.0, 20.0, 18.0, 10.0]
    """
    columns = [check_scores(scores, "scores")]
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
        a, b = check_scores(a, f"enrol {name}"), check_scores(b, f"test {name}")
        if a.size != columns[0].size or b.size != columns[0].size:
            raise CalibrationError(
                f"{name}: {a.size} / {b.size} values for "
                f"{columns[0].size} scores"
            )
        if name == "duration":
            if (a <= 0).any() or (b <= 0).any():
                raise CalibrationError("durations must be positive seconds")
            a, b = np.minimum(a, MAX_DURATION), np.minimum(b, MAX_DURATION)
        low, high = np.minimum(a, b), np.maximum(a, b)
        if (low == 0).any():
            raise CalibrationError(
                f"{name}: a value of 0 has no max / min ratio (trial "
                f"{int(np.flatnonzero(low == 0)[0])})"
            )
        columns += [low, high, high - low, high / low]
        names += [f"{name}_{f}" for f in PAIR_FUNCTIONS]
    return np.stack(columns, axis=1), names


class ScoreCalibrator:
    """Linear calibration of a score and quality measures into LLRs
    (natural log), ``llr = w . (x - mean) / std + b``.

    The default objective is WeSpeaker's (``score_calibration.py``'s
    ``cllr``): the Cllr, ``(mean softplus(-llr_tar) + mean
    softplus(llr_non)) / (2 ln 2)``, minimised to convergence with L-BFGS.
    Standardising the features (``mean``, ``std``) only reparametrises the
    linear model: the fitted LLRs are the minimiser of WeSpeaker's
    objective on the raw features (where several minimise it, as when
    ``max - min`` duplicates ``max`` and ``min``, they give the same LLRs).

    ``fit(p_target=p)`` minimises BOSARIS's prior-weighted Cllr instead,
    ``p mean softplus(-(llr + logit p)) + (1-p) mean softplus(llr +
    logit p)`` (the same as the default for ``p = 0.5``).

    Arguments
    ---------
    l2 : float
        Weight decay on ``w`` (0, WeSpeaker: none). Perfectly separated
        calibration trials have no finite minimiser: the weights grow
        until the optimiser's tolerance stops them; a small ``l2`` keeps
        them finite.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> tar, non = rng.normal(2, 1, 500), rng.normal(-2, 1, 500)
    >>> scores = np.concatenate([tar, non]) * 0.1 + 3
    >>> labels = np.r_[np.ones(500), np.zeros(500)]
    >>> from speechbrain_unipet.scoring.metrics import cllr
    >>> cal = ScoreCalibrator().fit(scores[:, None], labels)
    >>> llr = cal(scores[:, None])
    >>> cllr(llr[:500], llr[500:]) < cllr(scores[:500], scores[500:])
    True
    """

    def __init__(self, l2=0.0):
        if not l2 >= 0:
            raise CalibrationError(f"l2 must be >= 0, got {l2}")
        self.l2 = l2
        self.names = None
        self.weights = None
        self.bias = None
        self.mean = None
        self.std = None
        self.p_target = None
        self.scoring = {}

    def fit(self, features, labels, names=None, p_target=None):
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
        p_target : float or None
            None: WeSpeaker's Cllr objective; a prior in (0, 1): BOSARIS's
            prior-weighted Cllr at that effective prior.

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
        if p_target is not None and not 0.0 < p_target < 1.0:
            raise CalibrationError(
                f"p_target must be in (0, 1) or None, got {p_target}"
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
        prior = 0.5 if p_target is None else p_target
        offset = math.log(prior / (1.0 - prior))
        weight = np.where(y == 1, prior / y.sum(), (1 - prior) / (y == 0).sum())
        sign = np.where(y == 1, -1.0, 1.0)  # softplus(-a) for targets

        def objective(params):
            """The (prior-weighted) Cllr in nats and its gradient."""
            w, b = params[:-1], params[-1]
            a = sign * (z @ w + b + offset)
            loss = (weight * softplus(a)).sum() + self.l2 * (w @ w)
            # d softplus(a)/da = sigmoid(a)
            g = weight * sign * np.exp(a - softplus(a))
            grad = np.concatenate([z.T @ g + 2 * self.l2 * w, [g.sum()]])
            return loss, grad

        start = np.zeros(x.shape[1] + 1)
        # Tight tolerances: the minimiser, not a point near it (the
        # objective is convex and the problem small).
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-10},
        )
        self.weights, self.bias = result.x[:-1], float(result.x[-1])
        self.p_target = None if p_target is None else float(p_target)
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
            "type": "speechbrain_unipet.scoring.calibration.ScoreCalibrator",
            "format": CALIBRATION_FORMAT,
            "names": list(self.names),
            "weights": [float(v) for v in self.weights],
            "bias": self.bias,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "p_target": self.p_target,
            "max_duration": MAX_DURATION,
            "scoring": dict(self.scoring),
        }

    @classmethod
    def from_dict(cls, data, source="calibration"):
        """A calibrator from ``to_dict``'s output.

        A calibration of format 1 (written before WeSpeaker's QMF features
        and AS-norm cohort) loads only where its meaning is unchanged: a
        map of the score alone, fitted on (recorded) cosine scores. Others
        are refused, naming ``source`` and the fix.

        Arguments
        ---------
        data : dict
        source : str
            Named in errors (e.g. the file).

        Returns
        -------
        ScoreCalibrator

        Example
        -------
        >>> old = {
        ...     "names": ["score", "duration_min", "duration_max"],
        ...     "weights": [1.0, 0.1, 0.1],
        ...     "bias": 0.0,
        ...     "mean": [0.0] * 3,
        ...     "std": [1.0] * 3,
        ...     "p_target": 0.05,
        ... }
        >>> ScoreCalibrator.from_dict(old, "old.json")
        Traceback (most recent call last):
        ...
        speechbrain_unipet.scoring.metrics.CalibrationError: old.json was written by an older speechbrain-unipet (calibration format 1), whose quality features (log-duration min/max, embedding norms before mean subtraction) and AS-norm cohort differ from the WeSpeaker ones used now: fit it again with speechbrain-unipet calibrate (or the verification recipe), and export it again if an exported model carries it
        """
        keys = ("names", "weights", "bias", "mean", "std", "p_target")
        missing = [k for k in keys if k not in (data or {})]
        if not isinstance(data, dict) or missing:
            raise CalibrationError(
                f"{source} is not a calibration (missing {missing}): make one "
                "with speechbrain-unipet calibrate"
            )
        version = data.get("format", 1)
        if version not in (1, CALIBRATION_FORMAT):
            raise CalibrationError(
                f"{source} has calibration format {version!r}; this "
                f"speechbrain-unipet reads formats 1 and "
                f"{CALIBRATION_FORMAT}: update it, or fit the calibration "
                "again with this one"
            )
        scoring = dict(data.get("scoring") or {})
        # Format 1 keeps its meaning only as a map of plain cosine scores
        # (those that recorded no scoring may have been AS-norm ones).
        if version == 1 and (
            list(data["names"]) != ["score"]
            or "scoring" not in data
            or (scoring.get("score_norm") or "none") != "none"
        ):
            raise CalibrationError(
                f"{source} was written by an older speechbrain-unipet "
                "(calibration format 1), whose quality features "
                "(log-duration min/max, embedding norms before mean "
                "subtraction) and AS-norm cohort differ from the WeSpeaker "
                "ones used now: fit it again with speechbrain-unipet "
                "calibrate (or the verification recipe), and export it again "
                "if an exported model carries it"
            )
        n = len(data["names"])
        if not all(len(data[k]) == n for k in ("weights", "mean", "std")):
            raise CalibrationError(
                f"{source}: weights, mean and std must have one value per "
                f"feature ({n})"
            )
        if data.get("max_duration", MAX_DURATION) != MAX_DURATION:
            raise CalibrationError(
                f"{source} caps durations at {data['max_duration']} s, this "
                f"speechbrain-unipet at {MAX_DURATION} s: fit it again"
            )
        cal = cls()
        cal.names = list(data["names"])
        cal.weights = np.asarray(data["weights"], dtype=np.float64)
        cal.bias = float(data["bias"])
        cal.mean = np.asarray(data["mean"], dtype=np.float64)
        cal.std = np.asarray(data["std"], dtype=np.float64)
        p_target = data["p_target"]
        cal.p_target = None if p_target is None else float(p_target)
        cal.scoring = scoring
        return cal

    def save(self, path):
        """Writes the calibration as JSON (atomically).

        Arguments
        ---------
        path : str or pathlib.Path
        """

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
