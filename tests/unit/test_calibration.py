"""Calibration: Cllr, min Cllr (PAV), actual DCF, thresholds and the QMF
calibrator, with numbers."""

import itertools
import math

import numpy as np
import pytest

from speechbrain_unipet.scoring.calibration import (
    ScoreCalibrator,
    quality_features,
)
from speechbrain_unipet.scoring.metrics import (
    CalibrationError,
    act_dcf,
    bayes_threshold,
    cllr,
    eer,
    min_cllr,
    min_dcf,
    pav,
    threshold_for_far,
)


def gaussian_llrs(n, d, rng):
    """True LLRs of two unit Gaussians at +-d/2: llr = d * x."""
    tar = rng.normal(d / 2, 1, n)
    non = rng.normal(-d / 2, 1, n)
    return d * tar, d * non


def test_cllr_of_calibrated_llrs_matches_its_integral():
    # For llr ~ N(mu, 2 mu) on targets (a calibrated Gaussian system),
    # Cllr = E[log2(1 + exp(-llr))]: compare with numerical integration.
    rng = np.random.default_rng(0)
    tar, non = gaussian_llrs(200_000, 2.0, rng)
    mu = 2.0  # d^2 / 2
    x = np.linspace(
        mu - 12 * math.sqrt(2 * mu), mu + 12 * math.sqrt(2 * mu), 20001
    )
    pdf = np.exp(-((x - mu) ** 2) / (4 * mu)) / math.sqrt(4 * math.pi * mu)
    integral = np.trapezoid(pdf * np.logaddexp(0, -x), x) / math.log(2)
    assert cllr(tar, non) == pytest.approx(integral, abs=5e-3)


def test_min_cllr_is_the_pav_optimum():
    rng = np.random.default_rng(1)
    tar, non = rng.normal(1, 1, 300), rng.normal(-1, 1.5, 400)
    best = min_cllr(tar, non)
    # No monotone map we try does better than PAV's.
    for a, b in [(1, 0), (0.5, 0.2), (2, -1), (1.3, 0.4)]:
        assert best <= cllr(a * tar + b, a * non + b) + 1e-9
    assert best <= 1.0
    # Invariant under monotone transformations of the scores.
    assert min_cllr(np.exp(tar), np.exp(non)) == pytest.approx(best)


def test_pav_against_brute_force_on_tiny_cases():
    # The isotonic fit minimises squared error over non-decreasing
    # sequences; for 0/1 labels it takes values k/m. Check all label
    # patterns of 6 distinct scores against exhaustive block partitions.
    scores = np.arange(6.0)
    for labels in itertools.product([0, 1], repeat=6):
        labels = np.array(labels)
        fit = pav(scores, labels)
        assert np.all(np.diff(fit) >= -1e-12)
        best = math.inf
        for cuts in itertools.product([0, 1], repeat=5):
            edges = [0] + [k + 1 for k, c in enumerate(cuts) if c] + [6]
            values = np.concatenate(
                [
                    np.full(e - s, labels[s:e].mean())
                    for s, e in itertools.pairwise(edges)
                ]
            )
            if np.all(np.diff(values) >= 0):
                best = min(best, ((values - labels) ** 2).sum())
        assert ((fit - labels) ** 2).sum() == pytest.approx(best)
    # Tied scores get one value whatever their order.
    tied = pav(np.array([1.0, 1.0, 2.0]), np.array([1, 0, 1]))
    assert tied[0] == tied[1] == 0.5


def test_act_dcf_is_at_least_min_dcf_and_bayes_threshold():
    rng = np.random.default_rng(2)
    tar, non = gaussian_llrs(2000, 3.0, rng)
    for p in (0.01, 0.05, 0.5):
        assert act_dcf(tar, non, p) >= min_dcf(tar, non, p_target=p)[0] - 1e-12
    assert bayes_threshold(0.01) == pytest.approx(math.log(99))
    with pytest.raises(CalibrationError, match="p_target"):
        bayes_threshold(1.5)


def test_calibration_lowers_cllr_on_held_out_trials_and_keeps_eer():
    rng = np.random.default_rng(3)
    tar, non = gaussian_llrs(4000, 2.5, rng)
    # Miscalibrated: scaled and shifted far from LLRs.
    raw_tar, raw_non = 0.05 * tar + 0.7, 0.05 * non + 0.7
    labels = np.r_[np.ones(2000), np.zeros(2000)]
    fit_scores = np.r_[raw_tar[:2000], raw_non[:2000]]
    cal = ScoreCalibrator().fit(fit_scores[:, None], labels, p_target=0.5)
    held_tar = cal(raw_tar[2000:][:, None])
    held_non = cal(raw_non[2000:][:, None])
    before = cllr(raw_tar[2000:], raw_non[2000:])
    after = cllr(held_tar, held_non)
    assert after < before
    # Close to the true LLRs' own Cllr.
    assert after == pytest.approx(cllr(tar[2000:], non[2000:]), abs=0.02)
    assert eer(held_tar, held_non)[0] == eer(raw_tar[2000:], raw_non[2000:])[0]


