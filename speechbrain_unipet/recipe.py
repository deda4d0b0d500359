"""Shared pieces of the speaker-verification recipes (training, scoring,
export): hparams loading, data pipelines, back-end construction, embedding.

Recipe YAML layout: one self-contained ``recipes/.../hparams/<method>.yaml``
per PET method, as in SpeechBrain's own recipes. Its method options are
top-level keys, passed to ``PETEncoder`` through ``options:``, so every key
is a command-line override (``--data_folder=...``, ``--adapter_dim=64``).
``load_recipe_hparams`` is ``load_hyperpyyaml`` with an error naming the
valid keys for a misspelt override.

Authors
 * speechbrain-unipet contributors 2026
"""

import csv
import difflib
import functools
import inspect
import io
import os
import pathlib
import re

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.audio import (
    MIN_SAMPLE_RATE,
    AudioError,
    audio_info,
    load_audio,
)
from speechbrain_unipet.backbones import SSLBackboneError
from speechbrain_unipet.checkpoints import CheckpointError
from speechbrain_unipet.data_prep import (
    CSV_HEADER,
    VALID_TRIALS_FILE,
    DataPreparationError,
)
from speechbrain_unipet.embedding import InvalidAudioError, speaker_embeddings
from speechbrain_unipet.losses import AAM_FALLBACKS
from speechbrain_unipet.metrics import eer, min_dcf
from speechbrain_unipet.pet import get_method
from speechbrain_unipet.pet.component import check_option
from speechbrain_unipet.schedules import LR_SCHEDULES, SCHEDULE_TYPES
from speechbrain_unipet.scoring import TrialListError, read_trials, score_trials

logger = get_logger(__name__)


def _yaml_mapping(text):
    if not text:
        return {}
    data = YAML(typ="safe").load(text)
    return dict(data or {})


def _top_keys(path):
    with open(path, encoding="utf-8") as f:
        return YAML().load(f) or {}


def _settable_keys(top):
    """Top-level keys holding values (not objects) a user would override."""
    keys = []
    for key, value in top.items():
        tag = getattr(getattr(value, "tag", None), "value", None) or ""
        if not key.startswith("_") and not tag.startswith(
            ("!new:", "!name:", "!apply:")
        ):
            keys.append(key)
    return sorted(keys)


def _value(kind, help, minimum=None, maximum=None, choices=None):
    return {
        "kind": kind,
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
    }


#: Recipe keys whose values are checked before anything is built or
#: prepared (SpeechBrain would otherwise fail with an error naming no key,
#: or part-way through training). Same rules as the PET options.
RECIPE_VALUES = {
    "batch_size": _value("int", "ECAPA-TDNN's BatchNorm needs 2", 2),
    "number_of_epochs": _value("int", "training epochs", 1),
    "sentence_len": _value("float", "training crop in seconds", 0.1),
    "lr": _value("float", "back-end learning rate", 0.0),
    "lr_pet": _value("float", "PET learning rate", 0.0),
    "lr_final_ratio": _value("float", "final / initial learning rate", 0.0),
    "weight_decay": _value("float", "back-end weight decay", 0.0),
    "num_workers": _value("int", "data loading processes", 0),
    "ckpt_interval_minutes": _value("float", "minutes between saves", 0.0),
    "num_test_speakers": _value("int", "held-out test speakers", 0),
    "num_valid_speakers": _value("int", "held-out validation speakers", 0),
    "test_segment_len": _value("float", "trial segment in seconds", 0.1),
    "trial_utts_per_speaker": _value("int", "trial utterances per speaker", 1),
    "sample_rate": _value("int", "model sample rate", 8000),
    "emb_dim": _value("int", "embedding size", 1),
    "seed": _value("int", "random seed"),
    "amp_th": _value("float", "silence threshold", 0.0),
    "ckpt_keep_best": _value("int", "best checkpoints kept", 1),
    "noise_snr_low": _value("float", "lowest SNR of added noise (dB)"),
    "noise_snr_high": _value("float", "highest SNR of added noise (dB)"),
    "max_chunk_seconds": _value("float", "window for long utterances", 0.5),
    "chunk_overlap_seconds": _value("float", "window overlap", 0.0),
    "cohort_top_n": _value("int", "AS-norm top cohort scores", 1),
    "cohort_max_files": _value("int", "AS-norm cohort files", 1),
    "cohort_seed": _value("int", "cohort file shuffle seed"),
    "lr_schedule": _value(
        "str", "learning-rate schedule", choices=LR_SCHEDULES
    ),
    "lr_warmup_epochs": _value("float", "warm-up epochs", 0.0),
    "lr_warmup_start": _value(
        "float",
        "warm-up factor at the first step; WeSpeaker's warm_from_zero: 0",
        0.0,
        1.0,
    ),
    "lr_decay_epochs": _value(
        "float", "epochs between decays of warmup_step, 0: none", 0.0
    ),
    "lr_decay_gamma": _value("float", "decay factor of warmup_step", 0.0),
    "margin": _value("float", "AAM margin (radians)", 0.0, 1.5),
    "margin_initial": _value("float", "AAM margin at the start", 0.0, 1.5),
    "margin_increase_start": _value(
        "float", "1-based epoch where the margin starts rising", 0.0
    ),
    "margin_fix_start": _value(
        "float",
        "1-based epoch from which the margin is fixed; 0 or 1: from the start",
        0.0,
    ),
    "margin_increase_type": _value(
        "str", "margin increase", choices=SCHEDULE_TYPES
    ),
    "aam_scale": _value("float", "scale of the AAM logits; WeSpeaker: 32", 0.0),
    "aam_fallback": _value(
        "str", "target logit past the angle threshold", choices=AAM_FALLBACKS
    ),
    "sub_centers": _value("int", "sub-centres per class", 1),
    "top_k": _value("int", "inter-top-k classes", 0),
    "top_k_margin": _value(
        "float", "inter-top-k margin at margin 0.2", 0.0, 1.5
    ),
    "ckpt_keep_last": _value("int", "last checkpoints kept", 0),
    "init_average_last": _value("int", "checkpoints averaged", 0),
    "average_last": _value("int", "checkpoints averaged", 0),
    "max_batch_seconds": _value("float", "padded seconds per batch", 0.1),
    "num_crops": _value("int", "test-time crops (0: whole)", 0),
    "crop_seconds": _value("float", "test-time crop in seconds", 0.1),
    "calibration_p_target": _value(
        "float", "calibration target prior", 1e-6, 1 - 1e-6
    ),
}


#: Keys of ``RECIPE_VALUES`` for which null means something.
NULLABLE = {"max_chunk_seconds", "emb_dim", "calibration_p_target"}

#: Keys of ``RECIPE_VALUES`` that must be above their minimum (0), not at it.
POSITIVE = {"lr_final_ratio", "aam_scale", "lr_decay_gamma"}


