"""Former module ``speechbrain_unipet.embedding``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.lobes.embedding``.
"""

from speechbrain_unipet.lobes.embedding import (  # noqa: F401
    CHUNK_OVERLAP_SECONDS,
    CHUNKS_PER_BATCH,
    MAX_CHUNK_SECONDS,
    MIN_SAMPLES,
    InvalidAudioError,
    row_problems,
    speaker_embeddings,
    window_starts,
)