def test_quality_measures_help_when_quality_matters():
    # Short trials have compressed scores: a duration-aware calibration
    # beats a score-only one on held-out trials.
    rng = np.random.default_rng(4)
    n = 6000
    duration = rng.choice([1.0, 10.0], n)
    label = rng.integers(0, 2, n)
    llr = np.where(label == 1, 1, -1) * rng.normal(2, 1, n)
    scale = np.where(duration < 5, 0.1, 1.0)
    score = scale * llr
    feats, names = quality_features(score, duration, duration)
    assert names[:3] == ["score", "duration_min", "duration_max"]
    # Interactions are what QMF's linear model can use: add score*dur.
    half = n // 2
    plain = ScoreCalibrator().fit(score[:half, None], label[:half])
    rich_x = np.c_[feats, feats[:, 0] * feats[:, 1]]
    rich = ScoreCalibrator().fit(rich_x[:half], label[:half])

    def held(cal, x):
        out = cal(x[half:])
        return cllr(out[label[half:] == 1], out[label[half:] == 0])

    assert held(rich, rich_x) < held(plain, score[:, None])


def test_threshold_for_far_meets_the_target_and_is_the_lowest():
    rng = np.random.default_rng(5)
    non = np.round(rng.normal(0, 1, 1001), 1)  # many ties
    for far in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
        t = threshold_for_far(non, far)
        assert (non >= t.threshold).mean() <= far + 1e-12
        assert t.false_accept == (non >= t.threshold).mean()
        # Any lower candidate threshold (a lower score) breaks the target.
        lower = non[non < t.threshold]
        if lower.size and far < 1.0:
            assert (non >= lower.max()).mean() > far


def test_round_trips_and_errors(tmp_path):
    rng = np.random.default_rng(6)
    x, names = quality_features(
        rng.normal(size=50), rng.uniform(1, 5, 50), rng.uniform(1, 5, 50)
    )
    y = (x[:, 0] + rng.normal(size=50) > 0).astype(int)
    cal = ScoreCalibrator().fit(x, y, names=names)
    again = ScoreCalibrator.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again(x), cal(x))
    cal.save(tmp_path / "c.json")
    np.testing.assert_array_equal(
        ScoreCalibrator.load(tmp_path / "c.json")(x), cal(x)
    )
    assert names == [
        "score",
        "duration_min",
        "duration_max",
        "duration_diff",
        "duration_ratio",
    ]
    assert cal.to_dict()["format"] == 2
    with pytest.raises(CalibrationError, match="expects 5 features"):
        cal(x[:, :2])
    with pytest.raises(CalibrationError, match="target .1. and non-target"):
        ScoreCalibrator().fit(x, np.ones(50))
    with pytest.raises(CalibrationError, match="anti-correlated"):
        ScoreCalibrator().fit(-x[:, :1] * 5, y)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CalibrationError, match="bad.json is not a calibration"):
        ScoreCalibrator.load(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="No calibration file"):
        ScoreCalibrator.load(tmp_path / "none.json")


# ------------------------------------------------- WeSpeaker's QMF
def wespeaker_factors(scores, sides):
    """WeSpeaker's gather_calibration_factors, trial by trial: the score,
    then per measure (durations capped at --max_dur 20, as
    local/score_calibration.sh passes) min, max, max - min, max / min."""
    rows = []
    for k, score in enumerate(scores):
        row = [score]
        for name, (enrol, test) in sides:
            a, b = enrol[k], test[k]
            if name == "duration":
                a, b = min(a, 20.0), min(b, 20.0)
            hi, lo = max(a, b), min(a, b)
            row += [lo, hi, hi - lo, hi / lo]
        rows.append(row)
    return np.array(rows)


def qmf_trials(n, rng):
    """Labels and the quality measures of n synthetic trials whose score
    reliability depends on duration."""
    labels = rng.integers(0, 2, n)
    durations = [rng.uniform(1.0, 40.0, n), rng.uniform(1.0, 40.0, n)]
    shortest = np.minimum(*durations)
    score = np.where(labels == 1, 0.6, 0.1) + rng.normal(0, 1, n) / (
        2 + np.minimum(shortest, 20)
    )
    norms = [rng.uniform(5, 15, n), rng.uniform(5, 15, n)]
    cohort = [rng.uniform(0.2, 0.6, n), rng.uniform(0.2, 0.6, n)]
    sides = [("duration", durations), ("norm", norms), ("cohort", cohort)]
    return labels, score, sides


