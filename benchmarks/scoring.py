"""Scoring at VoxCeleb1-E size: time and peak memory of each stage.

    python benchmarks/scoring.py [--embeddings 145000] [--dim 192]
        [--trials 580000] [--cohort 6000] [--top-n 300] [--seed 0]

Synthetic data of the size of VoxCeleb1-E: 145,000 random 192-dimensional
embeddings in an ``EmbeddingStore`` (saved to and loaded from a temporary
folder), a trial list of 580,000 random pairs written as a VoxCeleb list,
and an AS-norm cohort of 6,000 speakers (one normalised embedding each, as
``speaker_cohort`` gives), top-300. Stages, in one process, one after the
other: store save + load, reading the trial list, cosine scoring, AS-norm
scoring (``score_trials`` with the cohort), EER + minDCF of the AS-norm
scores. Time is wall-clock per stage; memory is the process's peak
resident size (``ru_maxrss``) at the end minus before the data were made
(the Python interpreter and torch), so it covers the worst stage.

Target (issue 15): the scoring path, trial list to metrics (reading the
list, AS-norm scoring, EER + minDCF), under 20 s and under 4 GB on 2 CPU
cores.
"""

import argparse
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from speechbrain_unipet.data.trials import read_trials
from speechbrain_unipet.scoring.cosine import score_trials
from speechbrain_unipet.scoring.metrics import eer, min_dcf
from speechbrain_unipet.scoring.store import EmbeddingStore

TARGET_SECONDS, TARGET_GB = 20.0, 4.0


def peak_rss_gb():
    """Peak resident memory of this process so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
    """Runs the stages and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", type=int, default=145_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--trials", type=int, default=580_000)
    parser.add_argument("--cohort", type=int, default=6_000)
    parser.add_argument("--top-n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    baseline = peak_rss_gb()
    rng = np.random.default_rng(args.seed)
    ids = [
        f"id{k // 8:05d}/video{k % 8}/{k:06d}" for k in range(args.embeddings)
    ]
    store = EmbeddingStore(
        ids,
        rng.standard_normal((args.embeddings, args.dim), dtype=np.float32),
        rng.uniform(4, 20, args.embeddings),
    )
    cohort = torch.nn.functional.normalize(
        torch.from_numpy(
            rng.standard_normal((args.cohort, args.dim), dtype=np.float32)
        ),
        dim=-1,
    )
    pairs = rng.integers(0, args.embeddings, (args.trials, 2))
    labels = rng.integers(0, 2, args.trials)
    stages = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        trial_file = tmp / "trials.txt"
        with open(trial_file, "w", encoding="utf-8") as f:
            seen = set()
            for (a, b), label in zip(
                pairs.tolist(), labels.tolist(), strict=True
            ):
                if a == b or (a, b) in seen:
                    continue
                seen.add((a, b))
                f.write(f"{label} {ids[a]}.wav {ids[b]}.wav\n")

        start = time.perf_counter()
        store.save(tmp / "store")
        store = EmbeddingStore.load(tmp / "store")
        stages.append(("store save + load", time.perf_counter() - start, False))

        start = time.perf_counter()
        trials = read_trials(trial_file)
        stages.append(("read trial list", time.perf_counter() - start, True))

        start = time.perf_counter()
        score_trials(trials, store)
        stages.append(("cosine scoring", time.perf_counter() - start, False))

        start = time.perf_counter()
        scores = score_trials(trials, store, cohort=cohort, top_n=args.top_n)
        stages.append(
            (
                f"AS-norm scoring ({args.cohort} cohort, top-{args.top_n})",
                time.perf_counter() - start,
                True,
            )
        )

        start = time.perf_counter()
        target = torch.tensor([t.label for t in trials], dtype=torch.bool)
        eer(scores[target], scores[~target])
        min_dcf(scores[target], scores[~target])
        stages.append(("EER + minDCF", time.perf_counter() - start, True))
    memory = peak_rss_gb() - baseline

    print(
        f"Scoring at VoxCeleb1-E size: {args.embeddings:,} x {args.dim} "
        f"embeddings, {len(trials):,} trials, {torch.get_num_threads()} "
        "threads\n"
    )
    print("| stage | time | in the target path |")
    print("|---|---:|---|")
    for name, seconds, counted in stages:
        print(f"| {name} | {seconds:.2f} s | {'yes' if counted else 'no'} |")
    path = sum(s for _, s, counted in stages if counted)
    ok = path < TARGET_SECONDS and memory < TARGET_GB
    print(
        f"\ntrial list to metrics: {path:.2f} s (target < {TARGET_SECONDS:g} "
        f"s); peak memory {memory:.2f} GB above the interpreter (target < "
        f"{TARGET_GB:g} GB): {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
