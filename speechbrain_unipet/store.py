"""Former module ``speechbrain_unipet.store``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.scoring.store``.
"""

from speechbrain_unipet.scoring.store import (  # noqa: F401
    FILES,
    EmbeddingStore,
    EmbeddingStoreError,
)