def check_recipe_values(values, source="--"):
    """Checks the recipe keys of ``RECIPE_VALUES`` found in ``values``.

    Arguments
    ---------
    values : dict
        Overrides or loaded hyperparameters.
    source : str
        How the keys are written, for the message (``--`` for the command
        line).

    Raises
    ------
    RecipeError
        Naming the key, the value and what is allowed.

    Example
    -------
    >>> check_recipe_values({"batch_size": 8, "lr": 0.001})
    >>> check_recipe_values({"batch_size": "abc"})
    Traceback (most recent call last):
    ...
    speechbrain_unipet.recipe.RecipeError: --batch_size='abc' must be an integer >= 2 (ECAPA-TDNN's BatchNorm needs 2).
    """
    for key, meta in RECIPE_VALUES.items():
        if key not in values or (values[key] is None and key in NULLABLE):
            continue
        try:
            check_option(f"{source}{key}", values[key], meta, label="")
        except ValueError as err:
            raise RecipeError(str(err).strip()) from None
        if key in POSITIVE and values[key] <= 0:
            raise RecipeError(
                f"{source}{key}={values[key]!r} must be a number > 0 "
                f"({meta['help']})."
            )
    _check_schedule_values(values, source)
    speeds = values.get("speeds")
    if speeds is not None and (
        not isinstance(speeds, (list, tuple))
        or not speeds
        or speeds[0] != 1.0
        or not all(isinstance(v, (int, float)) and v > 0 for v in speeds)
        or len(set(speeds)) != len(speeds)
        # SpeechBrain's SpeedPerturb takes whole per cent.
        or any(abs(100 * v - round(100 * v)) > 1e-9 for v in speeds)
    ):
        raise RecipeError(
            f"{source}speeds={speeds} must be a list of distinct positive "
            "speeds in whole per cent (0.9, not 0.925) starting with 1.0 "
            "(classes of the first speed are the speakers themselves), e.g. "
            "[1.0, 0.9, 1.1]"
        )
    chunk = values.get("max_chunk_seconds")
    overlap = values.get("chunk_overlap_seconds")
    if chunk is not None and overlap is not None and overlap >= chunk:
        raise RecipeError(
            f"{source}chunk_overlap_seconds={overlap} must be shorter than "
            f"{source}max_chunk_seconds={chunk}"
        )


def _check_schedule_values(values, source):
    """The rules between schedule keys (each is checked alone first)."""
    start = values.get("margin_increase_start")
    fix = values.get("margin_fix_start")
    if start is not None and fix is not None and fix < start:
        raise RecipeError(
            f"{source}margin_fix_start={fix} comes before "
            f"{source}margin_increase_start={start}: the margin rises from "
            "the start of epoch margin_increase_start until the start of "
            "epoch margin_fix_start (1-based, as WeSpeaker); give both 0 "
            "for a fixed margin"
        )
    warmup = values.get("lr_warmup_epochs")
    epochs = values.get("number_of_epochs")
    if (
        values.get("lr_schedule") in ("warmup_exp", "warmup_step")
        and warmup is not None
        and epochs is not None
        and not warmup < epochs
    ):
        raise RecipeError(
            f"{source}lr_warmup_epochs={warmup} must be less than "
            f"{source}number_of_epochs={epochs} (lr_schedule "
            f"{values.get('lr_schedule')})"
        )


def _plain_values(top):
    """The top-level values of a yaml written as plain values (not
    ``!ref``, ``!new:`` and other tags)."""
    return {
        key: value
        for key, value in top.items()
        if getattr(getattr(value, "tag", None), "value", None) is None
    }


def load_recipe_hparams(hparams_file, overrides=None):
    """Loads a recipe yaml with command-line overrides (``load_hyperpyyaml``).

    Arguments
    ---------
    hparams_file : str
        A recipe yaml, or the ``hyperparams.yaml`` saved in a training
        output folder.
    overrides : str or dict
        Overrides as ``sb.parse_arguments`` returns them.

    Returns
    -------
    hparams : dict
        The loaded hyperparameters.
    overrides : dict
        The overrides as a mapping.

    Raises
    ------
    ValueError
        For an override key the file does not define, naming it and the
        valid keys (hyperpyyaml's own error names neither), before anything
        is built.
    """
    if isinstance(overrides, str):
        overrides = _yaml_mapping(overrides)
    overrides = dict(overrides or {})
    top = _top_keys(hparams_file)
    unknown = sorted(k for k in overrides if k not in top)
    if unknown:
        settable = _settable_keys(top)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, settable, n=2)
            if close:
                guesses = " or ".join(f"--{m}" for m in close)
                hints.append(f"--{key}: did you mean {guesses}?")
            else:
                hints.append(f"--{key} is not a key of this yaml")
        guessed = all("did you mean" in h for h in hints)
        listed = "" if guessed else f". Settable keys: {settable}"
        raise RecipeError(
            f"Unknown override(s) for {hparams_file}: "
            + "; ".join(hints)
            + listed
        )
    check_recipe_values(overrides)
    # The yaml's values with the overrides, before anything is built: the
    # rules between keys (e.g. a warm-up longer than the run) see both.
    check_recipe_values({**_plain_values(top), **overrides})
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    check_recipe_values(hparams, source="")  # values written in the yaml
    # Runs saved before the recipes were self-contained have the recipe under
    # a ``recipe`` key (and the method options as ``pet_options``); their
    # hyperparams.yaml still loads for verification and export.
    if "recipe" in hparams:
        hparams = hparams["recipe"]
    return hparams, overrides


def pet_options(hparams):
    """The PET options of a loaded recipe: the top-level keys its method
    reads (or the ``pet_options`` mapping of runs saved before the recipes
    were self-contained)."""
    if "pet_options" in hparams:
        return dict(hparams["pet_options"] or {})
    names = get_method(hparams["pet_method"]).options()
    return {k: hparams[k] for k in sorted(names) if k in hparams}


def training_speeds(hparams):
    """The speeds of speed perturbation (``(1.0,)`` without it).

    Arguments
    ---------
    hparams : dict
        Recipe hparams (``speed_perturb``, ``speeds``; runs older than
        these keys have no speed perturbation).

    Returns
    -------
    tuple

    Example
    -------
    >>> training_speeds({"speed_perturb": True, "speeds": [1.0, 0.9, 1.1]})
    (1.0, 0.9, 1.1)
    >>> training_speeds({"speed_perturb": False, "speeds": [1.0, 0.9, 1.1]})
    (1.0,)
    """
    if not hparams.get("speed_perturb"):
        return (1.0,)
    return tuple(float(v) for v in hparams["speeds"])


def num_classes(hparams, num_speakers):
    """Classifier outputs: each speed of speed perturbation makes its own
    classes (WeSpeaker, ESPnet), the first speed (1.0) the speakers' own.

    Arguments
    ---------
    hparams : dict
        Recipe hparams.
    num_speakers : int
        Training speakers.

    Returns
    -------
    int

    Example
    -------
    >>> num_classes({"speed_perturb": True, "speeds": [1.0, 0.9, 1.1]}, 10)
    30
    """
    return num_speakers * len(training_speeds(hparams))


def audio_pipeline(hparams, random_chunk, speeds=(1.0,)):
    """Data pipeline reading one CSV row's segment at the encoder's rate.

    With ``random_chunk`` the segment's length is read from a random place
    of the row's region (``utt_start``/``utt_stop``), so training crops vary
    but never reach audio set aside for dev. With several ``speeds`` each
    segment is played at one of them, chosen uniformly (SpeechBrain's
    ``SpeedPerturb`` resampling): ``length * speed`` samples are read and
    resampled to ``length``; the speed's index is provided as
    ``speed_index``.
    """
    from speechbrain.augment.time_domain import SpeedPerturb

    sample_rate = hparams["sample_rate"]
    # One single-speed perturber per speed: SpeechBrain's picks a speed at
    # random on each call without telling which, and the label needs it.
    perturbers = [None] + [
        SpeedPerturb(sample_rate, speeds=[round(100 * speed)])
        for speed in speeds[1:]
    ]

    @sb.utils.data_pipeline.takes(
        "wav", "start", "stop", "utt_start", "utt_stop"
    )
    @sb.utils.data_pipeline.provides("sig", "speed_index")
    def pipeline(wav, start, stop, utt_start, utt_stop):
        """The (cropped, speed-perturbed) waveform of one CSV row."""
        start, stop = int(start), int(stop)
        length = stop - start
        index = 0
        if len(speeds) > 1:
            index = int(torch.randint(len(speeds), (1,)))
            # The samples that last `length` once played at this speed.
            needed = round(length * speeds[index])
            start = max(int(utt_start), min(start, int(utt_stop) - needed))
            stop = min(start + needed, int(utt_stop))
        if random_chunk:
            span, last = stop - start, int(utt_stop) - (stop - start)
            if last > int(utt_start):
                start = torch.randint(int(utt_start), last + 1, (1,)).item()
                stop = start + span
        sig = load_audio(wav, sample_rate, start, stop)
        if perturbers[index] is not None:
            sig = perturbers[index](sig.unsqueeze(0)).squeeze(0)[:length]
        yield sig
        yield index

    return pipeline


