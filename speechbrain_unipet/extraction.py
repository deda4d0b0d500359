"""Former module ``speechbrain_unipet.extraction``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.evaluation.extraction``, ``speechbrain_unipet.evaluation.utterances``.
"""

from speechbrain_unipet.evaluation.extraction import (  # noqa: F401
    SETTINGS_FILE,
    ExtractionError,
    crop_starts,
    extract,
    length_batches,
    model_fingerprint,
    parts_folder,
)
from speechbrain_unipet.evaluation.utterances import (  # noqa: F401
    Utterance,
    read_utterances,
    utterances_from_folder,
    utterances_from_list,
    utterances_from_rows,
)
from speechbrain_unipet.training.runs import open_model


def model_modules(model, device="cpu", average_last=0):
    """Former ``(modules, info)`` form of ``open_model`` (user scripts).

    Arguments
    ---------
    model : str or pathlib.Path
        A training run's output folder or an exported folder.
    device : str
        Where the modules go.
    average_last : int
        Training runs only: average the last N checkpoints (0: the best).

    Returns
    -------
    modules : tuple
        ``(encoder, normalizer, embedding_model)``.
    info : dict
        ``kind``, ``sample_rate``, ``hparams``, ``chunking``, ``model_id``
        (and ``classifier`` for an export).
    """
    loaded = open_model(model, device, average_last)
    info = {
        "kind": loaded.kind,
        "sample_rate": loaded.sample_rate,
        "hparams": loaded.hparams,
        "chunking": loaded.chunking,
        "model_id": loaded.model_id,
    }
    if loaded.classifier is not None:
        info["classifier"] = loaded.classifier
    return loaded.parts, info
