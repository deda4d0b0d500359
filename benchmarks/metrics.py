"""EER / minDCF speed: SpeechBrain's implementation vs ours, same trials.

    python benchmarks/metrics.py

Prints wall-clock times measured in this run on this machine.
"""

import sys
import time

import numpy as np
import torch


def timed(fn, *args, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    from speechbrain.utils.metric_stats import EER, minDCF

    from speechbrain_unipet.scoring.metrics import eer, min_dcf

    def ours(pos, neg):
        return eer(pos, neg)[0], min_dcf(pos, neg)[0]

    def speechbrain(pos, neg):
        return EER(pos, neg)[0], minDCF(pos, neg)[0] / 0.01

    rng = np.random.default_rng(0)
    n = 10_000
    pos = torch.from_numpy(rng.normal(2.0, 1.0, n // 10))
    neg = torch.from_numpy(rng.normal(0.0, 1.0, n - n // 10))
    t_sb, r_sb = timed(speechbrain, pos, neg, repeat=1)
    t_us, r_us = timed(ours, pos, neg)
    print(f"{n:,} trials, EER + minDCF(0.01):")
    print(
        f"  speechbrain.utils.metric_stats : {t_sb:8.3f} s  EER {r_sb[0]:.5f} minDCF {r_sb[1]:.5f}"
    )
    print(
        f"  speechbrain_unipet.metrics     : {t_us:8.4f} s  EER {r_us[0]:.5f} minDCF {r_us[1]:.5f}"
    )
    print(f"  speed-up: {t_sb / t_us:,.0f}x")
    n = 2_000_000
    pos = rng.normal(2.0, 1.0, n // 20)
    neg = rng.normal(0.0, 1.0, n - n // 20)
    t_big, r_big = timed(ours, pos, neg)
    print(
        f"{n:,} trials, ours only (SpeechBrain's minDCF needs O(N^2) memory):"
    )
    print(
        f"  speechbrain_unipet.metrics     : {t_big:8.3f} s  EER {r_big[0]:.5f} minDCF {r_big[1]:.5f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
