"""Former module ``speechbrain_unipet.calibration``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.scoring.calibration``, ``speechbrain_unipet.scoring.metrics``.
"""

from speechbrain_unipet.scoring.calibration import (  # noqa: F401
    CALIBRATION_FORMAT,
    MAX_DURATION,
    PAIR_FUNCTIONS,
    QUALITY_PAIRS,
    ScoreCalibrator,
    quality_features,
)
from speechbrain_unipet.scoring.metrics import (  # noqa: F401
    LN2,
    CalibrationError,
    Threshold,
    act_dcf,
    bayes_threshold,
    calibration_metrics,
    cllr,
    min_cllr,
    pav,
    pav_llrs,
    threshold_for_far,
)
