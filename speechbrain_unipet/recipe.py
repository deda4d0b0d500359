"""Former module ``speechbrain_unipet.recipe``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.data.preparation``, ``speechbrain_unipet.training.backends``, ``speechbrain_unipet.training.checkpoints``, ``speechbrain_unipet.training.hparams``, ``speechbrain_unipet.training.pipelines``, ``speechbrain_unipet.training.runs``, ``speechbrain_unipet.training.validator``, ``speechbrain_unipet.training.warm_start``, ``speechbrain_unipet.utils.files``.
"""

from speechbrain_unipet.data.preparation import (  # noqa: F401
    read_csv_rows,
)
from speechbrain_unipet.training.backends import (  # noqa: F401
    backend_factory,
    build_backend,
    num_classes,
    num_speakers,
    published_emb_dim,
    reads_layer_stack,
    resolve_emb_dim,
    sub_centers,
)
from speechbrain_unipet.training.checkpoints import (  # noqa: F401
    average_last_checkpoints,
    keep_best_checkpoint,
    recover_best_checkpoint,
)
from speechbrain_unipet.training.hparams import (  # noqa: F401
    NULLABLE,
    POSITIVE,
    RECIPE_VALUES,
    RecipeError,
    check_recipe_values,
    load_recipe_hparams,
    pet_options,
    training_speeds,
)
from speechbrain_unipet.training.pipelines import (  # noqa: F401
    audio_pipeline,
    check_labels,
    check_prepared_data,
    dataio_prep,
)
from speechbrain_unipet.training.runs import (  # noqa: F401
    compute_embedding,
    load_trained_model,
    relocate_run_paths,
    same_folder,
)
from speechbrain_unipet.training.validator import (  # noqa: F401
    VerificationValidator,
    verification_validator,
)
from speechbrain_unipet.training.warm_start import (  # noqa: F401
    INIT_CHAINS,
    INIT_FILES,
    carry_encoder_state,
    check_init_chain,
    check_init_from,
    init_from,
    init_from_export,
    init_from_run,
    is_init_export,
)
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import (  # noqa: F401
    atomic_write,
    dump_yaml,
)

#: Former list of the errors the recipe scripts print without a traceback
#: (copies of the scripts saved in run folders import it): every one of
#: them derives from ``UserError`` now.
USER_ERRORS = (UserError, FileNotFoundError)