def dataio_prep(hparams):
    """Train/dev datasets and the speaker label encoder (SpeechBrain style),
    after the pre-flight check of ``check_prepared_data``. With speed
    perturbation, training classes are ``speaker + speed_index *
    num_speakers`` (see ``num_classes``)."""
    datasets, speakers = {}, set()
    for split, key in (
        ("train", "train_annotation"),
        ("dev", "valid_annotation"),
    ):
        rows = read_csv_rows(hparams[key])
        speakers |= {row["spk_id"] for row in rows}
        # From the rows, not DynamicItemDataset.from_csv: that one expands
        # "$name" in values and strips leading spaces, which breaks paths
        # and speaker names that contain them.
        datasets[split] = sb.dataio.dataset.DynamicItemDataset(
            {
                row["ID"]: {k: v for k, v in row.items() if k != "ID"}
                for row in rows
            }
        )
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    # Only the class depends on the speed: the label encoder, made from
    # the static spk_id, reads no audio.
    @sb.utils.data_pipeline.takes("spk_id", "speed_index")
    @sb.utils.data_pipeline.provides("spk_id_encoded")
    def label_pipeline(spk_id, speed_index):
        """The class of a speaker at a speed."""
        encoded = label_encoder.encode_sequence_torch([spk_id])
        return encoded + speed_index * len(label_encoder)

    for split, data in datasets.items():
        data.add_dynamic_item(
            audio_pipeline(
                hparams,
                hparams.get("random_chunk", True) and split == "train",
                training_speeds(hparams) if split == "train" else (1.0,),
            )
        )
        data.add_dynamic_item(label_pipeline)
        data.set_output_keys(["id", "sig", "spk_id_encoded"])
    label_path = pathlib.Path(hparams["save_folder"]) / "label_encoder.txt"
    label_encoder.load_or_create(
        path=str(label_path),
        from_didatasets=[datasets["train"]],
        output_key="spk_id",
    )
    check_labels(speakers, label_encoder, label_path)
    return datasets["train"], datasets["dev"], label_encoder


