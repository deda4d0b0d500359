"""Loading a recipe's hparams (``load_hyperpyyaml`` with an error naming
the valid keys for a misspelt override) and checking their values before
any data is prepared.

Authors
 * speechbrain-unipet contributors 2026
"""

import difflib

from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError

from speechbrain_unipet.pet import get_method
from speechbrain_unipet.pet.component import check_option
from speechbrain_unipet.training.losses import AAM_FALLBACKS
from speechbrain_unipet.training.schedules import LR_SCHEDULES, SCHEDULE_TYPES
from speechbrain_unipet.utils.errors import UserError


def _yaml_mapping(text):
    if not text:
        return {}
    try:
        data = YAML(typ="safe").load(text)
    except DuplicateKeyError as err:
        key = getattr(err, "problem", "") or str(err).splitlines()[0]
        raise RecipeError(
            f"An option is given twice on the command line ({key}): keep "
            "one --key=value per key"
        ) from None
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
    "combine_min_seconds": _value(
        "float", "shortest combined recording in seconds", 0.1
    ),
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
NULLABLE = {
    "max_chunk_seconds",
    "emb_dim",
    "calibration_p_target",
    "num_test_speakers",
    "num_valid_speakers",
    "combine_min_seconds",
}


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
    speechbrain_unipet.training.hparams.RecipeError: --batch_size='abc' must be an integer >= 2 (ECAPA-TDNN's BatchNorm needs 2).
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


class RecipeError(UserError, ValueError):
    """A recipe setting that cannot work, with the key and the fix."""
