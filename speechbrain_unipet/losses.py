"""Former module ``speechbrain_unipet.losses``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.training.losses``.
"""

from speechbrain_unipet.training.losses import (  # noqa: F401
    AAM_FALLBACKS,
    TOP_K_REFERENCE_MARGIN,
    InterTopKAdditiveAngularMargin,
    SubCenterClassifier,
)
