"""Former module ``speechbrain_unipet.data_prep``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.data.layouts``, ``speechbrain_unipet.data.preparation``, ``speechbrain_unipet.data.trials``.
"""

from speechbrain_unipet.data.layouts import (  # noqa: F401
    AUDIO_EXTENSIONS,
    DATA_FORMATS,
    ID_COLUMNS,
    LISTERS,
    PATH_COLUMNS,
    SPEAKER_COLUMNS,
    DataPreparationError,
    Recording,
    audio_files,
    detect_format,
    list_kaldi,
    list_manifest,
    list_recordings,
    list_speaker_folders,
    list_voxceleb,
    probe_recordings,
)
from speechbrain_unipet.data.preparation import (  # noqa: F401
    CSV_HEADER,
    OPTIONS_FILE,
    TRIALS_FILE,
    VALID_TRIALS_FILE,
    check_rerun,
    preparation_options,
    prepare_speaker_data,
    prepare_trial_manifest,
    resolve_trial_ids,
)
from speechbrain_unipet.data.trials import (  # noqa: F401
    make_trials,
)
