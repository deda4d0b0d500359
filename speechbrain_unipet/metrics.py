"""Former module ``speechbrain_unipet.metrics``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.scoring.metrics``.
"""

from speechbrain_unipet.scoring.metrics import (  # noqa: F401
    det_curve,
    eer,
    min_dcf,
)
