"""The back-end factory: the embedding model after the encoder (ECAPA,
MHFA, CA-MHFA, MFA), its embedding size and the speaker classifier, built
from a recipe's hparams.

Authors
 * speechbrain-unipet contributors 2026
"""

import functools
import inspect
import pathlib

import speechbrain as sb

from speechbrain_unipet.training.hparams import RecipeError, training_speeds
from speechbrain_unipet.utils.errors import MissingFileError


def num_classes(hparams, num_speakers):
    """Classifier outputs: each speed of speed perturbation makes its own
    classes (WeSpeaker, ESPnet), the first speed (1.0) the speakers' own.

    Arguments
    ---------
    hparams : dict
        Recipe hparams.
    num_speakers : int
        Training speakers.

    Returns
    -------
    int

    Example
    -------
    >>> num_classes({"speed_perturb": True, "speeds": [1.0, 0.9, 1.1]}, 10)
    30
    """
    return num_speakers * len(training_speeds(hparams))


def backend_factory(hparams):
    """The speaker back-end chosen by ``backend`` among ``backends`` (runs
    older than these keys: their ``embedding_model``).

    Arguments
    ---------
    hparams : dict
        Recipe hparams.

    Returns
    -------
    callable
        The yaml's ``!name:`` partial, called with ``input_size`` (and
        ``num_layers`` for back-ends reading the layer stack).
    """
    if "backends" not in hparams:
        return hparams["embedding_model"]
    name = hparams["backend"]
    if name not in hparams["backends"]:
        raise RecipeError(
            f"backend '{name}' is not one of the yaml's backends: "
            f"{sorted(hparams['backends'])}"
        )
    return hparams["backends"][name]


def reads_layer_stack(factory):
    """Whether a back-end (class or ``!name:`` partial) takes all hidden
    states ``[L+1, B, T, D]`` rather than their weighted sum."""
    return bool(
        getattr(getattr(factory, "func", factory), "layer_stack_input", False)
    )


def published_emb_dim(factory):
    """The embedding size a back-end is published with: its class's own
    ``lin_neurons`` default (SpeechBrain's ECAPA-TDNN: 192, as WeSpeaker's
    ECAPA on WavLM; MHFA, CA-MHFA and the layer-adapter MFA: 256, as their
    papers and WeSpeaker's configs).

    Arguments
    ---------
    factory : callable
        A back-end class or the yaml's ``!name:`` partial of one.

    Returns
    -------
    int
    """
    func = getattr(factory, "func", factory)
    param = inspect.signature(func).parameters.get("lin_neurons")
    if param is None or not isinstance(param.default, int):
        raise RecipeError(
            f"{func.__name__} has no default embedding size (lin_neurons): "
            "set emb_dim in the yaml"
        )
    return param.default


def resolve_emb_dim(hparams):
    """Fills in ``emb_dim: null`` (the back-end's published size, see
    ``published_emb_dim``) in the back-end's and the classifier's partials
    and in ``hparams["emb_dim"]``, so that everything built or exported
    from them has the size; an explicit ``emb_dim`` is left as it is.

    Arguments
    ---------
    hparams : dict
        Recipe hparams (with ``backends``).
    """
    if "backends" not in hparams or hparams.get("emb_dim", 0) is not None:
        return
    factory = backend_factory(hparams)
    size = published_emb_dim(factory)
    hparams["emb_dim"] = size
    if factory.keywords.get("lin_neurons", 0) is None:
        hparams["backends"][hparams["backend"]] = functools.partial(
            factory.func,
            *factory.args,
            **{**factory.keywords, "lin_neurons": size},
        )
    classifier = hparams["classifier"]
    if classifier.keywords.get("input_size", 0) is None:
        hparams["classifier"] = functools.partial(
            classifier.func,
            *classifier.args,
            **{**classifier.keywords, "input_size": size},
        )


def build_backend(hparams, num_speakers):
    """Instantiates the speaker back-end and classifier for the encoder's
    sizes, the embedding size (``emb_dim``, null: the back-end's published
    size) and the number of training speakers (times the speeds of speed
    perturbation), and registers them in ``modules`` and the checkpointer
    (their sizes are only known at run time). A back-end reading the layer
    stack makes the encoder return all hidden states."""
    encoder = hparams["ssl_encoder"]
    resolve_emb_dim(hparams)
    factory = backend_factory(hparams)
    sizes = {"input_size": encoder.hidden_size}
    if reads_layer_stack(factory):
        sizes["num_layers"] = encoder.num_layers + 1
        encoder.set_output_all_hiddens(True)
    embedding_model = factory(**sizes)
    classifier = hparams["classifier"](
        out_neurons=num_classes(hparams, num_speakers)
    )
    hparams["modules"]["embedding_model"] = embedding_model
    hparams["modules"]["classifier"] = classifier
    checkpointer = hparams.get("checkpointer")
    if checkpointer is not None:
        checkpointer.add_recoverable("embedding_model", embedding_model)
        checkpointer.add_recoverable("classifier", classifier)
    return embedding_model, classifier


def sub_centers(classifier):
    """Weight rows per class of a classifier (``SubCenterClassifier``;
    SpeechBrain's ``Classifier``: 1)."""
    return getattr(classifier, "sub_centers", 1)


def num_speakers(save_folder):
    """Number of classes in a saved ``label_encoder.txt``."""
    path = pathlib.Path(save_folder) / "label_encoder.txt"
    if not path.is_file():
        raise MissingFileError(
            f"{path} is missing: is this a finished training output folder?"
        )
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(str(path))
    return len(encoder)