def read_csv_rows(path, required=CSV_HEADER):
    """Rows of a prepared CSV; errors name the file and missing columns."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataPreparationError(
            f"'{path}' does not exist: run the data preparation "
            "(skip_prep: False) or point the annotation key at your CSV"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataPreparationError(
                f"'{path}' lacks the column(s) {missing} (needs "
                f"{', '.join(required)}); re-run the data preparation "
                "(skip_prep: False)"
            )
        rows = list(reader)
    if not rows:
        raise DataPreparationError(f"'{path}' holds no rows")
    return rows


def check_prepared_data(hparams, inspect_audio=False):
    """Pre-flight check of the training CSVs, before any training step.

    Every row has a positive segment inside its region and a usable sample
    rate; every audio file exists (and, with ``inspect_audio``, e.g. for
    CSVs not written by this run's preparation, opens and is long enough),
    and every dev speaker has training data. Errors name the CSV, the row or
    file, and the fix.
    """
    rows = {}
    for key in ("train_annotation", "valid_annotation"):
        rows[key] = read_csv_rows(hparams[key])
    train_speakers = {r["spk_id"] for r in rows["train_annotation"]}
    for row in rows["valid_annotation"]:
        if row["spk_id"] not in train_speakers:
            raise DataPreparationError(
                f"Dev speaker '{row['spk_id']}' of {hparams['valid_annotation']}"
                f" (row {row['ID']}) has no training data in "
                f"{hparams['train_annotation']}: the classifier cannot know "
                "it. Dev rows must come from training speakers."
            )
    checked = {}
    for key, table in rows.items():
        for row in table:
            where = f"{hparams[key]}, row {row['ID']}"
            try:
                start, stop = int(row["start"]), int(row["stop"])
                first, last = int(row["utt_start"]), int(row["utt_stop"])
                rate = int(row["sample_rate"])
            except ValueError as err:
                raise DataPreparationError(f"{where}: {err}") from err
            if not first <= start < stop <= last:
                raise DataPreparationError(
                    f"{where}: needs utt_start <= start < stop <= utt_stop"
                )
            if rate < MIN_SAMPLE_RATE:
                raise DataPreparationError(
                    f"{where}: sample_rate {rate} Hz is below "
                    f"{MIN_SAMPLE_RATE} Hz"
                )
            path = row["wav"]
            if path not in checked and not os.path.isfile(path):
                raise DataPreparationError(
                    f"{where}: audio file '{path}' does not exist"
                )
            checked[path] = max(checked.get(path, 0), last)
    if inspect_audio:
        for path, last in checked.items():
            info = audio_info(path)
            if info.frames < last:
                raise DataPreparationError(
                    f"'{path}' has {info.frames} samples, but the CSVs read "
                    f"up to sample {last}"
                )
    return {k: len(v) for k, v in rows.items()}


def check_labels(speakers, label_encoder, label_path):
    """The label encoder's classes must be exactly the ``speakers`` of the
    training and dev CSVs (dev speakers are training speakers)."""
    unknown = sorted(set(speakers) - set(label_encoder.lab2ind))
    if unknown or len(label_encoder) != len(speakers):
        raise DataPreparationError(
            f"{label_path} has {len(label_encoder)} classes but the data "
            f"{len(speakers)} speakers"
            + (f", e.g. '{unknown[0]}' is not one of them" if unknown else "")
            + " (left by an earlier run on other data?). Delete that file or "
            "use a new output_folder."
        )
    label_encoder.expect_len(len(speakers))


class RecipeError(ValueError):
    """A recipe setting that cannot work, with the key and the fix."""


#: Errors whose message says what to fix: the recipe scripts print them
#: without a traceback.
USER_ERRORS = (
    CheckpointError,
    TrialListError,
    AudioError,
    DataPreparationError,
    RecipeError,
    SSLBackboneError,
    FileNotFoundError,
)


class VerificationValidator:
    """EER and minDCF of held-out trials, measured at every validation.

    The utterances (``valid_verif.csv``, all ``test_segment_len`` long, so a
    batch holds no padding) are decoded once and kept in memory; each
    validation embeds them in batches, split across DDP processes and
    gathered, and scores the trials by cosine.

    Arguments
    ---------
    csv_path : str
        Prepared CSV of the trial utterances.
    trials_path : str
        Their trial list (``label enrol test``).
    sample_rate : int
        The encoder's rate.
    batch_size : int
        Utterances per forward pass.

    Example
    -------
    >>> import soundfile as sf, numpy as np
    >>> root = getfixture("tmp_path")
    >>> rows = []
    >>> for i, spk in enumerate("aabb"):
    ...     sf.write(
    ...         root / f"{i}.wav", np.ones(800, np.float32) * (i + 1), 8000
    ...     )
    ...     rows.append(f"u{i},0.1,{root}/{i}.wav,0,800,{spk},8000,0,800")
    >>> _ = (root / "v.csv").write_text(
    ...     ",".join(CSV_HEADER) + "\\n" + "\\n".join(rows) + "\\n"
    ... )
    >>> _ = (root / "t.txt").write_text(
    ...     "1 u0 u1\\n0 u0 u2\\n1 u2 u3\\n0 u1 u3\\n"
    ... )
    >>> val = VerificationValidator(root / "v.csv", root / "t.txt", 8000, 2)
    >>> embed = lambda wavs, lens: wavs[:, None, :2] * torch.tensor([1.0, 0.5])
    >>> val.evaluate(embed, "cpu")["EER"]
    0.5
    """

    def __init__(self, csv_path, trials_path, sample_rate, batch_size):
        self.rows = {r["ID"]: r for r in read_csv_rows(csv_path)}
        self.trials = read_trials(trials_path)
        missing = {t.enrol for t in self.trials} | {t.test for t in self.trials}
        missing -= set(self.rows)
        if missing:
            raise RecipeError(
                f"{trials_path} names utterances that {csv_path} lacks, e.g. "
                f"'{sorted(missing)[0]}': run the data preparation again"
            )
        labels = {t.label for t in self.trials}
        if labels != {0, 1}:
            raise RecipeError(
                f"{trials_path} needs target and non-target trials"
            )
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self._audio = {}
        self.skipped = set()

    def _skip(self, problems):
        """Leaves segments that cannot be embedded out of the trials (once
        logged, naming each)."""
        for uid, why in problems.items():
            if uid not in self.skipped:
                self.skipped.add(uid)
                logger.warning(
                    "EER validation leaves out %s (%s): %s",
                    uid,
                    self.rows[uid]["wav"],
                    why,
                )

    def _signal(self, uid):
        if uid not in self._audio:
            row = self.rows[uid]
            self._audio[uid] = load_audio(
                row["wav"],
                self.sample_rate,
                int(row["start"]),
                int(row["stop"]),
            )
        return self._audio[uid]

    def evaluate(self, embed, device):
        """Embeds the utterances with ``embed(wavs, lens)`` (-> [B, 1, D])
        and returns ``{"EER": ..., "minDCF": ...}`` (fractions, minDCF at
        p_target 0.01)."""
        from speechbrain.utils.data_utils import batch_pad_right

        ids = sorted(self.rows)
        rank, world = 0, 1
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            rank = torch.distributed.get_rank()
            world = torch.distributed.get_world_size()
        mine = ids[rank::world]
        embeddings = {}
        for i in range(0, len(mine), self.batch_size):
            chunk = mine[i : i + self.batch_size]
            wavs, lens = batch_pad_right([self._signal(u) for u in chunk])
            try:
                out = embed(wavs.to(device), lens.to(device))
            except InvalidAudioError as err:
                self._skip({chunk[r]: why for r, why in err.problems.items()})
                out = err.embeddings
                if out is None:
                    continue
            for uid, emb in zip(chunk, out, strict=True):
                if uid not in self.skipped:
                    embeddings[uid] = emb.reshape(-1).float().cpu()
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, embeddings)
            for part in gathered:
                embeddings.update(part)
        trials = [
            t
            for t in self.trials
            if t.enrol in embeddings and t.test in embeddings
        ]
        if {t.label for t in trials} != {0, 1}:
            return {}
        scores = score_trials(trials, embeddings)
        labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
        pos, neg = scores[labels], scores[~labels]
        return {
            "EER": eer(pos, neg)[0],
            "minDCF": min_dcf(pos, neg, p_target=0.01)[0],
        }


def verification_validator(hparams):
    """The run's ``VerificationValidator``, or None if it has no
    validation speakers (``num_valid_speakers: 0``).

    Raises
    ------
    RecipeError
        If checkpoints are to be selected by EER without validation
        speakers.
    """
    save = pathlib.Path(hparams["save_folder"])
    select = hparams.get("ckpt_select", "ErrorRate")
    if select not in ("EER", "minDCF", "ErrorRate"):
        raise RecipeError(
            f"ckpt_select must be EER, minDCF or ErrorRate, got {select!r}"
        )
    if not hparams.get("num_valid_speakers"):
        if select != "ErrorRate":
            raise RecipeError(
                f"ckpt_select: {select} needs validation speakers: set "
                "num_valid_speakers > 0, or ckpt_select: ErrorRate to select "
                "checkpoints by speaker-ID error"
            )
        return None
    return VerificationValidator(
        save / "valid_verif.csv",
        save / VALID_TRIALS_FILE,
        hparams["sample_rate"],
        hparams["batch_size"],
    )


def keep_best_checkpoint(
    checkpointer, stats, select, num_to_keep=1, keep_last=0
):
    """Saves an end-of-epoch checkpoint with ``stats`` as its meta and keeps
    the latest one, the ``num_to_keep`` best by ``select`` (lower is better)
    and the ``keep_last`` newest end-of-epoch ones (for averaging)."""
    from speechbrain.utils.checkpoints import ckpt_recency
    from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast

    meta = {k: float(v) for k, v in stats.items() if k != "loss"}
    saved = checkpointer.save_checkpoint(meta=meta, end_of_epoch=True)
    ddp_barrier()  # every process then sees the saved checkpoint
    if saved is None:  # not the main process: its list comes below
        keep = set()
    else:
        keep = {saved.path}
        keep.update(
            c.path
            for c in checkpointer.find_checkpoints(
                min_key=select, max_num_checkpoints=num_to_keep
            )
        )
        if keep_last:
            keep.update(
                c.path
                for c in checkpointer.find_checkpoints(
                    ckpt_predicate=lambda c: c.meta.get("end-of-epoch", False),
                    max_num_checkpoints=keep_last,
                )
            )
    # One list for all processes: each deletion is a collective call
    # (SpeechBrain's main_process_only broadcasts), so the processes must
    # delete the same checkpoints or they wait on each other for ever.
    keep = ddp_broadcast(keep)
    checkpointer.delete_checkpoints(
        num_to_keep=0,
        importance_keys=[ckpt_recency],
        ckpt_predicate=lambda c: c.path not in keep,
    )
    return saved


def recover_best_checkpoint(checkpointer, select):
    """Loads the checkpoint with the lowest ``select`` value (falling back
    to the latest one, e.g. if only intra-epoch checkpoints exist)."""
    checkpoint = checkpointer.recover_if_possible(min_key=select)
    if checkpoint is None:
        checkpoint = checkpointer.recover_if_possible()
        if checkpoint is not None:
            logger.warning(
                "No checkpoint has a %s value; loaded the latest, %s",
                select,
                checkpoint.path,
            )
    return checkpoint


INIT_FILES = ("ssl_encoder.ckpt", "embedding_model.ckpt", "hyperparams.yaml")

#: The method changes ``init_from`` allows (each method also starts from
#: itself): this run's method -> the earlier methods whose encoder carries
#: over exactly. ``finetune`` trains every Transformer weight and the layer
#: weights, which is all that ``frozen``, ``bitfit`` and ``lora`` (its
#: update merged into the weights) tune: BUT's MHFA (frozen -> joint
#: fine-tuning) and WeSpeaker's W2V-BERT (LoRA, merged -> full fine-tuning).
#: Adapters and prompts are branches outside the weights: they cannot be
#: folded, and a PET run keeps the weights a fine-tuned model changed frozen.
INIT_CHAINS = {"finetune": ("frozen", "bitfit", "lora", "finetune")}


def _describe_encoder(meta):
    """One line naming a model's method and backbone."""
    text = f"method '{meta.get('method')}'"
    if meta.get("model_type") is not None:
        text += (
            f" on a {meta.get('model_type')} backbone "
            f"({meta.get('num_layers')} layers, hidden size "
            f"{meta.get('hidden_size')})"
        )
    return text


def _init_chains_text():
    """The supported method changes, for error messages."""
    chains = "; ".join(
        f"a '{mine}' run from a model of method "
        + ", ".join(f"'{m}'" for m in theirs if m != mine)
        + " (LoRA merged into the backbone weights)"
        for mine, theirs in INIT_CHAINS.items()
    )
    return "init_from starts a run from a model of its own method, or " + chains


def check_init_chain(theirs, mine, source="init_from"):
    """Refuses an earlier model whose encoder does not carry exactly into
    this run's: a method change outside ``INIT_CHAINS``, or another
    backbone shape.

    Arguments
    ---------
    theirs : dict
        The earlier encoder's ``pet_metadata()`` (``method``; the backbone
        shape is compared where both give it).
    mine : dict
        This run's encoder's ``pet_metadata()``.
    source : str
        What the earlier model is, for the message.

    Raises
    ------
    RecipeError
        Naming both methods (or backbones) and the chains that work.

    Example
    -------
    >>> check_init_chain({"method": "lora"}, {"method": "finetune"})
    >>> check_init_chain({"method": "inner_adapter"}, {"method": "finetune"})
    Traceback (most recent call last):
    ...
    speechbrain_unipet.recipe.RecipeError: init_from holds method 'inner_adapter', but this run trains method 'finetune': ...
    """
    a, b = theirs.get("method"), mine.get("method")
    if a != b and a not in INIT_CHAINS.get(b, ()):
        if b in INIT_CHAINS:
            why = (
                f"what '{a}' tunes is not backbone or layer weights, so it "
                f"cannot be folded into the weights '{b}' trains"
            )
        else:
            why = f"'{b}' keeps backbone weights frozen that '{a}' may change"
        raise RecipeError(
            f"{source} holds {_describe_encoder(theirs)}, but this run trains "
            f"method '{b}': {why}. {_init_chains_text()}. Train this stage "
            f"with the recipe of method '{a}'."
        )
    keys = ("model_type", "num_layers", "hidden_size")
    if any(
        theirs.get(k) is not None and theirs.get(k) != mine.get(k) for k in keys
    ):
        raise RecipeError(
            f"{source} holds {_describe_encoder(theirs)}, but this run trains "
            f"{_describe_encoder(mine)}: give this run the ssl_hub the "
            "earlier model was trained on"
        )


def _tensor_at(module, name):
    """The tensor ``module`` uses under a parameter name, or None: a
    parametrised weight (LoRA) is read as its value, the update merged, so
    nothing is changed in place."""
    path, _, leaf = name.rpartition(".")
    try:
        owner = module.get_submodule(path) if path else module
        value = getattr(owner, leaf)
    except AttributeError:
        return None
    return value if isinstance(value, torch.Tensor) else None


def _differing_frozen_weights(their_encoder, my_encoder, tuned):
    """Backbone parameters this encoder keeps frozen (not in ``tuned``)
    whose values the earlier encoder does not share."""
    differ = []
    for name, param in my_encoder.named_parameters():
        if name in tuned or not name.startswith("backbone."):
            continue
        value = _tensor_at(their_encoder, name)
        if (
            value is None
            or value.shape != param.shape
            or not torch.equal(value.to(param.device), param)
        ):
            differ.append(name)
    return differ


def carry_encoder_state(their_encoder, my_encoder, source="init_from"):
    """Starts ``my_encoder`` from ``their_encoder``, exactly: the same
    method takes its PET state (as ``load_pet_state_dict``); a ``finetune``
    encoder (see ``INIT_CHAINS``) takes the Transformer weights the earlier
    one ran with (a LoRA update merged into them, read without merging
    ``their_encoder`` in place) and its layer weights. Either way, the
    backbone weights this encoder keeps frozen must be the earlier one's,
    so that both compute the same output.

    Arguments
    ---------
    their_encoder : PETEncoder
        The earlier model's encoder; only read.
    my_encoder : PETEncoder
        This run's encoder; its tuned tensors are overwritten.
    source : str
        What the earlier model is, for the messages.

    Returns
    -------
    str
        What was carried, for the log.

    Raises
    ------
    RecipeError
        If the method change is not one of ``INIT_CHAINS``, the backbones
        differ in shape or pretrained weights, or the PET states in options
        (``adapter_dim``...).

    Example
    -------
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "wavlm")
    >>> lora = PETEncoder(folder, method="lora")
    >>> full = PETEncoder(folder, method="finetune")
    >>> carry_encoder_state(lora, full)
    "the Transformer weights (LoRA merged) and layer weights of a 'lora' encoder"
    >>> carry_encoder_state(full, lora)
    Traceback (most recent call last):
    ...
    speechbrain_unipet.recipe.RecipeError: init_from holds method 'finetune' ...
    """
    theirs, mine = their_encoder.pet_metadata(), my_encoder.pet_metadata()
    check_init_chain(theirs, mine, source)
    if theirs["backbone_fingerprint"] != mine["backbone_fingerprint"]:
        raise RecipeError(
            f"{source} was trained on a {theirs['model_type']} backbone with "
            f"other pretrained weights than this run's ({my_encoder.source}): "
            "give this run the ssl_hub the earlier model was trained on"
        )
    with torch.no_grad():
        tuned = my_encoder.pet_state_dict()
        if theirs["method"] == mine["method"]:
            state, carried = their_encoder.pet_state_dict(), "PET weights"
        else:
            state = {name: _tensor_at(their_encoder, name) for name in tuned}
            lost = sorted(
                name for name, value in state.items() if value is None
            )
            if lost:
                raise RecipeError(
                    f"{source}: its '{theirs['method']}' encoder has no "
                    f"{_first_names(lost)} for this run's '{mine['method']}'"
                )
            merged = (
                " (LoRA merged)"
                if any(c.name == "lora" for c in their_encoder.components)
                else ""
            )
            layers = " and layer weights" if "layer_weights" in tuned else ""
            carried = (
                f"the Transformer weights{merged}{layers} of a "
                f"'{theirs['method']}' encoder"
            )
        differ = _differing_frozen_weights(their_encoder, my_encoder, tuned)
        if differ:
            raise RecipeError(
                f"{source} ran on backbone weights that this run's method "
                f"'{mine['method']}' keeps frozen and that differ from its "
                f"ssl_hub's ({my_encoder.source}): {_first_names(differ)} (an "
                "export with --merge-lora, or another checkpoint of the "
                "backbone?). Start a 'finetune' run from it, which trains "
                "them, or give --ssl_hub the backbone it ran on"
            )
        try:
            my_encoder.load_pet_state_dict(state)
        except ValueError as err:
            raise RecipeError(
                f"The PET weights of {source} do not fit this run's encoder "
                "(method options such as adapter_dim, prompt_length, "
                f"pet_layers: see its hyperparams.yaml): {err}"
            ) from err
    return carried


def _first_names(names, count=3):
    """The first names of a list, for a message."""
    return ", ".join(names[:count]) + (" ..." if len(names) > count else "")


def _check_export_files(folder):
    """Refuses a folder that is not an exported model."""
    missing = [n for n in INIT_FILES if not (folder / n).is_file()]
    if missing:
        raise RecipeError(
            f"init_from '{folder}' lacks {missing}: give a folder written by "
            "python -m speechbrain_unipet.export (or a training run's "
            "output_folder)"
        )


def is_init_export(folder):
    """Whether an ``init_from`` folder is read as an exported model (else
    as a training run's output folder)."""
    folder = pathlib.Path(folder)
    return (folder / "ssl_encoder.ckpt").is_file() or not (
        folder / "save"
    ).is_dir()


def _run_method(folder):
    """The PET method of a training run, from its ``hyperparams.yaml``."""
    saved = pathlib.Path(folder) / "hyperparams.yaml"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: init_from must be the output_folder of "
            "train_speaker_embeddings.py or an exported model folder"
        )
    top = _top_keys(saved)
    return top.get("recipe", top).get("pet_method")


