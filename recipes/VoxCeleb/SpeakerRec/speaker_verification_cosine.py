#!/usr/bin/env python3
"""Cosine scoring (optional AS-norm), calibration and robustness
conditions of a trained PET speaker model.

Rebuilds the model from the training folder's saved ``hyperparams.yaml``
and its best checkpoint (``ckpt_select``; or the mean of the last
``average_last``), embeds the trial utterances with the extraction engine
(``speechbrain_unipet.extraction``: length-bucketed exact batches, shards
across ``torchrun`` processes, an embedding store under
``embeddings_folder`` that later runs reuse and a killed run resumes),
scores the trials (the given ``verification_file``, or the list the data
preparation generated over held-out speakers; with ``enrolment_map``, a
trial's enrolment side is a model: the mean of its utterances' embeddings,
CN-Celeb's "Avg" protocol) and writes ``results.json``
(``eer``, ``min_dcf``, ``min_dcf_0.05``, ``cllr``, ``min_cllr``,
``act_dcf``, and ``calibrated`` with the same metrics of calibrated
scores), the score file, DET / histogram plots, the learned layer weights
and UniPET gates, and with ``--conditions`` an EER/minDCF table of the
same trials with the test side degraded. ``trial_groups`` (a group per
test utterance, e.g. CN-Celeb's genres) adds an EER/minDCF table per group;
``compare_calibration`` applies other calibrations (e.g. one fitted on
VoxCeleb) to the same scores, reported beside this run's.

> python speaker_verification_cosine.py hparams/verification.yaml \
      --output_folder=results/unipet/1986 [--verification_file=<trials>]
> torchrun --nproc_per_node=2 speaker_verification_cosine.py ...

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import pathlib
import random
import sys

# First: it silences a SpeechBrain import-time notice nobody can act on.
import speechbrain_unipet  # noqa: F401  # isort: skip
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.preparation import (
    TRIALS_FILE,
    VALID_TRIALS_FILE,
    prepare_trial_manifest,
    read_csv_rows,
)
from speechbrain_unipet.data.trials import (
    read_enrolment,
    read_trial_groups,
    read_trials,
)
from speechbrain_unipet.evaluation.conditions import (
    parse_conditions,
)
from speechbrain_unipet.evaluation.extraction import extract
from speechbrain_unipet.evaluation.reports import (
    apply_calibration,
    fit_calibration,
    group_results,
    labels_of,
    learned_layer_weights,
    save_evaluation_plots,
    score_store,
    scoring_settings,
    verification_results,
    with_test_side,
    write_condition_report,
    write_group_report,
    write_scores,
)
from speechbrain_unipet.evaluation.utterances import utterances_from_rows
from speechbrain_unipet.scoring.calibration import ScoreCalibrator
from speechbrain_unipet.scoring.cosine import enrol_models, speaker_cohort
from speechbrain_unipet.scoring.metrics import CalibrationError
from speechbrain_unipet.scoring.store import EmbeddingStore
from speechbrain_unipet.training.hparams import RecipeError, load_recipe_hparams
from speechbrain_unipet.training.runs import load_trained_model
from speechbrain_unipet.utils.distributed import finish_distributed
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import atomic_write

logger = get_logger(__name__)


def trial_rows(
    cfg, train_hparams, trials_file=None, name="verification", enrolment=None
):
    """A trial list and the CSV rows of its utterances: those the data
    preparation wrote, or, when ``data_folder`` / ``verification_file`` /
    ``trials_file`` is given, those prepared here from the data. With an
    ``enrolment`` map (model -> utterances), a trial's enrolment id is a
    model and its utterances are the rows needed."""
    save = pathlib.Path(train_hparams["save_folder"])
    if trials_file or cfg["data_folder"] or cfg["verification_file"]:
        trials_file = (
            trials_file
            or cfg["verification_file"]
            or (train_hparams["verification_file"] or save / TRIALS_FILE)
        )
        csv_path = pathlib.Path(cfg["output_folder"]) / f"{name}_utts.csv"
        prepare_trial_manifest(
            cfg["data_folder"] or train_hparams["data_folder"],
            cfg["data_format"] or train_hparams.get("data_format"),
            trials_file,
            csv_path,
            enrolment=enrolment,
        )
    else:
        trials_file = train_hparams["verification_file"] or save / TRIALS_FILE
        csv_path = save / "test.csv"
    trials = read_trials(trials_file)
    rows = {r["ID"]: r for r in read_csv_rows(csv_path)}
    needed = {t.test for t in trials}
    if enrolment is None:
        needed |= {t.enrol for t in trials}
    else:
        models = sorted({t.enrol for t in trials} - set(enrolment))
        if models:
            raise DataPreparationError(
                f"{len(models)} enrolment model(s) of {trials_file} are not "
                f"in the enrolment_map, e.g. '{models[0]}'"
            )
        needed |= {u for t in trials for u in enrolment[t.enrol]}
    missing = sorted(needed - set(rows))
    if missing:
        raise DataPreparationError(
            f"{len(missing)} utterance(s) of {trials_file} are not in "
            f"{csv_path}, e.g. '{missing[0]}': pass --data_folder and "
            "--verification_file to prepare them"
        )
    # All the rows, not only those of these trials: trial lists over the
    # same prepared utterances (CN-Celeb's Avg and Concat) then share one
    # embedding store.
    return trials, trials_file, [rows[i] for i in sorted(rows)]


def calibration_rows(cfg, train_hparams):
    """The calibration trials and their rows: ``calibration_trials``, or
    the run's validation trials (held-out training speakers); None when
    there are none."""
    if cfg["calibration_trials"]:
        trials, _, rows = trial_rows(
            cfg, train_hparams, cfg["calibration_trials"], "calibration"
        )
        return trials, cfg["calibration_trials"], rows
    save = pathlib.Path(train_hparams["save_folder"])
    trials_file, csv_path = save / VALID_TRIALS_FILE, save / "valid_verif.csv"
    if not (trials_file.is_file() and csv_path.is_file()):
        return None
    trials = read_trials(trials_file)
    return trials, trials_file, read_csv_rows(csv_path)


class Extractor:
    """Embeds CSV rows into named stores of ``embeddings_folder`` with the
    run's model and the yaml's extraction settings."""

    def __init__(self, cfg, modules, sample_rate, model_id):
        self.cfg, self.modules = cfg, modules
        self.sample_rate, self.model_id = sample_rate, model_id

    def __call__(self, name, rows, transform=None):
        """The store ``name`` of these rows (extracted, reused or
        resumed)."""
        cfg = self.cfg
        return extract(
            self.modules,
            utterances_from_rows(rows),
            pathlib.Path(cfg["embeddings_folder"]) / name,
            sample_rate=self.sample_rate,
            batch_size=cfg["batch_size"],
            max_batch_seconds=cfg["max_batch_seconds"],
            num_workers=cfg["num_workers"],
            num_crops=cfg["num_crops"],
            crop_seconds=cfg["crop_seconds"],
            transform=transform,
            max_chunk_seconds=cfg["max_chunk_seconds"],
            chunk_overlap_seconds=cfg["chunk_overlap_seconds"],
            model_id=self.model_id,
        )


def cohort_rows(cfg, train_hparams):
    """Training regions for the AS-norm cohort / the training mean, and
    the speaker of each: at most ``cohort_max_files``, dealt round-robin
    over the speakers (each speaker's regions in a seeded shuffle), so
    that a capped cohort still covers every speaker rather than the first
    ones in sorted order."""
    regions, speakers = {}, {}
    for row in read_csv_rows(train_hparams["train_annotation"]):
        uid = f"{row['wav']}:{row['utt_start']}-{row['utt_stop']}"
        region = dict(row, ID=uid, start=row["utt_start"], stop=row["utt_stop"])
        region["duration"] = ""
        regions.setdefault(uid, region)
        speakers[uid] = row["spk_id"]
    by_speaker = {}
    for uid in sorted(regions):
        by_speaker.setdefault(speakers[uid], []).append(uid)
    rng = random.Random(cfg["cohort_seed"])
    queues = []
    for spk in sorted(by_speaker):
        rng.shuffle(by_speaker[spk])
        queues.append(by_speaker[spk])
    dealt = []
    for rank in range(max(map(len, queues), default=0)):
        dealt.extend(queue[rank] for queue in queues if rank < len(queue))
    chosen = sorted(dealt[: cfg["cohort_max_files"]])
    return [regions[uid] for uid in chosen], speakers


def main(argv):
    """Scores the trial list of a trained run (see verification.yaml)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    cfg, _ = load_recipe_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    # SpeechBrain's logging setup (screen + a log file in the run folder),
    # which create_experiment_directory does for training.
    sb.utils.logger.setup_logging(
        sb.core.DEFAULT_LOG_CONFIG,
        {"handlers": {"file_handler": {"filename": cfg["verification_log"]}}},
    )
    device = run_opts["device"] or (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )
    if cfg["score_norm"] not in (None, "none", "as-norm"):
        raise RecipeError(
            f"score_norm must be null or as-norm, got {cfg['score_norm']!r}"
        )
    conditions = []
    if cfg["conditions"]:
        # Parsed before any embedding: a typo must not cost an extraction.
        conditions = parse_conditions(
            cfg["conditions"], cfg["noise_folder"], cfg["rir_folder"]
        )
    # Read before any embedding, so that a wrong path costs no extraction.
    enrolment = None
    if cfg["enrolment_map"]:
        if not pathlib.Path(cfg["enrolment_map"]).is_file():
            raise DataPreparationError(
                f"enrolment_map '{cfg['enrolment_map']}' does not exist (a "
                "CN-Celeb run writes save/cnceleb/enroll_avg.map and "
                "enroll_concat.map: --protocol is avg or concat)"
            )
        enrolment = read_enrolment(cfg["enrolment_map"])
    groups = (
        read_trial_groups(cfg["trial_groups"]) if cfg["trial_groups"] else None
    )
    other_calibrations = {
        str(path): ScoreCalibrator.load(path)
        for path in (cfg["compare_calibration"] or [])
    }
    train_hparams, modules = load_trained_model(
        cfg["output_folder"], device, cfg["average_last"]
    )
    modules = (
        modules["ssl_encoder"],
        modules["mean_var_norm"],
        modules["embedding_model"],
    )
    trials, trials_file, rows = trial_rows(
        cfg, train_hparams, enrolment=enrolment
    )
    labels = labels_of(trials)
    calibration = (
        calibration_rows(cfg, train_hparams) if cfg["calibrate"] else None
    )
    model_id = f"{pathlib.Path(cfg['output_folder']).resolve()}#avg{cfg['average_last']}"
    extractor = Extractor(cfg, modules, train_hparams["sample_rate"], model_id)
    store = extractor("test", rows)

    score_norm = cfg["score_norm"] if cfg["score_norm"] != "none" else None
    cohort = mean = None
    if score_norm == "as-norm" or cfg["subtract_mean"]:
        regions, speakers = cohort_rows(cfg, train_hparams)
        cohort_store = extractor("cohort", regions)
        if score_norm == "as-norm":
            cohort, mean = speaker_cohort(cohort_store, speakers)
        else:
            mean = cohort_store.vectors().mean(0)
    if enrolment is not None:
        # Models are built with the mean that scoring subtracts.
        used = {t.enrol for t in trials}
        models = enrol_models(
            store, {m: u for m, u in enrolment.items() if m in used}, mean
        )
        store = EmbeddingStore.concat([store, models])
    calibration_store = None
    if calibration is not None:
        calibration_store = extractor("calibration", calibration[2])
    condition_stores = {}
    test_ids = sorted({t.test for t in trials})
    test_rows = [r for r in rows if r["ID"] in set(test_ids)]
    for condition in conditions:
        if condition.name != "clean":
            condition_stores[condition.name] = extractor(
                condition.name, test_rows, transform=condition
            )
    if not if_main_process():
        return None

    top_n = cfg["cohort_top_n"]
    scoring = scoring_settings(cohort, mean, top_n)
    details = score_store(trials, store, cohort, top_n, mean)
    scores = details["scores"]
    result = {
        **verification_results(scores, labels),
        "num_trials": len(trials),
        "num_target": int(labels.sum()),
        "score_norm": cfg["score_norm"],
        "subtract_mean": scoring["subtract_mean"],
        "num_crops": cfg["num_crops"],
        "pet_method": train_hparams["pet_method"],
        "ssl_hub": str(train_hparams["ssl_hub"]),
        "verification_file": str(trials_file),
        "enrolment_map": cfg["enrolment_map"] and str(cfg["enrolment_map"]),
    }
    if calibration is not None:
        cal_trials, cal_file, _ = calibration
        cal_details = score_store(
            cal_trials, calibration_store, cohort, top_n, mean
        )
        result["calibration"] = {
            "trials": str(cal_file),
            "num_trials": len(cal_trials),
        }
        try:
            calibrator = fit_calibration(
                cal_trials,
                calibration_store,
                cal_details,
                cfg["calibration_quality"],
                cfg["calibration_p_target"],
                # The model too: compare_calibration tells a calibration of
                # these scores from one of another model's.
                extra={**scoring, "model": model_id, "trials": str(cal_file)},
            )
        except CalibrationError as err:
            # The raw scores and their metrics are still what the user ran
            # verification for: report them, without a calibration.
            logger.warning("No calibration written: %s", err)
            result["calibration"]["skipped"] = str(err)
            calibrator = None
        if calibrator is not None:
            calibrator.save(cfg["calibration_file"])
            llrs = apply_calibration(
                calibrator, trials, store, details, scoring
            )
            result["calibrated"] = verification_results(llrs, labels)
            result["calibration"].update(
                features=list(calibrator.names),
                file=str(cfg["calibration_file"]),
            )
            write_scores(
                pathlib.Path(cfg["scores_file"]).with_name(
                    f"calibrated_{pathlib.Path(cfg['scores_file']).name}"
                ),
                trials,
                llrs.tolist(),
            )
    elif cfg["calibrate"] and calibration is None:
        logger.info(
            "No calibration: the run has no validation trials; give "
            "--calibration_trials to calibrate"
        )
    if other_calibrations:
        compared = compare_calibrations(
            other_calibrations,
            result,
            trials,
            store,
            details,
            scoring,
            model_id,
        )
        result["calibration_comparison"] = compared
    if groups is not None:
        group_rows = group_results(trials, scores, groups)
        result["groups"] = group_rows
        table = write_group_report(group_rows, cfg["groups_file"])
        logger.info("EER per trial group:\n%s", table)

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
    write_scores(cfg["scores_file"], trials, scores.tolist())

    if conditions:
        table_rows = []
        folder = pathlib.Path(cfg["conditions_folder"])
        folder.mkdir(parents=True, exist_ok=True)
        for condition in conditions:
            if condition.name == "clean":
                cond_trials, cond_store = trials, store
            else:
                cond_trials, cond_store = with_test_side(
                    trials,
                    store,
                    condition_stores[condition.name],
                    condition.name,
                )
            cond_scores = score_store(
                cond_trials, cond_store, cohort, top_n, mean
            )["scores"]
            metrics = verification_results(cond_scores, labels)
            table_rows.append(
                {
                    "condition": condition.name,
                    "description": condition.description,
                    "eer": metrics["eer"],
                    "min_dcf": metrics["min_dcf"],
                    "num_trials": len(trials),
                }
            )
            save_evaluation_plots(
                folder / f"{condition.name}_det.png",
                folder / f"{condition.name}_score_histogram.png",
                cond_scores,
                labels,
                f"{train_hparams['pet_method']}: {condition.description}",
            )
        table = write_condition_report(table_rows, folder)
        result["conditions"] = table_rows
        logger.info("Robustness conditions:\n%s", table)

    atomic_write(cfg["results_file"], json.dumps(result, indent=2))
    save_evaluation_plots(
        cfg["det_plot"],
        cfg["score_histogram"],
        scores,
        labels,
        f"{result['pet_method']} DET",
    )
    save_model_plots(cfg, modules, store)
    logger.info(
        "EER %.2f %%, minDCF(0.01) %.4f, minDCF(0.05) %.4f, Cllr %.3f "
        "(min %.3f) on %d trials -> %s",
        100 * result["eer"],
        result["min_dcf"],
        result["min_dcf_0.05"],
        result["cllr"],
        result["min_cllr"],
        len(trials),
        cfg["results_file"],
    )
    print(json.dumps(result))
    return result


def compare_calibrations(
    calibrations, result, trials, store, details, scoring, model_id
):
    """The calibration metrics of these scores under each given
    calibration (e.g. one fitted on VoxCeleb trials) beside this run's own
    (fitted on its calibration trials, e.g. CN-Celeb dev speakers): the
    cross-domain shift shows as a larger Cllr and actual DCF at the same
    EER. A calibration fitted on another model's scores is applied too,
    with a warning: its Cllr mixes the change of model with that of
    domain."""
    labels = labels_of(trials)
    rows = []
    if "calibrated" in result:
        rows.append(
            {
                "calibration": "this run's",
                "fitted_on": result["calibration"]["trials"],
                "model": model_id,
                "same_model": True,
                **result["calibrated"],
            }
        )
    for path, calibrator in calibrations.items():
        llrs = apply_calibration(calibrator, trials, store, details, scoring)
        fitted_model = calibrator.scoring.get("model")
        if fitted_model not in (None, model_id):
            logger.warning(
                "%s was fitted on the scores of another model (%s), not of "
                "this one (%s): its Cllr mixes the change of model with the "
                "change of domain. Fit one with this model on the other "
                "domain's trials (recipes/CNCeleb/SpeakerRec/README.md).",
                path,
                fitted_model,
                model_id,
            )
        rows.append(
            {
                "calibration": path,
                "fitted_on": calibrator.scoring.get("trials", "unknown"),
                "model": fitted_model,
                "same_model": fitted_model == model_id,
                **verification_results(llrs, labels),
            }
        )
    for row in rows:
        logger.info(
            "Calibration %s: Cllr %.3f (min %.3f), actual DCF %.4f, minDCF "
            "%.4f",
            row["calibration"],
            row["cllr"],
            row["min_cllr"],
            row["act_dcf"],
            row["min_dcf"],
        )
    return rows


def save_model_plots(cfg, modules, store):
    """The learned layer weights and the mean UniPET gates over the trial
    utterances (skipped without matplotlib)."""
    try:
        from speechbrain_unipet.evaluation.plotting import (
            plot_gates,
            plot_layer_weights,
        )

        weights = learned_layer_weights(modules)
        if weights:
            plot_layer_weights(weights, cfg["layer_weights_plot"])
        gates = store.meta.get("gate_means")
        if gates:
            plot_gates(gates, cfg["gates_plot"])
    except ImportError as err:
        logger.warning("No layer / gate plots: %s", err)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (UserError, FileNotFoundError) as err:
        sys.exit(f"ERROR: {err}")
    finish_distributed()
