"""Former module ``speechbrain_unipet.schedules``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.training.schedules``.
"""

from speechbrain_unipet.training.schedules import (  # noqa: F401
    LR_SCHEDULES,
    SCHEDULE_TYPES,
    LearningRateSchedule,
    MarginScheduler,
    set_margin,
    training_progress,
)
