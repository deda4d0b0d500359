"""Former module ``speechbrain_unipet.conditions``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.evaluation.conditions``.
"""

from speechbrain_unipet.evaluation.conditions import (  # noqa: F401
    GRAMMAR,
    VERSION,
    AdditiveNoise,
    Condition,
    ConditionError,
    Reverberation,
    Telephone,
    Truncation,
    parse_conditions,
    pink_noise,
    synthetic_rir,
)
