"""Metrics against brute-force references and SpeechBrain's implementation."""

import numpy as np
import pytest
import torch

from speechbrain_unipet.scoring.metrics import det_curve, eer, min_dcf


def brute_force(pos, neg, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Direct definition, one threshold at a time (accept score >= t)."""
    pos, neg = list(map(float, pos)), list(map(float, neg))
    thresholds = sorted(set(pos) | set(neg)) + [float("inf")]
    best_gap, best_eer, best_eer_t = None, None, None
    best_cost, best_cost_t = None, None
    for t in thresholds:
        pm = sum(s < t for s in pos) / len(pos)
        pf = sum(s >= t for s in neg) / len(neg)
        if best_gap is None or abs(pf - pm) < best_gap:
            best_gap, best_eer, best_eer_t = abs(pf - pm), (pf + pm) / 2, t
        cost = c_miss * p_target * pm + c_fa * (1 - p_target) * pf
        if best_cost is None or cost < best_cost:
            best_cost, best_cost_t = cost, t
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    return best_eer, best_eer_t, best_cost / norm, best_cost_t


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Rounded scores: many ties within and across classes.
    pos = np.round(rng.normal(1.0, 1.0, rng.integers(5, 60)), 1)
    neg = np.round(rng.normal(-0.5, 1.0, rng.integers(5, 200)), 1)
    for p_target, c_miss in ((0.01, 1.0), (0.05, 1.0), (0.01, 10.0)):
        ref = brute_force(pos, neg, p_target, c_miss)
        assert eer(pos, neg) == pytest.approx(ref[:2])
        got = min_dcf(pos, neg, p_target=p_target, c_miss=c_miss)
        assert got == pytest.approx(ref[2:])


def test_ties_by_hand():
    pos, neg = [0.5, 0.5, 0.9], [0.5, 0.1]
    p_miss, p_fa, th = det_curve(pos, neg)
    assert th.tolist() == [0.1, 0.5, 0.9, np.inf]
    assert p_miss.tolist() == pytest.approx([0, 0, 2 / 3, 1])
    assert p_fa.tolist() == [1.0, 0.5, 0.0, 0.0]
    assert eer(pos, neg) == (0.25, 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_speechbrain_on_tie_free_data(seed):
    from speechbrain.utils.metric_stats import EER, minDCF

    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(300, generator=gen) + 1.5
    neg = torch.randn(1500, generator=gen)
    sb_eer, sb_th = EER(pos, neg)
    ours, th = eer(pos, neg)
    assert ours == pytest.approx(sb_eer, abs=1e-6)
    # Same operating point: SB rejects scores <= its threshold.
    assert bool(((pos <= sb_th) == (pos < th)).all())
    sb_dcf, _ = minDCF(pos, neg)  # un-normalised, p_target 0.01
    assert min_dcf(pos, neg)[0] * 0.01 == pytest.approx(float(sb_dcf), abs=1e-6)


def test_input_types_and_dtypes():
    pos = [0.9, 0.2, 0.7]
    neg = [0.1, 0.4, 0.3, 0.8]
    ref = eer(pos, neg)
    assert eer(
        np.array(pos, np.float32), np.array(neg, np.float32)
    ) == pytest.approx(ref, abs=1e-6)
    assert eer(
        torch.tensor(pos, dtype=torch.float64), torch.tensor(neg)
    ) == pytest.approx(ref, abs=1e-6)
    assert eer(torch.tensor(pos).half(), torch.tensor(neg).half())[
        0
    ] == pytest.approx(ref[0])


@pytest.mark.parametrize(
    "pos, neg, match",
    [
        ([], [0.1], "positive_scores is empty"),
        ([0.1], [], "negative_scores is empty"),
        ([0.1, float("nan")], [0.2], "non-finite"),
        ([0.1], [float("inf")], "non-finite"),
        ([[0.1, 0.2]], [0.2], "1-D"),
        (["a"], [0.2], "real numbers"),
    ],
)
def test_bad_inputs(pos, neg, match):
    with pytest.raises(ValueError, match=match):
        eer(pos, neg)
    with pytest.raises(ValueError, match=match):
        min_dcf(pos, neg)


def test_bad_cost_parameters():
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([1.0], [0.0], p_target=1.5)
    with pytest.raises(ValueError, match="positive"):
        min_dcf([1.0], [0.0], c_fa=0)


def test_large_trial_lists_are_fast_enough_to_run():
    # 2M trials: a functional check that it completes (timings live in
    # benchmarks/metrics.py).
    rng = np.random.default_rng(0)
    pos = rng.normal(2, 1, 100_000)
    neg = rng.normal(0, 1, 1_900_000)
    e, _ = eer(pos, neg)
    assert 0.14 < e < 0.18  # analytic EER for d'=2 is Phi(-1) = 0.1587
