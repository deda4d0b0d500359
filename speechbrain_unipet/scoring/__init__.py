"""Scoring: metrics (EER, minDCF, Cllr, actDCF), cosine scoring with
enrolment and AS-norm, the embedding store, calibration.

The names below were the module ``speechbrain_unipet.scoring`` before the
package was layered; they stay importable from here because saved
``hyperparams.yaml`` files and user scripts name them.
"""

from speechbrain_unipet.data.trials import (  # noqa: F401
    TRIAL_FORMATS,
    Trial,
    TrialListError,
    read_enrolment,
    read_trials,
    utterance_id,
)
from speechbrain_unipet.scoring.cosine import (  # noqa: F401
    COHORT_BLOCK,
    ENROL_AVERAGES,
    TRIAL_BLOCK,
    enrol_models,
    score_trials,
    speaker_cohort,
)
