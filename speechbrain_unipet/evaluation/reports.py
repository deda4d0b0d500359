"""Scoring, calibration and robustness evaluation on embedding stores:
what the recipe's verification script and the command line share.

* ``score_store``: cosine or AS-norm scores of a trial list (optionally
  multi-utterance enrolment), with the details QMF calibration needs;
* ``trial_features``: the quality measures of WeSpeaker's QMF (durations,
  embedding norms, cohort means: min, max, max - min, max / min of the two
  sides) per trial;
* ``verification_results``: EER, minDCF, Cllr, min Cllr, actual DCF;
* ``fit_calibration`` / ``apply_calibration``;
* ``evaluate_conditions``: the same trials with the test side degraded.

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import pathlib

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.trials import Trial
from speechbrain_unipet.evaluation.plotting import (
    plot_conditions,
    plot_det,
    plot_score_histogram,
)
from speechbrain_unipet.scoring.calibration import (
    ScoreCalibrator,
    quality_features,
)
from speechbrain_unipet.scoring.cosine import score_trials
from speechbrain_unipet.scoring.metrics import calibration_metrics, eer, min_dcf
from speechbrain_unipet.scoring.store import EmbeddingStore
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import atomic_write

logger = get_logger(__name__)


#: Quality measures a calibrator may use (WeSpeaker's QMF set).
QUALITY_MEASURES = ("duration", "norm", "cohort")


class EvaluationError(UserError, ValueError):
    """Trials, stores or calibrations that do not fit together."""


def labels_of(trials):
    """Boolean target labels of trials, refusing one-class lists.

    Arguments
    ---------
    trials : list of Trial

    Returns
    -------
    torch.Tensor
        Bool [N].

    Example
    -------
    >>> labels_of([Trial(1, "a", "b"), Trial(0, "a", "c")])
    tensor([ True, False])
    """
    labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
    if labels.all() or not labels.any():
        raise EvaluationError(
            "The trial list needs both target (1) and non-target (0) trials "
            "to measure errors"
        )
    return labels


def verification_results(scores, labels, p_target=0.01):
    """EER, minDCF at p_target 0.01 and 0.05, and the calibration metrics
    (``cllr``, ``min_cllr``, ``act_dcf``; see
    ``speechbrain_unipet.calibration``) of scores.

    Arguments
    ---------
    scores : torch.Tensor or numpy.ndarray
        One score per trial.
    labels : torch.Tensor
        Bool, True for target trials.
    p_target : float
        Prior of ``min_dcf`` and ``act_dcf``.

    Returns
    -------
    dict

    Example
    -------
    >>> r = verification_results(
    ...     torch.tensor([2.0, 1.0, -1.0, -2.0]),
    ...     torch.tensor([True, True, False, False]),
    ... )
    >>> r["eer"], r["min_dcf"], r["min_cllr"]
    (0.0, 0.0, 0.0)
    """
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    pos, neg = scores[labels], scores[~labels]
    return {
        "eer": eer(pos, neg)[0],
        "min_dcf": min_dcf(pos, neg, p_target=p_target)[0],
        "min_dcf_0.05": min_dcf(pos, neg, p_target=0.05)[0],
        **calibration_metrics(pos, neg, p_target=p_target),
    }


def score_store(trials, store, cohort=None, top_n=300, mean=None):
    """Scores and details (see ``speechbrain_unipet.scoring.cosine.score_trials``)
    of trials whose ids are in ``store``.

    Arguments
    ---------
    trials : list of Trial
    store : EmbeddingStore
        Holds every enrol and test id (enrolment models included).
    cohort : torch.Tensor or None
        AS-norm cohort (``speaker_cohort``); None: cosine.
    top_n : int
        AS-norm's top cohort scores.
    mean : torch.Tensor or None
        Embedding mean subtracted before scoring.

    Returns
    -------
    dict
        ``scores``, ``raw``, the norms and, with a cohort, the cohort means.

    Example
    -------
    >>> store = EmbeddingStore(["a", "b"], np.eye(2, dtype="float32"))
    >>> score_store([Trial(0, "a", "b")], store)["scores"]
    tensor([0.])
    """
    return score_trials(
        trials,
        store,
        cohort=cohort,
        top_n=top_n,
        mean=mean,
        return_details=True,
    )


def trial_features(trials, store, details, quality=QUALITY_MEASURES):
    """Calibration inputs of trials: the score and WeSpeaker's quality
    measures (``quality_features`` of both sides' durations, norms of the
    mean-subtracted embeddings and, with AS-norm, top-n cohort means).

    Arguments
    ---------
    trials : list of Trial
    store : EmbeddingStore
        The embeddings the trials were scored with.
    details : dict
        ``score_store``'s result (its norms and cohort means).
    quality : sequence of str
        Measures among ``QUALITY_MEASURES`` (cohort means only exist with
        AS-norm and are left out otherwise).

    Returns
    -------
    features : numpy.ndarray
        [N, F].
    names : list of str

    Example
    -------
    >>> store = EmbeddingStore(
    ...     ["a", "b"], np.eye(2, dtype="float32"), np.array([2.0, 3.0])
    ... )
    >>> trials = [Trial(0, "a", "b")]
    >>> trial_features(trials, store, score_store(trials, store), ["duration"])[
    ...     1
    ... ]
    ['score', 'duration_min', 'duration_max', 'duration_diff', 'duration_ratio']
    """
    unknown = sorted(set(quality) - set(QUALITY_MEASURES))
    if unknown:
        raise EvaluationError(
            f"Unknown quality measure(s) {unknown}: choose among "
            f"{', '.join(QUALITY_MEASURES)}"
        )
    enrol = store.rows([t.enrol for t in trials])
    test = store.rows([t.test for t in trials])
    kwargs = {}
    if "duration" in quality:
        durations = np.asarray(store.durations, dtype=np.float64)
        if not np.isfinite(durations[np.concatenate([enrol, test])]).all():
            raise EvaluationError(
                "The store lacks durations for some trial utterances: embed "
                "them with speechbrain-unipet embed, or leave duration out of "
                "the quality measures"
            )
        kwargs.update(
            enrol_durations=durations[enrol], test_durations=durations[test]
        )
    if "norm" in quality:
        # After mean subtraction, as WeSpeaker's score_norm.py measures them.
        kwargs.update(
            enrol_norms=details["enrol_norm"].numpy(),
            test_norms=details["test_norm"].numpy(),
        )
    if "cohort" in quality and "enrol_cohort_mean" in details:
        kwargs.update(
            enrol_cohort_means=details["enrol_cohort_mean"].numpy(),
            test_cohort_means=details["test_cohort_mean"].numpy(),
        )
    return quality_features(details["scores"].numpy(), **kwargs)


def fit_calibration(
    trials, store, details, quality=QUALITY_MEASURES, p_target=None, extra=None
):
    """A QMF calibrator fitted on calibration trials.

    Arguments
    ---------
    trials : list of Trial
        Calibration trials (both classes).
    store : EmbeddingStore
    details : dict
        ``score_store`` of those trials.
    quality : sequence of str
        Quality measures to use.
    p_target : float or None
        None: WeSpeaker's Cllr objective; a prior: BOSARIS's prior-weighted
        Cllr at that prior (``ScoreCalibrator.fit``).
    extra : dict or None
        Kept in the calibrator's ``to_dict``: how the scores were made
        (``scoring_settings``), checked when it is applied.

    Returns
    -------
    ScoreCalibrator
    """
    features, names = trial_features(trials, store, details, quality)
    # A measure that does not vary over the calibration trials (e.g. the
    # duration of fixed-length validation segments) cannot be learnt; its
    # column would leave the fitted LLRs unchanged.
    constant = [
        n
        for k, n in enumerate(names)
        if n != "score" and np.ptp(features[:, k]) < 1e-9
    ]
    if constant:
        logger.warning(
            "Calibration leaves out %s: constant over the calibration trials",
            ", ".join(constant),
        )
        keep = [k for k, n in enumerate(names) if n not in constant]
        features, names = features[:, keep], [names[k] for k in keep]
    labels = labels_of(trials).numpy().astype(int)
    calibrator = ScoreCalibrator().fit(
        features, labels, names=names, p_target=p_target
    )
    calibrator.scoring = dict(extra or {})
    return calibrator


def scoring_settings(cohort=None, mean=None, top_n=300):
    """How scores are made, as a calibration records and checks it.

    Arguments
    ---------
    cohort : torch.Tensor or None
        The AS-norm cohort, if any.
    mean : torch.Tensor or None
        The mean subtracted before scoring, if any.
    top_n : int
        AS-norm's top cohort scores (recorded only with a cohort).

    Returns
    -------
    dict
        ``score_norm`` ("as-norm" or None), ``subtract_mean`` and
        ``top_n``.

    Example
    -------
    >>> scoring_settings()
    {'score_norm': None, 'subtract_mean': False, 'top_n': None}
    """
    return {
        "score_norm": None if cohort is None else "as-norm",
        "subtract_mean": mean is not None,
        "top_n": None if cohort is None else int(top_n),
    }


def calibration_scoring(calibrator):
    """How the scores a calibrator expects were made (``score_norm``,
    ``subtract_mean``, ``top_n``), from what ``fit_calibration`` or a
    saved file kept.

    Arguments
    ---------
    calibrator : ScoreCalibrator

    Returns
    -------
    dict
    """
    return dict(getattr(calibrator, "scoring", {}) or {})


def check_scoring(calibrator, scoring):
    """Refuses scores made otherwise than the calibration's: an LLR
    mapping fitted on one score distribution is wrong on another.

    Arguments
    ---------
    calibrator : ScoreCalibrator
    scoring : dict
        ``scoring_settings`` of the scores to calibrate.

    Raises
    ------
    EvaluationError
        Naming each setting that differs.

    Example
    -------
    >>> from speechbrain_unipet.scoring.calibration import ScoreCalibrator
    >>> cal = ScoreCalibrator()
    >>> cal.scoring = scoring_settings()
    >>> check_scoring(cal, scoring_settings(mean=torch.zeros(2)))
    Traceback (most recent call last):
    ...
    speechbrain_unipet.evaluation.reports.EvaluationError: The calibration was fitted on scores with subtract_mean=False, these have subtract_mean=True: score the same way, or fit a calibration for these
    """
    fitted = calibration_scoring(calibrator)
    given = dict(scoring or {})
    differ = [
        k
        for k in ("score_norm", "subtract_mean", "top_n")
        if k in fitted
        and k in given
        and (fitted[k] or None) != (given[k] or None)
    ]
    if differ:
        raise EvaluationError(
            "The calibration was fitted on scores with "
            + ", ".join(f"{k}={fitted[k]}" for k in differ)
            + ", these have "
            + ", ".join(f"{k}={given[k]}" for k in differ)
            + ": score the same way, or fit a calibration for these"
        )


def apply_calibration(calibrator, trials, store, details, scoring=None):
    """Calibrated LLRs of scored trials.

    Arguments
    ---------
    calibrator : ScoreCalibrator
    trials : list of Trial
    store : EmbeddingStore
    details : dict
        ``score_store`` of the trials.
    scoring : dict or None
        ``scoring_settings`` of these scores; must match the
        calibration's (``check_scoring``).

    Returns
    -------
    numpy.ndarray
    """
    check_scoring(calibrator, scoring)
    quality = {n.rsplit("_", 1)[0] for n in calibrator.names if n != "score"}
    features, names = trial_features(trials, store, details, quality)
    missing = [n for n in calibrator.names if n not in names]
    if missing:
        raise EvaluationError(
            f"The calibration uses {calibrator.names}, these trials give "
            f"{names} (cohort means need AS-norm scoring)"
        )
    return calibrator(features[:, [names.index(n) for n in calibrator.names]])


def write_scores(path, trials, scores):
    """Writes ``enrol test label score`` lines, atomically.

    Arguments
    ---------
    path : str or pathlib.Path
    trials : list of Trial
    scores : sequence of float

    Example
    -------
    >>> p = getfixture("tmp_path") / "scores.txt"
    >>> write_scores(p, [Trial(1, "a", "b")], [0.5])
    >>> p.read_text()
    'a b 1 0.5\\n'
    """
    atomic_write(
        path,
        "".join(
            f"{t.enrol} {t.test} {t.label} {float(s):.9g}\n"
            for t, s in zip(trials, list(scores), strict=True)
        ),
    )


def read_scores(path):
    """Reads a score file of ``write_scores`` (``enrol test label score``).

    Arguments
    ---------
    path : str or pathlib.Path

    Returns
    -------
    trials : list of Trial
    scores : numpy.ndarray

    Example
    -------
    >>> p = getfixture("tmp_path") / "scores.txt"
    >>> write_scores(p, [Trial(1, "a", "b")], [0.5])
    >>> read_scores(p)
    ([Trial(1, 'a', 'b')], array([0.5]))
    """
    trials, scores = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 4 or parts[2] not in ("0", "1"):
                    raise ValueError
                scores.append(float(parts[3]))
            except ValueError:
                raise EvaluationError(
                    f"{path}:{lineno}: expected 'enrol test label score' "
                    f"(label 0 or 1), as scores.txt has it; got "
                    f"{line.strip()!r}"
                ) from None
            trials.append(Trial(int(parts[2]), parts[0], parts[1]))
    if not trials:
        raise EvaluationError(f"{path} holds no scores")
    return trials, np.array(scores)


def with_test_side(trials, clean, degraded, prefix):
    """Trials and one store where each test id reads ``degraded``'s
    embedding and each enrol id ``clean``'s (a robustness condition
    degrades the test side only).

    Arguments
    ---------
    trials : list of Trial
    clean : EmbeddingStore
        Holds the enrol ids.
    degraded : EmbeddingStore
        Holds the test ids, embedded under the condition.
    prefix : str
        Prefixed to test ids (the condition's name).

    Returns
    -------
    trials : list of Trial
    store : EmbeddingStore

    Example
    -------
    >>> clean = EmbeddingStore(["a", "b"], np.eye(2, dtype="float32"))
    >>> noisy = EmbeddingStore(["b"], np.ones((1, 2), dtype="float32"))
    >>> t, s = with_test_side([Trial(0, "a", "b")], clean, noisy, "noise")
    >>> t, s.ids
    ([Trial(0, 'a', 'noise::b')], ['a', 'b', 'noise::b'])
    """
    renamed = EmbeddingStore(
        [f"{prefix}::{i}" for i in degraded.ids],
        degraded.embeddings,
        degraded.durations,
    )
    moved = [Trial(t.label, t.enrol, f"{prefix}::{t.test}") for t in trials]
    return moved, EmbeddingStore.concat([clean, renamed])


def markdown_table(rows, columns):
    """A markdown table of dicts.

    Arguments
    ---------
    rows : list of dict
    columns : list of (key, header, format)

    Returns
    -------
    str

    Example
    -------
    >>> print(markdown_table([{"a": 0.5}], [("a", "A", "{:.2f}")]))
    | A |
    |---|
    | 0.50 |
    """
    lines = [
        "| " + " | ".join(h for _, h, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(fmt.format(row[key]) for key, _, fmt in columns)
            + " |"
        )
    return "\n".join(lines)


CONDITION_COLUMNS = [
    ("condition", "condition", "{}"),
    ("description", "test side", "{}"),
    ("eer_percent", "EER %", "{:.2f}"),
    ("min_dcf", "minDCF(0.01)", "{:.4f}"),
    ("num_trials", "trials", "{}"),
]


def write_condition_report(rows, folder):
    """Writes ``conditions.json``, ``conditions.md`` and, with matplotlib,
    ``conditions.png`` into ``folder``.

    Arguments
    ---------
    rows : list of dict
        One per condition: ``condition``, ``description``, ``eer``,
        ``min_dcf``, ``num_trials``.
    folder : str or pathlib.Path

    Returns
    -------
    str
        The markdown table.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [dict(r, eer_percent=100 * r["eer"]) for r in rows]
    table = markdown_table(rows, CONDITION_COLUMNS)
    atomic_write(folder / "conditions.md", table + "\n")
    atomic_write(folder / "conditions.json", json.dumps(rows, indent=2))
    try:
        plot_conditions(rows, folder / "conditions.png")
    except ImportError as err:
        logger.warning("No condition plot: %s", err)
    return table


GROUP_COLUMNS = [
    ("group", "group", "{}"),
    ("eer_percent", "EER %", "{}"),
    ("min_dcf", "minDCF(0.01)", "{}"),
    ("num_target", "target trials", "{}"),
    ("num_trials", "trials", "{}"),
]


def group_results(trials, scores, groups):
    """EER and minDCF of the trials of each test-side group (CN-Celeb: the
    genre of the test utterance), all trials last.

    A group whose trials are of one class only has no error rate: its
    EER and minDCF are None (a genre with no target trial says nothing).

    Arguments
    ---------
    trials : list of Trial
    scores : torch.Tensor or numpy.ndarray
        One score per trial.
    groups : dict
        test utterance id -> group (``read_trial_groups``).

    Returns
    -------
    list of dict
        ``group``, ``eer``, ``min_dcf``, ``num_trials``, ``num_target``.

    Raises
    ------
    EvaluationError
        If a test utterance has no group.

    Example
    -------
    >>> trials = [Trial(1, "m", "t1"), Trial(0, "m", "t2"), Trial(1, "m", "t3")]
    >>> rows = group_results(
    ...     trials, [0.9, 0.1, 0.2], {"t1": "a", "t2": "a", "t3": "b"}
    ... )
    >>> [(r["group"], r["eer"], r["num_trials"]) for r in rows]
    [('a', 0.0, 2), ('b', None, 1), ('all', 0.0, 3)]
    """
    missing = sorted({t.test for t in trials if t.test not in groups})
    if missing:
        raise EvaluationError(
            f"{len(missing)} test utterance(s) have no group, e.g. "
            f"'{missing[0]}': list every test utterance in trial_groups"
        )
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.array([t.label == 1 for t in trials])
    names = np.array([groups[t.test] for t in trials])
    rows = []
    for group in [*sorted(set(names)), None]:
        keep = np.ones(len(trials), bool) if group is None else names == group
        pos = torch.from_numpy(scores[keep & labels])
        neg = torch.from_numpy(scores[keep & ~labels])
        both = len(pos) > 0 and len(neg) > 0
        rows.append(
            {
                "group": "all" if group is None else str(group),
                "eer": eer(pos, neg)[0] if both else None,
                "min_dcf": min_dcf(pos, neg)[0] if both else None,
                "num_trials": int(keep.sum()),
                "num_target": int((keep & labels).sum()),
            }
        )
    return rows


def write_group_report(rows, path):
    """Writes the markdown table of ``group_results`` to ``path`` (and
    returns it); groups without both classes show "-".

    Arguments
    ---------
    rows : list of dict
        ``group_results``.
    path : str or pathlib.Path

    Returns
    -------
    str
    """
    shown = [
        dict(
            r,
            eer_percent="-" if r["eer"] is None else f"{100 * r['eer']:.2f}",
            min_dcf="-" if r["min_dcf"] is None else f"{r['min_dcf']:.4f}",
        )
        for r in rows
    ]
    table = markdown_table(shown, GROUP_COLUMNS)
    atomic_write(path, table + "\n")
    return table


def save_evaluation_plots(det_path, histogram_path, scores, labels, title):
    """DET curve and score histogram of scored trials (skipped, with a
    warning, without matplotlib).

    Arguments
    ---------
    det_path : str or pathlib.Path
        The DET image to write.
    histogram_path : str or pathlib.Path
        The histogram image to write.
    scores : array_like
    labels : torch.Tensor
    title : str
    """
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    try:
        plot_det(scores[labels], scores[~labels], det_path, title=title)
        plot_score_histogram(scores[labels], scores[~labels], histogram_path)
    except ImportError as err:
        logger.warning("No plots: %s", err)


def learned_layer_weights(modules):
    """The learned per-layer softmax weights of a model: the encoder's
    weighted sum (methods that use it) and the back-end's key/value layer
    weights (MHFA, CA-MHFA).

    Arguments
    ---------
    modules : tuple
        ``(encoder, normalizer, embedding_model)``.

    Returns
    -------
    dict
        name -> numpy array [L+1] (empty when the model learns none).

    Example
    -------
    >>> from speechbrain_unipet.lobes.backends import MHFA
    >>> backend = MHFA(
    ...     8, num_layers=3, heads=2, compression_dim=4, lin_neurons=4
    ... )
    >>> sorted(learned_layer_weights((None, None, backend)))
    ['back-end keys', 'back-end values']
    """
    encoder, _, backend = modules
    weights = {}
    encoder = getattr(encoder, "module", encoder)
    if encoder is not None and not getattr(encoder, "output_all_hiddens", True):
        weights["weighted sum"] = encoder.layer_weights
    backend = getattr(backend, "module", backend)
    for attr, name in (
        ("weights_k", "back-end keys"),
        ("weights_v", "back-end values"),
    ):
        if hasattr(backend, attr):
            weights[name] = getattr(backend, attr)
    return {
        k: torch.softmax(v.detach().float().cpu(), dim=0).numpy()
        for k, v in weights.items()
    }
