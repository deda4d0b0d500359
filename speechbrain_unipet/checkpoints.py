"""Former module ``speechbrain_unipet.checkpoints``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.training.checkpoints``.
"""

from speechbrain_unipet.training.checkpoints import (  # noqa: F401
    PENDING_SUFFIX,
    AtomicCheckpointer,
    CheckpointError,
    damaged_files,
)
