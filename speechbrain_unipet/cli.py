"""The ``speechbrain-unipet`` command line (also ``python -m
speechbrain_unipet``): embed, score, calibrate, threshold, verify, plot,
export, make-shards.

> speechbrain-unipet embed MODEL AUDIO STORE        # folder / list / CSV -> store
> speechbrain-unipet score TRIALS STORE --output DIR [--cohort STORE]
> speechbrain-unipet calibrate TRIALS STORE --output calibration.json
> speechbrain-unipet threshold SCORES --far 0.01
> speechbrain-unipet verify MODEL a.wav b.wav
> speechbrain-unipet plot MODEL --output DIR [--store STORE]
> speechbrain-unipet export RUN HUB [--copy-backbone]  # = python -m speechbrain_unipet.export
> speechbrain-unipet make-shards DATA OUT [--max-count 1000] [--max-bytes 1GB]
> speechbrain-unipet --version

``MODEL`` is a training run's output folder or an exported model folder.
Exit codes: 0 done, 1 bad input (the message says what and how to fix
it), 2 bad command-line usage (argparse), 130 interrupted. A refused run
writes nothing: inputs and settings are checked before the first file.

Authors
 * speechbrain-unipet contributors 2026
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet import __version__
from speechbrain_unipet.data.shards import (
    is_shard_folder,
    make_shards,
    parse_size,
)
from speechbrain_unipet.data.trials import read_enrolment, read_trials
from speechbrain_unipet.evaluation.conditions import (
    parse_conditions,
)
from speechbrain_unipet.evaluation.extraction import extract
from speechbrain_unipet.evaluation.plotting import (
    plot_gates,
    plot_layer_weights,
)
from speechbrain_unipet.evaluation.reports import (
    apply_calibration,
    check_scoring,
    fit_calibration,
    labels_of,
    learned_layer_weights,
    read_scores,
    save_evaluation_plots,
    score_store,
    scoring_settings,
    verification_results,
    write_scores,
)
from speechbrain_unipet.evaluation.utterances import read_utterances
from speechbrain_unipet.export import add_arguments as add_export_options
from speechbrain_unipet.export import (
    add_calibration,
    check_calibration_target,
    run,
)
from speechbrain_unipet.inference import verify_files
from speechbrain_unipet.onnx import OnnxSpeakerModel, is_onnx_export
from speechbrain_unipet.onnx_export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    export_onnx,
)
from speechbrain_unipet.scoring.calibration import ScoreCalibrator
from speechbrain_unipet.scoring.cosine import enrol_models, speaker_cohort
from speechbrain_unipet.scoring.metrics import (
    act_dcf,
    bayes_threshold,
    threshold_for_far,
)
from speechbrain_unipet.scoring.store import EmbeddingStore
from speechbrain_unipet.training.runs import open_model
from speechbrain_unipet.utils.distributed import finish_distributed
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import atomic_write

logger = get_logger(__name__)


class CLIError(UserError, ValueError):
    """Arguments that do not fit together."""


def _device(name):
    return name or ("cuda:0" if torch.cuda.is_available() else "cpu")


def _init_distributed():
    """Joins the process group of a ``torchrun`` launch (sharded
    extraction); a plain launch runs alone."""
    import os

    if "RANK" in os.environ and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            return f"cuda:{local}"
    return None


def _onnx_model(args):
    """The ONNX runtime model of ``--onnx`` (or an ONNX folder), else None."""
    if not (args.onnx or is_onnx_export(args.model)):
        return None
    return OnnxSpeakerModel(args.model, int8=args.int8, threads=args.threads)


def cmd_embed(args):
    """``embed``: audio -> an embedding store."""

    onnx_model = _onnx_model(args)
    if onnx_model is not None:
        utterances = read_utterances(args.audio)
        embeddings = [
            onnx_model.embed_file(u.path, u.start, u.stop) for u in utterances
        ]
        store = EmbeddingStore(
            [u.id for u in utterances],
            np.stack(embeddings),
            meta={"model": str(args.model), "runtime": "onnx"},
        )
        store.save(args.store)
        print(
            f"{len(store)} embeddings of dimension {store.dim} in {args.store}"
        )
        return

    device = _init_distributed() or _device(args.device)
    model = open_model(args.model, device, args.average_last)
    transform = None
    if args.condition:
        conditions = parse_conditions(
            args.condition, args.noise_folder, args.rir_folder
        )
        if len(conditions) != 1:
            raise CLIError(
                "embed takes one --condition (score several with "
                "speaker_verification_cosine.py --conditions)"
            )
        transform = conditions[0]
    store = extract(
        model.parts,
        read_utterances(args.audio),
        args.store,
        shards=args.audio if is_shard_folder(args.audio) else None,
        sample_rate=model.sample_rate,
        batch_size=args.batch_size
        or (32 if str(device).startswith("cuda") else 1),
        max_batch_seconds=args.max_batch_seconds,
        num_workers=args.num_workers
        if args.num_workers is not None
        else (2 if str(device).startswith("cuda") else 0),
        num_crops=args.crops,
        crop_seconds=args.crop_seconds,
        transform=transform,
        model_id=model.model_id,
        **model.chunking,
    )
    print(f"{len(store)} embeddings of dimension {store.dim} in {args.store}")


def _speakers_of(ids, utt2spk):
    """Speaker of each cohort id: from a ``utt speaker`` file, else the
    first path component of the id (VoxCeleb and speaker-folder ids)."""
    if utt2spk:
        table = {}
        for line in pathlib.Path(utt2spk).read_text("utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2:
                table[parts[0]] = parts[1]
        missing = [i for i in ids if i not in table]
        if missing:
            raise CLIError(
                f"{utt2spk} gives no speaker for {len(missing)} cohort "
                f"id(s), e.g. {missing[:3]}"
            )
        return table
    flat = [i for i in ids if "/" not in i]
    if flat:
        raise CLIError(
            f"Cohort ids such as {flat[0]!r} do not start with a speaker "
            "folder: give --cohort-speakers (lines 'utterance speaker')"
        )
    return {i: i.split("/", 1)[0] for i in ids}


def _scoring_inputs(args):
    """Trials, the store (with enrolment models), cohort and mean."""

    if args.cohort and args.subtract_mean:
        raise CLIError(
            "--subtract-mean and --cohort together: AS-norm subtracts the "
            "cohort's own mean already; drop --subtract-mean"
        )
    trials = read_trials(args.trials)
    store = EmbeddingStore.load(args.store)
    cohort = mean = None
    if args.cohort:
        cohort_store = EmbeddingStore.load(args.cohort)
        cohort, mean = speaker_cohort(
            cohort_store, _speakers_of(cohort_store.ids, args.cohort_speakers)
        )
    if args.subtract_mean:
        mean = EmbeddingStore.load(args.subtract_mean).vectors().mean(0)
    if args.enrolment:
        # Models are built with the mean that scoring subtracts.
        models = enrol_models(store, read_enrolment(args.enrolment), mean)
        store = EmbeddingStore.concat([store, models])
    return trials, store, cohort, mean


def _add_scoring_options(parser):
    parser.add_argument(
        "trials", help="trial list (VoxCeleb, CN-Celeb or Kaldi format)"
    )
    parser.add_argument("store", help="embedding store of the trial utterances")
    parser.add_argument(
        "--enrolment",
        help="enrolment list: 'model utt1 [utt2 ...]' per line; a model is "
        "the mean of its utterances' embeddings (default: none, the trials "
        "name utterances of the store)",
    )
    parser.add_argument(
        "--cohort",
        help="store of training utterances: AS-norm with this cohort "
        "(default: none, plain cosine scores)",
    )
    parser.add_argument(
        "--cohort-speakers",
        help="'utterance speaker' lines for the cohort store (default: the "
        "first folder of each id)",
    )
    parser.add_argument(
        "--top-n",
        type=int,
        default=300,
        help="AS-norm: each side is normalised by the mean and spread of "
        "its N highest cohort scores (default: %(default)s)",
    )
    parser.add_argument(
        "--subtract-mean",
        help="store whose mean embedding is subtracted before scoring (e.g. "
        "training utterances); AS-norm subtracts the cohort's mean already "
        "(default: none)",
    )


def cmd_score(args):
    """``score``: trials + store -> scores.txt and results.json."""

    trials, store, cohort, mean = _scoring_inputs(args)
    scoring = scoring_settings(cohort, mean, args.top_n)
    calibrator = None
    if args.calibration:
        # Refused before the (slow) scoring and before any file is written.
        calibrator = ScoreCalibrator.load(args.calibration)
        check_scoring(calibrator, scoring)
    details = score_store(trials, store, cohort, args.top_n, mean)
    scores = details["scores"]
    llrs = None
    if calibrator is not None:
        llrs = apply_calibration(calibrator, trials, store, details, scoring)
    result = {"num_trials": len(trials), **scoring}
    labels = None
    if {t.label for t in trials} == {0, 1}:
        labels = labels_of(trials)
        result.update(verification_results(scores, labels))
        if llrs is not None:
            result["calibrated"] = verification_results(llrs, labels)
    # Everything is computed and checked: only now is the output written.
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_scores(out / "scores.txt", trials, scores.tolist())
    if llrs is not None:
        write_scores(out / "calibrated_scores.txt", trials, llrs.tolist())
    atomic_write(out / "results.json", json.dumps(result, indent=2))
    if labels is not None:
        save_evaluation_plots(
            out / "det.png", out / "score_histogram.png", scores, labels, "DET"
        )
    print(json.dumps(result))


def cmd_calibrate(args):
    """``calibrate``: fits a QMF calibrator on calibration trials."""

    trials, store, cohort, mean = _scoring_inputs(args)
    details = score_store(trials, store, cohort, args.top_n, mean)
    quality = [q for q in args.quality.split(",") if q and q != "none"]
    scoring = scoring_settings(cohort, mean, args.top_n)
    calibrator = fit_calibration(
        trials, store, details, quality, args.p_target, extra=scoring
    )
    if args.export_folder:
        # A calibration the model cannot take is refused before it is saved.
        check_calibration_target(args.export_folder, calibrator)
    calibrator.save(args.output)
    labels = labels_of(trials)
    before = verification_results(details["scores"], labels)
    after = verification_results(
        apply_calibration(calibrator, trials, store, details, scoring),
        labels,
    )
    print(
        f"Calibration ({', '.join(calibrator.names)}) -> {args.output}: "
        f"Cllr {before['cllr']:.3f} -> {after['cllr']:.3f} on its own "
        f"trials (min Cllr {before['min_cllr']:.3f})"
    )
    if args.export_folder:
        add_calibration(args.export_folder, calibrator)
        print(f"{args.export_folder} now returns calibrated scores")


def cmd_threshold(args):
    """``threshold``: a decision threshold from scored trials or a prior."""

    if args.p_target is not None:
        if args.far is not None:
            raise CLIError(
                "--far and --p-target ask for two different thresholds: "
                "give one (--far: a false-accept rate on SCORES; "
                "--p-target: the Bayes decision of calibrated scores)"
            )
        t = bayes_threshold(args.p_target)
        print(
            f"threshold {t:.6f}: the Bayes decision for calibrated scores "
            f"(LLRs) at a target prior of {args.p_target}"
        )
        if args.scores is not None:
            # The threshold does not depend on the scores; what they give
            # at it does: the error rates of that decision on them.
            trials, scores = read_scores(args.scores)
            labels = np.array([t.label for t in trials], dtype=bool)
            parts = []
            if (~labels).any():
                fa = float((scores[~labels] >= t).mean())
                parts.append(
                    f"false-accept rate {100 * fa:.3f} % on "
                    f"{int((~labels).sum())} non-target trials"
                )
            if labels.any():
                miss = float((scores[labels] < t).mean())
                parts.append(
                    f"miss rate {100 * miss:.3f} % on "
                    f"{int(labels.sum())} target trials"
                )
            if labels.any() and (~labels).any():
                cost = act_dcf(scores[labels], scores[~labels], args.p_target)
                parts.append(f"actual DCF {cost:.4f}")
            print(
                f"on {args.scores} (read as LLRs, e.g. calibrated_scores.txt)"
                f": {', '.join(parts)}"
            )
        return
    if args.scores is None or args.far is None:
        raise CLIError(
            "give a score file and --far (a false-accept rate), or "
            "--p-target for calibrated scores"
        )
    trials, scores = read_scores(args.scores)
    labels = np.array([t.label for t in trials], dtype=bool)
    if not (~labels).any():
        raise CLIError(f"{args.scores} has no non-target trials")
    result = threshold_for_far(scores[~labels], args.far)
    threshold, achieved = result[0], result[1]
    miss = float((scores[labels] < threshold).mean()) if labels.any() else None
    print(
        # repr: the shortest text that reads back as this very float (the
        # threshold sits just above a score; rounding could land on it).
        f"threshold {threshold!r}: accept scores >= it; false-accept rate {100 * achieved:.3f} % "
        f"on {int((~labels).sum())} non-target trials (target "
        f"{100 * args.far:g} %)"
        + (f", miss rate {100 * miss:.3f} %" if miss is not None else "")
    )


def cmd_verify(args):
    """``verify``: are two recordings the same speaker?"""

    onnx_model = _onnx_model(args)
    if onnx_model is not None:
        result = onnx_model.verify_files(args.a, args.b, args.threshold)
        print(json.dumps(result))
        return

    result = verify_files(
        args.model, args.a, args.b, _device(args.device), args.threshold
    )
    print(json.dumps(result))


def cmd_export_onnx(args):
    """``export-onnx``: a run or exported model -> an ONNX folder."""

    config = export_onnx(
        args.model,
        args.out,
        opset=args.opset,
        int8=args.int8,
        check=not args.no_check,
        average_last=args.average_last,
    )
    print(f"wrote {pathlib.Path(args.out) / config['model']}")
    for key in ("parity", "parity_int8"):
        if key in config:
            print(
                f"{key}: min cosine to PyTorch {config[key]['min_cosine']:.6f}"
            )


def _add_onnx_runtime_options(parser):
    """``--onnx``, ``--int8``, ``--threads`` of embed and verify."""
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="MODEL is an ONNX folder (export-onnx): run it with "
        "onnxruntime (default: off; implied when MODEL holds "
        "onnx_config.json)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: run the int8 model (default: off)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="with --onnx: onnxruntime threads (default: onnxruntime's choice)",
    )


def cmd_plot(args):
    """``plot``: layer weights and UniPET gates of a trained model."""

    model = open_model(args.model, _device(args.device))
    weights = learned_layer_weights(model.parts)
    gates = None
    if args.store:
        gates = EmbeddingStore.load(args.store).meta.get("gate_means")
        if not gates:
            raise CLIError(
                f"{args.store} holds no gate values: only unipet models have "
                "gates (embed with a unipet model first)"
            )
    if not weights and not gates:
        raise CLIError(
            f"{args.model} has no learned layer weights to plot (give "
            "--store for UniPET gates)"
        )
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if weights:
        plot_layer_weights(weights, out / "layer_weights.png")
        written.append(out / "layer_weights.png")
    if gates:
        plot_gates(gates, out / "gates.png")
        written.append(out / "gates.png")
    print("\n".join(str(p) for p in written))


def cmd_export(args):
    """``export``: a training run -> an exported model folder (what
    ``python -m speechbrain_unipet.export`` does)."""

    run(args)


def cmd_make_shards(args):
    """``make-shards``: a corpus -> WebDataset tar shards (resumable)."""

    s = make_shards(
        args.data,
        args.out,
        data_format=args.data_format,
        max_count=args.max_count,
        max_bytes=args.max_bytes,
        seed=args.seed,
        num_workers=args.workers,
        overwrite=args.overwrite,
    )
    print(
        f"{s['shards']} shards in {s['folder']} ({s['written']} written, "
        f"{s['skipped']} complete already): {s['utterances']} utterances of "
        f"{s['speakers']} speakers, {s['hours']:.2f} h, {s['bytes']} bytes "
        f"({s['bytes'] / 1e9:.2f} GB), in {s['seconds']:.1f} s"
        + (
            f"; {s['dropped_empty']} empty recording(s) skipped"
            if s["dropped_empty"]
            else ""
        )
    )


def _size(text):
    """argparse type of ``--max-bytes``: ``parse_size`` with its message."""
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


DEVICE_HELP = "torch device (default: cuda:0 where CUDA is available, else cpu)"


def build_parser():
    """The argument parser of every command.

    Returns
    -------
    argparse.ArgumentParser

    Example
    -------
    >>> build_parser().parse_args(["threshold", "--p-target", "0.01"]).command
    'threshold'
    >>> build_parser().parse_args(["export", "run", "hub"]).average_last
    0
    """

    parser = argparse.ArgumentParser(
        prog="speechbrain-unipet", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="audio -> embedding store")
    p.add_argument("model", help="training run folder or exported model")
    p.add_argument(
        "audio",
        help="folder of audio, shard folder (make-shards), list file or prepared CSV",
    )
    p.add_argument("store", help="store folder to write (resumed if killed)")
    p.add_argument("--device", help=DEVICE_HELP)
    _add_onnx_runtime_options(p)
    p.add_argument(
        "--batch-size",
        type=int,
        help="utterances per batch (default: 32 on CUDA; 1 on CPU, where "
        "batching does not pay: benchmarks/extraction.py)",
    )
    p.add_argument(
        "--max-batch-seconds",
        type=float,
        default=240.0,
        help="most seconds of padded audio in a batch (default: %(default)s)",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        help="audio-decoding processes (default: 2 on CUDA, 0 on CPU, where "
        "they would take the cores the model needs)",
    )
    p.add_argument(
        "--crops",
        type=int,
        default=0,
        help="N test-time crops: the mean embedding of N windows spread "
        "over each longer utterance (default: %(default)s, whole "
        "utterances)",
    )
    p.add_argument(
        "--crop-seconds",
        type=float,
        default=8.0,
        help="length of each test-time crop (default: %(default)s)",
    )
    p.add_argument(
        "--condition",
        help="degrade the audio, e.g. noise:5, reverb, truncate:2, "
        "telephone (default: none, the audio as it is)",
    )
    p.add_argument(
        "--noise-folder",
        help="noise files for --condition noise:SNR (default: none, "
        "generated pink noise)",
    )
    p.add_argument(
        "--rir-folder",
        help="impulse responses for --condition reverb (default: none; "
        "reverb needs it)",
    )
    p.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="N",
        help="training runs: embed with the mean of the last N end-of-epoch "
        "checkpoints (default: %(default)s, the best checkpoint)",
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("score", help="trials + store -> scores, results")
    _add_scoring_options(p)
    p.add_argument(
        "--calibration",
        help="calibration.json from calibrate: also write "
        "calibrated_scores.txt (default: none)",
    )
    p.add_argument("--output", required=True, help="folder for the results")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("calibrate", help="fit a score calibration")
    _add_scoring_options(p)
    p.add_argument(
        "--quality",
        default="duration,norm,cohort",
        help="quality measures: duration, norm, cohort (AS-norm), or none "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--p-target",
        type=float,
        default=None,
        help="objective of the fit: a prior p gives BOSARIS's "
        "prior-weighted Cllr at p (default: none, WeSpeaker's Cllr, each "
        "class's mean cost weighted equally)",
    )
    p.add_argument("--output", required=True, help="calibration JSON to write")
    p.add_argument(
        "--export-folder",
        help="also store the calibration in this exported model, so that "
        "CalibratedSpeakerRecognition returns calibrated scores "
        "(default: none)",
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("threshold", help="a decision threshold")
    p.add_argument(
        "scores",
        nargs="?",
        help="scores.txt of a scored list (with --p-target: calibrated "
        "scores, whose error rates at the threshold are reported)",
    )
    p.add_argument(
        "--far",
        type=float,
        help="target false-accept rate in [0, 1]: the lowest threshold "
        "reaching it on SCORES (default: none; give --far or --p-target)",
    )
    p.add_argument(
        "--p-target",
        type=float,
        help="prior of a target trial: the Bayes threshold of calibrated "
        "scores (default: none; give --far or --p-target)",
    )
    p.set_defaults(func=cmd_threshold)

    p = sub.add_parser("verify", help="same speaker? (two audio files)")
    p.add_argument("model", help="training run folder or exported model")
    p.add_argument("a", help="first audio file")
    p.add_argument("b", help="second audio file")
    p.add_argument(
        "--threshold",
        type=float,
        help="accept scores >= it (default: an exported model's "
        "calibrated decision; without calibration no decision)",
    )
    p.add_argument("--device", help=DEVICE_HELP)
    _add_onnx_runtime_options(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("plot", help="layer weights and gates of a model")
    p.add_argument("model", help="training run folder or exported model")
    p.add_argument(
        "--store",
        help="a store embedded with the model: also plot UniPET gates "
        "(default: none, layer weights only)",
    )
    p.add_argument("--output", required=True, help="folder for the plots")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "export",
        help="training run -> exported model folder",
        description="Export a trained PET speaker model (as python -m "
        "speechbrain_unipet.export).",
    )
    add_export_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "export-onnx",
        help="training run or exported model -> ONNX folder",
        description="Export the whole waveform-to-embedding model to ONNX "
        "(dynamic batch and time; see speechbrain_unipet.onnx_export).",
    )
    p.add_argument("model", help="training run folder or exported model")
    p.add_argument("out", help="new or empty folder to write")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset (at least {MIN_OPSET}; default: %(default)s)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write embedding.int8.onnx (dynamic int8 weights; "
        "default: off)",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the parity check against PyTorch (default: off)",
    )
    p.add_argument(
        "--average-last",
        type=int,
        default=0,
        help="training runs: average the last N end-of-epoch checkpoints "
        "(default: %(default)s, the best)",
    )
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser(
        "make-shards",
        help="corpus -> WebDataset tar shards",
        description="Write the recordings of DATA as WebDataset tar shards "
        "(16 kHz mono FLAC with speaker, id and duration; "
        "speechbrain_unipet.data.shards). Resumable: run it again to finish "
        "a killed run.",
    )
    p.add_argument(
        "data", help="data folder (any layout of data_format; a,b combines)"
    )
    p.add_argument(
        "out", help="shard folder to write (new, empty, or one to resume)"
    )
    p.add_argument(
        "--data-format",
        help="voxceleb, speaker_folders, csv, kaldi or cnceleb (default: "
        "none, detected)",
    )
    p.add_argument(
        "--max-count",
        type=int,
        default=1000,
        help="most utterances in a shard (default: %(default)s, as "
        "WeSpeaker's shards)",
    )
    p.add_argument(
        "--max-bytes",
        type=_size,
        help="most bytes in a shard, estimated from the durations, e.g. "
        "500MB, 1GB or plain bytes (default: none, by count only)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1986,
        help="seed of the utterance order (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="processes inspecting the audio and writing shards (default: "
        "none, one per CPU core)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace shards written with other options or data (default: "
        "off, refused)",
    )
    p.set_defaults(func=cmd_make_shards)
    return parser


def main(argv=None):
    """Runs one command; returns the exit code.

    Arguments
    ---------
    argv : list of str or None
        Arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
    """

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        finish_distributed()  # under torchrun (embed): leave cleanly
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as err:
        # FileNotFoundError: a file the user named, and the OS message names it
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
