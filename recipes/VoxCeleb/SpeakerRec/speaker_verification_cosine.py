#!/usr/bin/env python3
"""Cosine scoring (optional AS-norm) of a trained PET speaker model.

Rebuilds the model from the training folder's saved ``hyperparams.yaml``
and its latest checkpoint, embeds every trial file once (whole utterance,
one at a time, so no padding reaches the back-end), scores the trials and
writes ``results.json`` (``eer`` and ``min_dcf`` as fractions,
``min_dcf_0.05``), the score file and DET / histogram plots.

> python speaker_verification_cosine.py hparams/verification.yaml \
      --output_folder=results/unipet/1986 [--verification_file=<trials>]

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_unipet.backbones import SSLBackboneError
from speechbrain_unipet.metrics import eer, min_dcf
from speechbrain_unipet.recipe import (
    compute_embedding,
    load_trained_model,
    read_wav,
)
from speechbrain_unipet.scoring import read_trials, score_trials, speaker_cohort
from speechbrain_unipet.voxceleb_prepare import (
    DataPreparationError,
    list_audio,
    trial_audio,
)

logger = get_logger(__name__)


def embed_files(modules, files, device, desc):
    """utterance id -> embedding [D] for a dict id -> audio path."""
    embeddings = {}
    for utt, path in tqdm(sorted(files.items()), desc=desc, dynamic_ncols=True):
        wav = read_wav(path).to(device)
        embeddings[utt] = compute_embedding(modules, wav[None])[0, 0].cpu()
    return embeddings


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as f:
        cfg = load_hyperpyyaml(f, overrides)
    device = run_opts["device"] or (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )
    train_hparams, modules = load_trained_model(cfg["output_folder"], device)
    data_folder = cfg["data_folder"] or train_hparams["data_folder"]
    trials_file = cfg["verification_file"] or train_hparams["verification_file"]
    trials = read_trials(trials_file)
    files = trial_audio(
        trials, list_audio(data_folder), trials_file, data_folder
    )
    test = embed_files(modules, files, device, "embedding")

    cohort = mean = None
    if cfg["score_norm"] == "as-norm":
        import csv

        with open(train_hparams["train_annotation"], encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        files, speakers = {}, {}
        for row in rows:
            utt = row["ID"].rsplit("_", 2)[0]
            files.setdefault(utt, row["wav"])
            speakers[utt] = row["spk_id"]
        chosen = dict(sorted(files.items())[: cfg["cohort_max_files"]])
        cohort_emb = embed_files(modules, chosen, device, "cohort")
        cohort, mean = speaker_cohort(cohort_emb, speakers)
    elif cfg["score_norm"] not in (None, "none"):
        raise ValueError(
            f"score_norm must be null or as-norm, got {cfg['score_norm']!r}"
        )

    scores = score_trials(
        trials, test, cohort=cohort, top_n=cfg["cohort_top_n"], mean=mean
    )
    labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
    if labels.all() or not labels.any():
        raise ValueError(
            f"{trials_file} needs both target (1) and non-target (0) trials"
        )
    pos, neg = scores[labels], scores[~labels]
    result = {
        "eer": eer(pos, neg)[0],
        "min_dcf": min_dcf(pos, neg, p_target=0.01)[0],
        "min_dcf_0.05": min_dcf(pos, neg, p_target=0.05)[0],
        "num_trials": len(trials),
        "num_target": int(labels.sum()),
        "score_norm": cfg["score_norm"],
        "pet_method": train_hparams["pet_method"],
        "ssl_hub": str(train_hparams["ssl_hub"]),
        "verification_file": str(trials_file),
    }
    with open(cfg["scores_file"], "w", encoding="utf-8") as f:
        for t, s in zip(trials, scores.tolist(), strict=True):
            f.write(f"{t.enrol} {t.test} {t.label} {s:.6f}\n")
    with open(cfg["results_file"], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    try:
        from speechbrain_unipet.plotting import plot_det, plot_score_histogram

        plot_det(pos, neg, cfg["det_plot"], title=f"{result['pet_method']} DET")
        plot_score_histogram(pos, neg, cfg["score_histogram"])
    except ImportError as err:
        logger.warning("No plots: %s", err)
    logger.info(
        "EER %.2f %%, minDCF(0.01) %.4f, minDCF(0.05) %.4f on %d trials -> %s",
        100 * result["eer"],
        result["min_dcf"],
        result["min_dcf_0.05"],
        len(trials),
        cfg["results_file"],
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (DataPreparationError, SSLBackboneError, FileNotFoundError) as err:
        sys.exit(f"ERROR: {err}")