def check_init_from(hparams, folder):
    """Checks, before the data preparation and any model loads, that an
    ``init_from`` folder can start this run: an exported model or a
    training run whose method carries into this run's (``INIT_CHAINS``),
    on a backbone of the same shape (where the folder says it cheaply).

    Arguments
    ---------
    hparams : dict
        This run's hparams (with ``ssl_encoder``).
    folder : str or pathlib.Path
        The ``init_from`` folder.

    Raises
    ------
    RecipeError
        See ``check_init_chain``; or a folder that is neither.
    """
    folder = pathlib.Path(folder)
    mine = hparams["ssl_encoder"].pet_metadata()
    if is_init_export(folder):
        _check_export_files(folder)
        saved = torch.load(
            folder / "ssl_encoder.ckpt",
            map_location="cpu",
            weights_only=True,
            mmap=True,  # only the metadata is read
        )
        theirs = saved.get("meta", {})
    else:
        theirs = {"method": _run_method(folder)}
    if theirs.get("method") is not None:  # else checked once loaded
        check_init_chain(theirs, mine, f"init_from '{folder}'")


def _exported_encoder(hparams, folder, saved, their_source):
    """The encoder of an exported model folder, built as it was exported:
    on its ``backbone/`` (``ssl_source: null``, e.g. LoRA merged) or else
    on this run's ``ssl_hub``."""
    mine = hparams["ssl_encoder"]
    meta = saved.get("meta", {})
    spec = _top_keys(folder / "hyperparams.yaml").get("ssl_encoder") or {}
    options = {
        k: list(v) if isinstance(v, list) else v
        for k, v in (spec.get("options") or {}).items()
    }
    theirs = type(mine)(
        None,
        method=meta.get("method", spec.get("method")),
        save_path=hparams.get("ssl_save_path", ""),
        output_all_hiddens=bool(meta.get("output_all_hiddens", False)),
        options=options,
    )
    source = f"init_from '{folder}'"
    if their_source == "null":
        backbone = (folder / "ssl_encoder.ckpt").resolve().parent / "backbone"
        if not (backbone / "config.json").is_file():
            raise RecipeError(
                f"{source} has ssl_source: null but no backbone folder "
                f"({backbone}): export it with --copy-backbone"
            )
        theirs.attach_backbone(backbone)
    else:
        theirs.attach_backbone(mine.source)
    if meta.get("backbone_fingerprint") not in (
        None,
        theirs.backbone.fingerprint(),
    ):
        raise RecipeError(
            f"{source} was trained on a backbone with other pretrained "
            f"weights than {theirs.source}: give this run the ssl_hub the "
            "exported model was trained on"
        )
    try:
        theirs.load_pet_state_dict(saved["state"])
    except ValueError as err:
        raise RecipeError(
            f"{source}: ssl_encoder.ckpt does not fit the encoder its "
            f"hyperparams.yaml describes: {err}"
        ) from err
    return theirs.eval()


