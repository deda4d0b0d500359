"""Calibration: Cllr, min Cllr (PAV), actual DCF, thresholds and the QMF
calibrator, with numbers."""

import itertools
import math

import numpy as np
import pytest

from speechbrain_unipet.calibration import (
    CalibrationError,
    ScoreCalibrator,
    act_dcf,
    bayes_threshold,
    cllr,
    min_cllr,
    pav,
    quality_features,
    threshold_for_far,
)
from speechbrain_unipet.metrics import eer, min_dcf


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
    assert names == ["score", "duration_min", "duration_max"]
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
    with pytest.raises(CalibrationError, match="expects 3 features"):
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
