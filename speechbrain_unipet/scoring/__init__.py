"""Scoring: metrics (EER, minDCF, Cllr, actDCF), cosine scoring with
enrolment and AS-norm, the embedding store, calibration.

The names below were the module ``speechbrain_unipet.scoring`` before the
package was layered; they stay importable from here because saved
``hyperparams.yaml`` files and user scripts name them. They are resolved on
first use (PEP 562), so that importing a NumPy-only submodule (``metrics``,
``calibration``: what the ONNX runtime uses) does not import torch.
"""

import importlib

#: Former name -> the module that holds it now.
FORMER_NAMES = {
    **dict.fromkeys(
        (
            "TRIAL_FORMATS",
            "Trial",
            "TrialListError",
            "read_enrolment",
            "read_trials",
            "utterance_id",
        ),
        "speechbrain_unipet.data.trials",
    ),
    **dict.fromkeys(
        (
            "COHORT_BLOCK",
            "ENROL_AVERAGES",
            "TRIAL_BLOCK",
            "enrol_models",
            "score_trials",
            "speaker_cohort",
        ),
        "speechbrain_unipet.scoring.cosine",
    ),
}


def __getattr__(name):
    if name in FORMER_NAMES:
        return getattr(importlib.import_module(FORMER_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(FORMER_NAMES))