def init_from_export(hparams, folder):
    """Starts a run from an exported model: its encoder (``PET weights``, or
    for a method change, see ``carry_encoder_state``) and embedding model;
    the classifier stays fresh for this run's speakers.

    Arguments
    ---------
    hparams : dict
        The run's hparams, after ``build_backend``.
    folder : str
        A folder written by ``python -m speechbrain_unipet.export``.

    Raises
    ------
    RecipeError
        Naming both models if the folder holds a method that does not carry
        into this run's (``INIT_CHAINS``), another backbone or back-end
        size.
    """
    folder = pathlib.Path(folder)
    _check_export_files(folder)
    encoder = hparams["ssl_encoder"]
    saved = torch.load(
        folder / "ssl_encoder.ckpt", map_location="cpu", weights_only=True
    )
    source = f"init_from '{folder}'"
    check_init_chain(saved.get("meta", {}), encoder.pet_metadata(), source)
    found = re.search(
        r"^ssl_source: *(.*)$",
        (folder / "hyperparams.yaml").read_text(encoding="utf-8"),
        flags=re.M,
    )
    their_source = found.group(1).strip().strip('"') if found else "null"
    if their_source not in ("null", str(hparams["ssl_hub"])):
        logger.warning(
            "init_from '%s' was trained on backbone %s, this run loads %s: "
            "same architecture, but make sure they hold the same weights",
            folder,
            their_source,
            hparams["ssl_hub"],
        )
    their_encoder = _exported_encoder(hparams, folder, saved, their_source)
    carried = carry_encoder_state(their_encoder, encoder, source)
    del their_encoder, saved
    ecapa = hparams["modules"]["embedding_model"]
    state = torch.load(
        folder / "embedding_model.ckpt", map_location="cpu", weights_only=True
    )
    try:
        ecapa.load_state_dict(state)
    except RuntimeError as err:
        raise RecipeError(
            f"The embedding model of init_from '{folder}' has other sizes "
            "than this run's (ecapa_channels, emb_dim: see its "
            f"hyperparams.yaml): {str(err).splitlines()[1:3]}"
        ) from err
    logger.info(
        "Initialised the encoder (%s) and the embedding model from %s "
        "(fresh classifier)",
        carried,
        folder,
    )


def backend_factory(hparams):
    """The speaker back-end chosen by ``backend`` among ``backends`` (runs
    older than these keys: their ``embedding_model``).

    Arguments
    ---------
    hparams : dict
        Recipe hparams.

    Returns
    -------
    callable
        The yaml's ``!name:`` partial, called with ``input_size`` (and
        ``num_layers`` for back-ends reading the layer stack).
    """
    if "backends" not in hparams:
        return hparams["embedding_model"]
    name = hparams["backend"]
    if name not in hparams["backends"]:
        raise RecipeError(
            f"backend '{name}' is not one of the yaml's backends: "
            f"{sorted(hparams['backends'])}"
        )
    return hparams["backends"][name]


def reads_layer_stack(factory):
    """Whether a back-end (class or ``!name:`` partial) takes all hidden
    states ``[L+1, B, T, D]`` rather than their weighted sum."""
    return bool(
        getattr(getattr(factory, "func", factory), "layer_stack_input", False)
    )


def init_from(hparams, folder, average_last=0):
    """Starts a run from earlier weights: an exported model folder
    (``init_from_export``) or a training run's output folder
    (``init_from_run``).

    Arguments
    ---------
    hparams : dict
        The run's hparams, after ``build_backend``.
    folder : str
        The ``init_from`` folder.
    average_last : int
        For a run: 0, its best checkpoint; N, the mean of its last N.
    """
    if is_init_export(folder):
        return init_from_export(hparams, folder)
    return init_from_run(hparams, folder, average_last)