def test_quality_features_are_wespeakers_factors():
    rng = np.random.default_rng(11)
    _, score, sides = qmf_trials(40, rng)
    got, names = quality_features(
        score,
        *sides[0][1],
        *sides[1][1],
        *sides[2][1],
    )
    np.testing.assert_allclose(got, wespeaker_factors(score, sides), rtol=1e-12)
    assert names == ["score"] + [
        f"{m}_{f}"
        for m in ("duration", "norm", "cohort")
        for f in ("min", "max", "diff", "ratio")
    ]


def wespeaker_cllr_gradient(x, labels, llr):
    """Gradient over (W, b) of WeSpeaker's calibration loss, score_
    calibration.py's cllr: 0.5 * (mean over targets of -log sigmoid(llr) +
    mean over non-targets of -log sigmoid(-llr)) / ln 2, for the linear
    model llr = x W + b on the raw factors."""
    tar, non = labels == 1, labels == 0
    dloss = np.where(
        tar,
        -0.5 / tar.sum() / (1 + np.exp(llr)),  # d/dllr of -log sigmoid(llr)
        0.5 / non.sum() / (1 + np.exp(-llr)),
    ) / math.log(2)
    return np.r_[x.T @ dloss, dloss.sum()]


def test_default_fit_minimises_wespeakers_cllr():
    rng = np.random.default_rng(12)
    labels, score, sides = qmf_trials(3000, rng)
    x = wespeaker_factors(score, sides)
    cal = ScoreCalibrator().fit(x, labels)
    # A stationary point of the (convex) objective is its minimiser.
    grad = wespeaker_cllr_gradient(x, labels, cal(x))
    assert np.abs(grad).max() < 1e-7
    # The test can tell objectives apart: BOSARIS's prior-weighted Cllr at
    # 0.05 (the option) stops elsewhere.
    weighted = ScoreCalibrator().fit(x, labels, p_target=0.05)
    grad = wespeaker_cllr_gradient(x, labels, weighted(x))
    assert np.abs(grad).max() > 1e-3
    assert cal.p_target is None and weighted.p_target == 0.05


def test_trial_features_use_mean_subtracted_norms():
    import torch

    from speechbrain_unipet.data.trials import Trial
    from speechbrain_unipet.evaluation.reports import (
        score_store,
        trial_features,
    )
    from speechbrain_unipet.scoring.store import EmbeddingStore

    vectors = np.array([[3.0, 4.0], [1.0, 1.0], [6.0, 8.0]])
    store = EmbeddingStore(["a", "b", "c"], vectors, [2.0, 25.0, 9.0])
    trials = [Trial(1, "a", "b"), Trial(0, "c", "b")]
    mean = torch.tensor([1.0, 0.0])
    details = score_store(trials, store, mean=mean)
    got, names = trial_features(trials, store, details, ["duration", "norm"])
    norms = np.linalg.norm(vectors - [1.0, 0.0], axis=1)
    durations = [2.0, 25.0, 9.0]
    sides = [
        ("duration", ([durations[0], durations[2]], [durations[1]] * 2)),
        ("norm", ([norms[0], norms[2]], [norms[1]] * 2)),
    ]
    expected = wespeaker_factors(details["scores"].numpy(), sides)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_old_calibrations_load_only_where_their_meaning_is_unchanged(
    tmp_path,
):
    import json

    score_only = {
        "names": ["score"],
        "weights": [2.0],
        "bias": -1.0,
        "mean": [0.0],
        "std": [1.0],
        "p_target": 0.05,
        "scoring": {"score_norm": None, "subtract_mean": False},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(score_only))
    # A map of cosine scores alone: unchanged, loads.
    assert ScoreCalibrator.load(path)(np.array([1.0])).tolist() == [1.0]
    refused = [
        dict(score_only, scoring={"score_norm": "as-norm"}),
        {k: v for k, v in score_only.items() if k != "scoring"},
        dict(
            score_only,
            names=["score", "duration_min", "duration_max"],
            weights=[1.0] * 3,
            mean=[0.0] * 3,
            std=[1.0] * 3,
        ),
    ]
    for data in refused:
        path.write_text(json.dumps(data))
        with pytest.raises(
            CalibrationError,
            match=r"old.json was written by an older .* format 1.*calibrate",
        ):
            ScoreCalibrator.load(path)
    path.write_text(json.dumps(dict(score_only, format=3)))
    with pytest.raises(CalibrationError, match="old.json has calibration form"):
        ScoreCalibrator.load(path)
