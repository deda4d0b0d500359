#!/usr/bin/env python3
"""Cosine scoring (optional AS-norm) of a trained PET speaker model.

Rebuilds the model from the training folder's saved ``hyperparams.yaml``
and its best checkpoint (``ckpt_select``), embeds every trial utterance once
(whole utterance, one at a time, so no padding reaches the back-end), scores
the trials (the given ``verification_file``, or the list the data
preparation generated over held-out speakers) and
writes ``results.json`` (``eer`` and ``min_dcf`` as fractions,
``min_dcf_0.05``), the score file and DET / histogram plots.

> python speaker_verification_cosine.py hparams/verification.yaml \
      --output_folder=results/unipet/1986 [--verification_file=<trials>]

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import pathlib
import sys

# First: it silences a SpeechBrain import-time notice nobody can act on.
import speechbrain_unipet  # noqa: F401  # isort: skip
import speechbrain as sb
import torch
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_unipet.audio import AudioError, load_audio
from speechbrain_unipet.data_prep import (
    TRIALS_FILE,
    DataPreparationError,
    prepare_trial_manifest,
)
from speechbrain_unipet.embedding import InvalidAudioError
from speechbrain_unipet.metrics import eer, min_dcf
from speechbrain_unipet.recipe import (
    USER_ERRORS,
    RecipeError,
    atomic_write,
    compute_embedding,
    load_recipe_hparams,
    load_trained_model,
    read_csv_rows,
)
from speechbrain_unipet.scoring import read_trials, score_trials, speaker_cohort

logger = get_logger(__name__)


def embed_rows(modules, rows, sample_rate, device, desc, chunking):
    """id -> embedding [D] of prepared CSV rows (each region alone; long
    regions in windows, as ``chunking`` says)."""
    embeddings = {}
    for uid, row in tqdm(sorted(rows.items()), desc=desc, dynamic_ncols=True):
        wav = load_audio(
            row["wav"], sample_rate, int(row["start"]), int(row["stop"])
        ).to(device)
        try:
            embedding = compute_embedding(modules, wav[None], **chunking)
        except InvalidAudioError as err:
            raise AudioError(
                f"Cannot embed '{row['wav']}' ({uid}): {err.problems[0]}"
            ) from None
        embeddings[uid] = embedding[0, 0].cpu()
    return embeddings


def trial_rows(cfg, train_hparams):
    """The trial list and the CSV rows of its utterances: those the data
    preparation wrote, or, when ``data_folder`` / ``verification_file`` is
    given here, those of the given data."""
    save = pathlib.Path(train_hparams["save_folder"])
    if cfg["data_folder"] or cfg["verification_file"]:
        trials_file = cfg["verification_file"] or (
            train_hparams["verification_file"] or save / TRIALS_FILE
        )
        csv_path = pathlib.Path(cfg["output_folder"]) / "verification_utts.csv"
        prepare_trial_manifest(
            cfg["data_folder"] or train_hparams["data_folder"],
            train_hparams.get("data_format"),
            trials_file,
            csv_path,
        )
    else:
        trials_file = train_hparams["verification_file"] or save / TRIALS_FILE
        csv_path = save / "test.csv"
    trials = read_trials(trials_file)
    rows = {r["ID"]: r for r in read_csv_rows(csv_path)}
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    missing = sorted(needed - set(rows))
    if missing:
        raise DataPreparationError(
            f"{len(missing)} utterance(s) of {trials_file} are not in "
            f"{csv_path}, e.g. '{missing[0]}': pass --data_folder and "
            "--verification_file to prepare them"
        )
    return trials, trials_file, rows


def main(argv):
    """Scores the trial list of a trained run (see verification.yaml)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    cfg, _ = load_recipe_hparams(hparams_file, overrides)
    # SpeechBrain's logging setup (screen + a log file in the run folder),
    # which create_experiment_directory does for training.
    sb.utils.logger.setup_logging(
        sb.core.DEFAULT_LOG_CONFIG,
        {"handlers": {"file_handler": {"filename": cfg["verification_log"]}}},
    )
    device = run_opts["device"] or (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )
    train_hparams, modules = load_trained_model(
        cfg["output_folder"], device, cfg["average_last"]
    )
    rate = train_hparams["sample_rate"]
    trials, trials_file, rows = trial_rows(cfg, train_hparams)
    chunking = {
        "max_chunk_seconds": cfg["max_chunk_seconds"],
        "chunk_overlap_seconds": cfg["chunk_overlap_seconds"],
    }
    test = embed_rows(modules, rows, rate, device, "embedding", chunking)

    cohort = mean = None
    if cfg["score_norm"] == "as-norm":
        regions, speakers = {}, {}
        for row in read_csv_rows(train_hparams["train_annotation"]):
            uid = f"{row['wav']}:{row['utt_start']}-{row['utt_stop']}"
            region = dict(row, start=row["utt_start"], stop=row["utt_stop"])
            regions.setdefault(uid, region)
            speakers[uid] = row["spk_id"]
        chosen = dict(sorted(regions.items())[: cfg["cohort_max_files"]])
        cohort_emb = embed_rows(
            modules, chosen, rate, device, "cohort", chunking
        )
        cohort, mean = speaker_cohort(cohort_emb, speakers)
    elif cfg["score_norm"] not in (None, "none"):
        raise RecipeError(
            f"score_norm must be null or as-norm, got {cfg['score_norm']!r}"
        )

    scores = score_trials(
        trials, test, cohort=cohort, top_n=cfg["cohort_top_n"], mean=mean
    )
    labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
    if labels.all() or not labels.any():
        raise RecipeError(
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
    previous = pathlib.Path(cfg["results_file"])
    if previous.is_file():
        logger.warning(
            "Replacing %s and %s, written by a previous verification (keep "
            "both with another --results_file / --scores_file).",
            previous,
            cfg["scores_file"],
        )
    # Written whole, then renamed: a concurrent or killed verification never
    # leaves a mixed or truncated file.
    atomic_write(
        cfg["scores_file"],
        "".join(
            f"{t.enrol} {t.test} {t.label} {s:.6f}\n"
            for t, s in zip(trials, scores.tolist(), strict=True)
        ),
    )
    atomic_write(cfg["results_file"], json.dumps(result, indent=2))
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
    except USER_ERRORS as err:
        sys.exit(f"ERROR: {err}")