def same_folder(a, b):
    """Whether two paths name the same folder.

    Arguments
    ---------
    a, b : str or pathlib.Path

    Returns
    -------
    bool

    Example
    -------
    >>> same_folder("results/run", "results/../results/run/")
    True
    """
    return pathlib.Path(a).resolve() == pathlib.Path(b).resolve()


def init_from_run(hparams, folder, average_last=0):
    """Starts a run from another training run (a second stage, e.g. joint
    or large-margin fine-tuning): its encoder (PET weights, or for a method
    change, see ``carry_encoder_state``) and speaker back-end, and the
    classifier weights of the speakers both runs train on (matched by
    name; longer crops may leave out speakers with short audio), for the
    speeds both share at the same place (the first, 1.0, always), so a
    stage without speed perturbation keeps the speakers' own classes. The
    earlier run's folder is only read.

    Arguments
    ---------
    hparams : dict
        This run's hparams, after ``build_backend`` and the data
        preparation (``label_encoder.txt``).
    folder : str or pathlib.Path
        The earlier run's output folder.
    average_last : int
        0: its best checkpoint; N: the mean of its last N.

    Raises
    ------
    RecipeError
        If the earlier method does not carry into this run's
        (``INIT_CHAINS``), or the backbones or back-end sizes differ.
    """
    folder = pathlib.Path(folder)
    if same_folder(hparams["output_folder"], folder):
        raise RecipeError(
            f"init_from '{folder}' is this run's own output_folder: give the "
            "second stage another --output_folder"
        )
    source = f"init_from '{folder}'"
    # Before loading the run: its method is in its hyperparams.yaml.
    method = _run_method(folder)
    if method is not None:
        check_init_chain(
            {"method": method}, hparams["ssl_encoder"].pet_metadata(), source
        )
    theirs, their_modules = load_trained_model(folder, "cpu", average_last)
    carried = carry_encoder_state(
        theirs["ssl_encoder"], hparams["ssl_encoder"], source
    )
    try:
        hparams["modules"]["embedding_model"].load_state_dict(
            their_modules["embedding_model"].state_dict()
        )
    except RuntimeError as err:
        raise RecipeError(
            f"The speaker back-end of init_from '{folder}' differs from this "
            "run's (backend, its sizes, emb_dim: see its hyperparams.yaml): "
            f"{str(err).splitlines()[1:3]}"
        ) from err
    copied = _copy_speaker_classes(theirs, their_modules, hparams)
    logger.info(
        "Initialised the encoder (%s) and the speaker back-end from the run "
        "%s (%s)",
        carried,
        folder,
        copied,
    )


def _label_indices(save_folder):
    """Speaker -> class index of a run's ``label_encoder.txt``."""
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(str(pathlib.Path(save_folder) / "label_encoder.txt"))
    return dict(encoder.lab2ind)


def _copy_speaker_classes(theirs, their_modules, hparams):
    """Copies the classifier weights of the speakers both runs train on,
    for the speeds both share at the same place (the first, 1.0, always);
    the other classes stay fresh. Returns what was copied, for the log."""
    mine_idx = _label_indices(hparams["save_folder"])
    their_idx = _label_indices(theirs["save_folder"])
    common = [spk for spk in mine_idx if spk in their_idx]
    classifier = hparams["modules"]["classifier"]
    their_state = their_modules["classifier"].state_dict()
    k = sub_centers(classifier)
    if not common or sub_centers(their_modules["classifier"]) != k:
        return "fresh classifier: no common speakers or other sub_centers"
    shared = 0
    for a, b in zip(
        training_speeds(theirs), training_speeds(hparams), strict=False
    ):
        if a != b:
            break
        shared += 1
    weight = classifier.weight.detach().clone()
    for speed in range(shared):
        for spk in common:
            mine_row = (mine_idx[spk] + speed * len(mine_idx)) * k
            their_row = (their_idx[spk] + speed * len(their_idx)) * k
            weight[mine_row : mine_row + k] = their_state["weight"][
                their_row : their_row + k
            ]
    their_state["weight"] = weight
    classifier.load_state_dict(their_state)
    return (
        f"classifier classes of {len(common)} of {len(mine_idx)} speakers, "
        f"{shared} speed(s)"
    )


def published_emb_dim(factory):
    """The embedding size a back-end is published with: its class's own
    ``lin_neurons`` default (SpeechBrain's ECAPA-TDNN: 192, as WeSpeaker's
    ECAPA on WavLM; MHFA, CA-MHFA and the layer-adapter MFA: 256, as their
    papers and WeSpeaker's configs).

    Arguments
    ---------
    factory : callable
        A back-end class or the yaml's ``!name:`` partial of one.

    Returns
    -------
    int
    """
    func = getattr(factory, "func", factory)
    param = inspect.signature(func).parameters.get("lin_neurons")
    if param is None or not isinstance(param.default, int):
        raise RecipeError(
            f"{func.__name__} has no default embedding size (lin_neurons): "
            "set emb_dim in the yaml"
        )
    return param.default


def resolve_emb_dim(hparams):
    """Fills in ``emb_dim: null`` (the back-end's published size, see
    ``published_emb_dim``) in the back-end's and the classifier's partials
    and in ``hparams["emb_dim"]``, so that everything built or exported
    from them has the size; an explicit ``emb_dim`` is left as it is.

    Arguments
    ---------
    hparams : dict
        Recipe hparams (with ``backends``).
    """
    if "backends" not in hparams or hparams.get("emb_dim", 0) is not None:
        return
    factory = backend_factory(hparams)
    size = published_emb_dim(factory)
    hparams["emb_dim"] = size
    if factory.keywords.get("lin_neurons", 0) is None:
        hparams["backends"][hparams["backend"]] = functools.partial(
            factory.func,
            *factory.args,
            **{**factory.keywords, "lin_neurons": size},
        )
    classifier = hparams["classifier"]
    if classifier.keywords.get("input_size", 0) is None:
        hparams["classifier"] = functools.partial(
            classifier.func,
            *classifier.args,
            **{**classifier.keywords, "input_size": size},
        )


def build_backend(hparams, num_speakers):
    """Instantiates the speaker back-end and classifier for the encoder's
    sizes, the embedding size (``emb_dim``, null: the back-end's published
    size) and the number of training speakers (times the speeds of speed
    perturbation), and registers them in ``modules`` and the checkpointer
    (their sizes are only known at run time). A back-end reading the layer
    stack makes the encoder return all hidden states."""
    encoder = hparams["ssl_encoder"]
    resolve_emb_dim(hparams)
    factory = backend_factory(hparams)
    sizes = {"input_size": encoder.hidden_size}
    if reads_layer_stack(factory):
        sizes["num_layers"] = encoder.num_layers + 1
        encoder.set_output_all_hiddens(True)
    embedding_model = factory(**sizes)
    classifier = hparams["classifier"](
        out_neurons=num_classes(hparams, num_speakers)
    )
    hparams["modules"]["embedding_model"] = embedding_model
    hparams["modules"]["classifier"] = classifier
    checkpointer = hparams.get("checkpointer")
    if checkpointer is not None:
        checkpointer.add_recoverable("embedding_model", embedding_model)
        checkpointer.add_recoverable("classifier", classifier)
    return embedding_model, classifier


def sub_centers(classifier):
    """Weight rows per class of a classifier (``SubCenterClassifier``;
    SpeechBrain's ``Classifier``: 1)."""
    return getattr(classifier, "sub_centers", 1)


def num_speakers(save_folder):
    """Number of classes in a saved ``label_encoder.txt``."""
    path = pathlib.Path(save_folder) / "label_encoder.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: is this a finished training output folder?"
        )
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(str(path))
    return len(encoder)


