"""Former module ``speechbrain_unipet.audio``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.utils.audio``.
"""

from speechbrain_unipet.utils.audio import (  # noqa: F401
    MIN_SAMPLE_RATE,
    AudioError,
    AudioInfo,
    AudioProbe,
    NotReadBySoundfile,
    audio_info,
    check_sample_rate,
    conversion_hint,
    load_audio,
    probe_audio,
    read_numpy,
    resample,
)