def average_last_checkpoints(checkpointer, count):
    """Loads the mean of the trainable tensors of the last ``count``
    end-of-epoch checkpoints (SpeechBrain's ``average_checkpoints``) into
    the PET encoder, the embedding model and the classifier.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The run's checkpointer (recoverables ``ssl_encoder``,
        ``embedding_model``, ``classifier``).
    count : int
        How many of the newest end-of-epoch checkpoints to average.

    Returns
    -------
    list
        The averaged checkpoints, newest first.

    Raises
    ------
    RecipeError
        If fewer than ``count`` end-of-epoch checkpoints were kept.
    """
    from speechbrain.utils.checkpoints import average_checkpoints

    chosen = checkpointer.find_checkpoints(
        ckpt_predicate=lambda c: c.meta.get("end-of-epoch", False)
    )[:count]
    if len(chosen) < count:
        raise RecipeError(
            f"average of {count} checkpoints asked, but "
            f"{checkpointer.checkpoints_dir} keeps {len(chosen)} end-of-epoch "
            "checkpoints: train with --ckpt_keep_last at least that large"
        )
    for name, module in checkpointer.recoverables.items():
        if name == "ssl_encoder":
            state = average_checkpoints(
                chosen,
                name,
                parameter_loader=lambda p, **_: torch.load(
                    p, map_location="cpu", weights_only=True
                )["state"],
            )
            module.load_pet_state_dict(state)
        elif name in ("embedding_model", "classifier"):
            state = average_checkpoints(
                chosen,
                name,
                parameter_loader=lambda p, **_: torch.load(
                    p, map_location="cpu"
                ),
            )
            module.load_state_dict(state)
    logger.info(
        "Averaged %d checkpoints: %s", count, [str(c.path) for c in chosen]
    )
    return chosen


def relocate_run_paths(text, output_folder):
    """Points the paths of a saved ``hyperparams.yaml`` at the folder it is
    read from, so that a copied or moved run uses its own files.

    SpeechBrain saves the resolved yaml: every path under the run is
    written out from the ``output_folder`` the run was trained with.

    Arguments
    ---------
    text : str
        The saved yaml.
    output_folder : str or pathlib.Path
        Where the run is now.

    Returns
    -------
    text : str
        The yaml with the stored output folder replaced where it starts a
        path.
    moved_from : str or None
        The stored output folder, if it was not this one.

    Example
    -------
    >>> yaml = "output_folder: /old/run\\nsave_folder: /old/run/save\\n"
    >>> new, was = relocate_run_paths(yaml, "/new/run")
    >>> new.splitlines(), was
    (['output_folder: /new/run', 'save_folder: /new/run/save'], '/old/run')
    """
    found = re.search(r"^\s*output_folder:\s*(\S+)\s*$", text, flags=re.M)
    if not found:
        return text, None
    stored = found.group(1).strip("'\"").rstrip("/")
    here = pathlib.Path(output_folder).resolve()
    if pathlib.Path(stored).resolve() == here:
        return text, None
    pattern = r"(?<![\w./-])" + re.escape(stored) + r"(?=/|\s|$|['\"])"
    return re.sub(pattern, lambda _: str(here), text), stored


def load_trained_model(output_folder, device="cpu", average_last=0):
    """Rebuilds a training run from its saved ``hyperparams.yaml`` and loads
    its best checkpoint by the run's ``ckpt_select`` (lowest EER by
    default; runs older than that key: lowest ErrorRate), or the mean of
    its ``average_last`` newest end-of-epoch checkpoints.

    Arguments
    ---------
    output_folder : str or pathlib.Path
        The run's output folder.
    device : str
        Where the modules go.
    average_last : int
        0: the best checkpoint; N: the average of the last N (see
        ``average_last_checkpoints``; the run must have kept them,
        ``ckpt_keep_last``).

    Returns
    -------
    hparams : dict
        The run's recipe hparams (with the back-end instantiated).
    modules : torch.nn.ModuleDict
        The model modules, on ``device``, in eval mode.
    """
    saved = pathlib.Path(output_folder) / "hyperparams.yaml"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: the folder must be the output_folder of "
            "train_speaker_embeddings.py"
        )
    text, moved_from = relocate_run_paths(
        saved.read_text(encoding="utf-8"), output_folder
    )
    if moved_from is not None:
        logger.warning(
            "%s was trained as %s: reading its files (checkpoints, CSVs, "
            "label encoder) from %s (a copied or moved run).",
            output_folder,
            moved_from,
            pathlib.Path(output_folder).resolve(),
        )
    hparams = load_hyperpyyaml(text)
    hparams = hparams.get("recipe", hparams)  # runs of the nested layout
    if "save_folder" not in hparams or "checkpointer" not in hparams:
        raise FileNotFoundError(
            f"{output_folder} is not a training run (its hyperparams.yaml has "
            "no save_folder; is it an exported model folder?): the folder "
            "must be the output_folder of train_speaker_embeddings.py"
        )
    build_backend(hparams, num_speakers(hparams["save_folder"]))
    if average_last:
        kept = hparams.get("ckpt_keep_last", 0)
        if kept < average_last:
            # Otherwise the newest checkpoints left (the best and the
            # latest) would be averaged: not the last epochs.
            raise RecipeError(
                f"average of the last {average_last} checkpoints asked, but "
                f"{output_folder} was trained with ckpt_keep_last={kept}: "
                "train with --ckpt_keep_last at least that large"
            )
        average_last_checkpoints(hparams["checkpointer"], average_last)
    else:
        checkpoint = recover_best_checkpoint(
            hparams["checkpointer"], hparams.get("ckpt_select", "ErrorRate")
        )
        if checkpoint is None:
            raise FileNotFoundError(
                f"No checkpoint in {hparams['save_folder']}: train the model "
                "first"
            )
        logger.info("Loaded checkpoint %s", checkpoint.path)
    modules = torch.nn.ModuleDict(hparams["modules"]).to(device).eval()
    return hparams, modules


@torch.no_grad()
def compute_embedding(modules, wavs, wav_lens=None, **chunking):
    """Embeddings [B, 1, E] of a trained model's modules, through the one
    embedding path (``speechbrain_unipet.embedding.speaker_embeddings``).

    Arguments
    ---------
    modules : dict or torch.nn.ModuleDict
        ``ssl_encoder``, ``mean_var_norm`` and ``embedding_model``.
    wavs : torch.Tensor
        Waveforms [B, S].
    wav_lens : torch.Tensor or None
        Relative lengths (None: nothing padded).
    **chunking
        ``max_chunk_seconds`` / ``chunk_overlap_seconds`` of
        ``speaker_embeddings`` (default: its module constants).

    Returns
    -------
    torch.Tensor
    """
    return speaker_embeddings(
        modules["ssl_encoder"],
        modules["mean_var_norm"],
        modules["embedding_model"],
        wavs,
        wav_lens,
        **chunking,
    )[0]


def atomic_write(path, text):
    """Writes ``text`` to ``path`` through a temporary file in the same
    folder and a rename, so readers never see a partial file.

    Arguments
    ---------
    path : str or pathlib.Path
        Destination.
    text : str
        Content (UTF-8).

    Example
    -------
    >>> p = getfixture("tmp_path") / "r.json"
    >>> atomic_write(p, "{}")
    >>> p.read_text()
    '{}'
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dump_yaml(data):
    """Plain YAML text of a mapping."""
    out = io.StringIO()
    YAML().dump(data, out)
    return out.getvalue()
