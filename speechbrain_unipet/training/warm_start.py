"""Warm start (``init_from``): starting a run from another run or an
exported model, across the stage chains the published systems use
(frozen / BitFit / LoRA, then full fine-tuning).

Authors
 * speechbrain-unipet contributors 2026
"""

import pathlib
import re

import speechbrain as sb
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.training.backends import sub_centers
from speechbrain_unipet.training.hparams import (
    RecipeError,
    _top_keys,
    training_speeds,
)
from speechbrain_unipet.training.runs import load_trained_model, same_folder
from speechbrain_unipet.utils.errors import MissingFileError

logger = get_logger(__name__)


INIT_FILES = ("ssl_encoder.ckpt", "embedding_model.ckpt", "hyperparams.yaml")


#: The method changes ``init_from`` allows (each method also starts from
#: itself): this run's method -> the earlier methods whose encoder carries
#: over exactly. ``finetune`` trains every Transformer weight and the layer
#: weights, which is all that ``frozen``, ``bitfit`` and ``lora`` (its
#: update merged into the weights) tune: BUT's MHFA (frozen -> joint
#: fine-tuning) and WeSpeaker's W2V-BERT (LoRA, merged -> full fine-tuning).
#: Adapters and prompts are branches outside the weights: they cannot be
#: folded, and a PET run keeps the weights a fine-tuned model changed frozen.
INIT_CHAINS = {"finetune": ("frozen", "bitfit", "lora", "finetune")}


def _describe_encoder(meta):
    """One line naming a model's method and backbone."""
    text = f"method '{meta.get('method')}'"
    if meta.get("model_type") is not None:
        text += (
            f" on a {meta.get('model_type')} backbone "
            f"({meta.get('num_layers')} layers, hidden size "
            f"{meta.get('hidden_size')})"
        )
    return text


def _init_chains_text():
    """The supported method changes, for error messages."""
    chains = "; ".join(
        f"a '{mine}' run from a model of method "
        + ", ".join(f"'{m}'" for m in theirs if m != mine)
        + " (LoRA merged into the backbone weights)"
        for mine, theirs in INIT_CHAINS.items()
    )
    return "init_from starts a run from a model of its own method, or " + chains


def check_init_chain(theirs, mine, source="init_from"):
    """Refuses an earlier model whose encoder does not carry exactly into
    this run's: a method change outside ``INIT_CHAINS``, or another
    backbone shape.

    Arguments
    ---------
    theirs : dict
        The earlier encoder's ``pet_metadata()`` (``method``; the backbone
        shape is compared where both give it).
    mine : dict
        This run's encoder's ``pet_metadata()``.
    source : str
        What the earlier model is, for the message.

    Raises
    ------
    RecipeError
        Naming both methods (or backbones) and the chains that work.

    Example
    -------
    >>> check_init_chain({"method": "lora"}, {"method": "finetune"})
    >>> check_init_chain({"method": "inner_adapter"}, {"method": "finetune"})
    Traceback (most recent call last):
    ...
    speechbrain_unipet.training.hparams.RecipeError: init_from holds method 'inner_adapter', but this run trains method 'finetune': ...
    """
    a, b = theirs.get("method"), mine.get("method")
    if a != b and a not in INIT_CHAINS.get(b, ()):
        if b in INIT_CHAINS:
            why = (
                f"what '{a}' tunes is not backbone or layer weights, so it "
                f"cannot be folded into the weights '{b}' trains"
            )
        else:
            why = f"'{b}' keeps backbone weights frozen that '{a}' may change"
        raise RecipeError(
            f"{source} holds {_describe_encoder(theirs)}, but this run trains "
            f"method '{b}': {why}. {_init_chains_text()}. Train this stage "
            f"with the recipe of method '{a}'."
        )
    keys = ("model_type", "num_layers", "hidden_size")
    if any(
        theirs.get(k) is not None and theirs.get(k) != mine.get(k) for k in keys
    ):
        raise RecipeError(
            f"{source} holds {_describe_encoder(theirs)}, but this run trains "
            f"{_describe_encoder(mine)}: give this run the ssl_hub the "
            "earlier model was trained on"
        )


def _tensor_at(module, name):
    """The tensor ``module`` uses under a parameter name, or None: a
    parametrised weight (LoRA) is read as its value, the update merged, so
    nothing is changed in place."""
    path, _, leaf = name.rpartition(".")
    try:
        owner = module.get_submodule(path) if path else module
        value = getattr(owner, leaf)
    except AttributeError:
        return None
    return value if isinstance(value, torch.Tensor) else None


def _differing_frozen_weights(their_encoder, my_encoder, tuned):
    """Backbone parameters this encoder keeps frozen (not in ``tuned``)
    whose values the earlier encoder does not share."""
    differ = []
    for name, param in my_encoder.named_parameters():
        if name in tuned or not name.startswith("backbone."):
            continue
        value = _tensor_at(their_encoder, name)
        if (
            value is None
            or value.shape != param.shape
            or not torch.equal(value.to(param.device), param)
        ):
            differ.append(name)
    return differ


def carry_encoder_state(their_encoder, my_encoder, source="init_from"):
    """Starts ``my_encoder`` from ``their_encoder``, exactly: the same
    method takes its PET state (as ``load_pet_state_dict``); a ``finetune``
    encoder (see ``INIT_CHAINS``) takes the Transformer weights the earlier
    one ran with (a LoRA update merged into them, read without merging
    ``their_encoder`` in place) and its layer weights. Either way, the
    backbone weights this encoder keeps frozen must be the earlier one's,
    so that both compute the same output.

    Arguments
    ---------
    their_encoder : PETEncoder
        The earlier model's encoder; only read.
    my_encoder : PETEncoder
        This run's encoder; its tuned tensors are overwritten.
    source : str
        What the earlier model is, for the messages.

    Returns
    -------
    str
        What was carried, for the log.

    Raises
    ------
    RecipeError
        If the method change is not one of ``INIT_CHAINS``, the backbones
        differ in shape or pretrained weights, or the PET states in options
        (``adapter_dim``...).

    Example
    -------
    >>> from speechbrain_unipet.lobes import PETEncoder
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "wavlm")
    >>> lora = PETEncoder(folder, method="lora")
    >>> full = PETEncoder(folder, method="finetune")
    >>> carry_encoder_state(lora, full)
    "the Transformer weights (LoRA merged) and layer weights of a 'lora' encoder"
    >>> carry_encoder_state(full, lora)
    Traceback (most recent call last):
    ...
    speechbrain_unipet.training.hparams.RecipeError: init_from holds method 'finetune' ...
    """
    theirs, mine = their_encoder.pet_metadata(), my_encoder.pet_metadata()
    check_init_chain(theirs, mine, source)
    if theirs["backbone_fingerprint"] != mine["backbone_fingerprint"]:
        raise RecipeError(
            f"{source} was trained on a {theirs['model_type']} backbone with "
            f"other pretrained weights than this run's ({my_encoder.source}): "
            "give this run the ssl_hub the earlier model was trained on"
        )
    with torch.no_grad():
        tuned = my_encoder.pet_state_dict()
        if theirs["method"] == mine["method"]:
            state, carried = their_encoder.pet_state_dict(), "PET weights"
        else:
            state = {name: _tensor_at(their_encoder, name) for name in tuned}
            lost = sorted(
                name for name, value in state.items() if value is None
            )
            if lost:
                raise RecipeError(
                    f"{source}: its '{theirs['method']}' encoder has no "
                    f"{_first_names(lost)} for this run's '{mine['method']}'"
                )
            merged = (
                " (LoRA merged)"
                if any(c.name == "lora" for c in their_encoder.components)
                else ""
            )
            layers = " and layer weights" if "layer_weights" in tuned else ""
            carried = (
                f"the Transformer weights{merged}{layers} of a "
                f"'{theirs['method']}' encoder"
            )
        differ = _differing_frozen_weights(their_encoder, my_encoder, tuned)
        if differ:
            raise RecipeError(
                f"{source} ran on backbone weights that this run's method "
                f"'{mine['method']}' keeps frozen and that differ from its "
                f"ssl_hub's ({my_encoder.source}): {_first_names(differ)} (an "
                "export with --merge-lora, or another checkpoint of the "
                "backbone?). Start a 'finetune' run from it, which trains "
                "them, or give --ssl_hub the backbone it ran on"
            )
        try:
            my_encoder.load_pet_state_dict(state)
        except ValueError as err:
            raise RecipeError(
                f"The PET weights of {source} do not fit this run's encoder "
                "(method options such as adapter_dim, prompt_length, "
                f"pet_layers: see its hyperparams.yaml): {err}"
            ) from err
    return carried


def _first_names(names, count=3):
    """The first names of a list, for a message."""
    return ", ".join(names[:count]) + (" ..." if len(names) > count else "")


def _check_export_files(folder):
    """Refuses a folder that is not an exported model."""
    if not pathlib.Path(folder).is_dir():
        raise RecipeError(
            f"init_from '{folder}' does not exist: give the output_folder of "
            "a training run or a folder written by python -m "
            "speechbrain_unipet.export"
        )
    missing = [n for n in INIT_FILES if not (folder / n).is_file()]
    if missing:
        raise RecipeError(
            f"init_from '{folder}' lacks {missing}: give a folder written by "
            "python -m speechbrain_unipet.export (or a training run's "
            "output_folder)"
        )


def is_init_export(folder):
    """Whether an ``init_from`` folder is read as an exported model (else
    as a training run's output folder)."""
    folder = pathlib.Path(folder)
    return (folder / "ssl_encoder.ckpt").is_file() or not (
        folder / "save"
    ).is_dir()


def _run_method(folder):
    """The PET method of a training run, from its ``hyperparams.yaml``."""
    saved = pathlib.Path(folder) / "hyperparams.yaml"
    if not saved.is_file():
        raise MissingFileError(
            f"{saved} not found: init_from must be the output_folder of "
            "train_speaker_embeddings.py or an exported model folder"
        )
    top = _top_keys(saved)
    return top.get("recipe", top).get("pet_method")


def check_init_from(hparams, folder):
    """Checks, before the data preparation and any model loads, that an
    ``init_from`` folder can start this run: an exported model or a
    training run whose method carries into this run's (``INIT_CHAINS``),
    on a backbone of the same shape (where the folder says it cheaply).

    Arguments
    ---------
    hparams : dict
        This run's hparams (with ``ssl_encoder``).
    folder : str or pathlib.Path
        The ``init_from`` folder.

    Raises
    ------
    RecipeError
        See ``check_init_chain``; or a folder that is neither.
    """
    folder = pathlib.Path(folder)
    if is_init_export(folder):
        _check_export_files(folder)
    mine = hparams["ssl_encoder"].pet_metadata()
    if is_init_export(folder):
        saved = torch.load(
            folder / "ssl_encoder.ckpt",
            map_location="cpu",
            weights_only=True,
            mmap=True,  # only the metadata is read
        )
        theirs = saved.get("meta", {})
    else:
        theirs = {"method": _run_method(folder)}
    if theirs.get("method") is not None:  # else checked once loaded
        check_init_chain(theirs, mine, f"init_from '{folder}'")


def _exported_encoder(hparams, folder, saved, their_source):
    """The encoder of an exported model folder, built as it was exported:
    on its ``backbone/`` (``ssl_source: null``, e.g. LoRA merged) or else
    on this run's ``ssl_hub``."""
    mine = hparams["ssl_encoder"]
    meta = saved.get("meta", {})
    spec = _top_keys(folder / "hyperparams.yaml").get("ssl_encoder") or {}
    options = {
        k: list(v) if isinstance(v, list) else v
        for k, v in (spec.get("options") or {}).items()
    }
    theirs = type(mine)(
        None,
        method=meta.get("method", spec.get("method")),
        save_path=hparams.get("ssl_save_path", ""),
        output_all_hiddens=bool(meta.get("output_all_hiddens", False)),
        options=options,
    )
    source = f"init_from '{folder}'"
    if their_source == "null":
        backbone = (folder / "ssl_encoder.ckpt").resolve().parent / "backbone"
        if not (backbone / "config.json").is_file():
            raise RecipeError(
                f"{source} has ssl_source: null but no backbone folder "
                f"({backbone}): export it with --copy-backbone"
            )
        theirs.attach_backbone(backbone)
    else:
        theirs.attach_backbone(mine.source)
    if meta.get("backbone_fingerprint") not in (
        None,
        theirs.backbone.fingerprint(),
    ):
        raise RecipeError(
            f"{source} was trained on a backbone with other pretrained "
            f"weights than {theirs.source}: give this run the ssl_hub the "
            "exported model was trained on"
        )
    try:
        theirs.load_pet_state_dict(saved["state"])
    except ValueError as err:
        raise RecipeError(
            f"{source}: ssl_encoder.ckpt does not fit the encoder its "
            f"hyperparams.yaml describes: {err}"
        ) from err
    return theirs.eval()


def init_from_export(hparams, folder):
    """Starts a run from an exported model: its encoder (``PET weights``, or
    for a method change, see ``carry_encoder_state``) and embedding model;
    the classifier stays fresh for this run's speakers.

    Arguments
    ---------
    hparams : dict
        The run's hparams, after ``build_backend``.
    folder : str
        A folder written by ``python -m speechbrain_unipet.export``.

    Raises
    ------
    RecipeError
        Naming both models if the folder holds a method that does not carry
        into this run's (``INIT_CHAINS``), another backbone or back-end
        size.
    """
    folder = pathlib.Path(folder)
    _check_export_files(folder)
    encoder = hparams["ssl_encoder"]
    saved = torch.load(
        folder / "ssl_encoder.ckpt", map_location="cpu", weights_only=True
    )
    source = f"init_from '{folder}'"
    check_init_chain(saved.get("meta", {}), encoder.pet_metadata(), source)
    found = re.search(
        r"^ssl_source: *(.*)$",
        (folder / "hyperparams.yaml").read_text(encoding="utf-8"),
        flags=re.M,
    )
    their_source = found.group(1).strip().strip('"') if found else "null"
    if their_source not in ("null", str(hparams["ssl_hub"])):
        logger.warning(
            "init_from '%s' was trained on backbone %s, this run loads %s: "
            "same architecture, but make sure they hold the same weights",
            folder,
            their_source,
            hparams["ssl_hub"],
        )
    their_encoder = _exported_encoder(hparams, folder, saved, their_source)
    carried = carry_encoder_state(their_encoder, encoder, source)
    del their_encoder, saved
    ecapa = hparams["modules"]["embedding_model"]
    state = torch.load(
        folder / "embedding_model.ckpt", map_location="cpu", weights_only=True
    )
    try:
        ecapa.load_state_dict(state)
    except RuntimeError as err:
        raise RecipeError(
            f"The embedding model of init_from '{folder}' has other sizes "
            "than this run's (ecapa_channels, emb_dim: see its "
            f"hyperparams.yaml): {str(err).splitlines()[1:3]}"
        ) from err
    logger.info(
        "Initialised the encoder (%s) and the embedding model from %s "
        "(fresh classifier)",
        carried,
        folder,
    )


def init_from(hparams, folder, average_last=0, classifier=True):
    """Starts a run from earlier weights: an exported model folder
    (``init_from_export``) or a training run's output folder
    (``init_from_run``).

    Arguments
    ---------
    hparams : dict
        The run's hparams, after ``build_backend``.
    folder : str
        The ``init_from`` folder.
    average_last : int
        For a run: 0, its best checkpoint; N, the mean of its last N.
    classifier : bool
        For a run: copy the classifier weights of the speakers both runs
        train on (False: a fresh classifier, ``init_classifier``). An
        export holds no classifier: always fresh.
    """
    if is_init_export(folder):
        return init_from_export(hparams, folder)
    return init_from_run(hparams, folder, average_last, classifier)


def init_from_run(hparams, folder, average_last=0, classifier=True):
    """Starts a run from another training run (a second stage, e.g. joint
    or large-margin fine-tuning): its encoder (PET weights, or for a method
    change, see ``carry_encoder_state``) and speaker back-end, and the
    classifier weights of the speakers both runs train on (matched by
    name; longer crops may leave out speakers with short audio), for the
    speeds both share at the same place (the first, 1.0, always), so a
    stage without speed perturbation keeps the speakers' own classes. The
    earlier run's folder is only read.

    Arguments
    ---------
    hparams : dict
        This run's hparams, after ``build_backend`` and the data
        preparation (``label_encoder.txt``).
    folder : str or pathlib.Path
        The earlier run's output folder.
    average_last : int
        0: its best checkpoint; N: the mean of its last N.
    classifier : bool
        Copy the classes of common speakers (False: fresh classifier).

    Raises
    ------
    RecipeError
        If the earlier method does not carry into this run's
        (``INIT_CHAINS``), or the backbones or back-end sizes differ.
    """
    folder = pathlib.Path(folder)
    if same_folder(hparams["output_folder"], folder):
        raise RecipeError(
            f"init_from '{folder}' is this run's own output_folder: give the "
            "second stage another --output_folder"
        )
    source = f"init_from '{folder}'"
    # Before loading the run: its method is in its hyperparams.yaml.
    method = _run_method(folder)
    if method is not None:
        check_init_chain(
            {"method": method}, hparams["ssl_encoder"].pet_metadata(), source
        )
    theirs, their_modules = load_trained_model(folder, "cpu", average_last)
    carried = carry_encoder_state(
        theirs["ssl_encoder"], hparams["ssl_encoder"], source
    )
    try:
        hparams["modules"]["embedding_model"].load_state_dict(
            their_modules["embedding_model"].state_dict()
        )
    except RuntimeError as err:
        raise RecipeError(
            f"The speaker back-end of init_from '{folder}' differs from this "
            "run's (backend, its sizes, emb_dim: see its hyperparams.yaml): "
            f"{str(err).splitlines()[1:3]}"
        ) from err
    copied = (
        _copy_speaker_classes(theirs, their_modules, hparams)
        if classifier
        else "fresh classifier: init_classifier is False"
    )
    logger.info(
        "Initialised the encoder (%s) and the speaker back-end from the run "
        "%s (%s)",
        carried,
        folder,
        copied,
    )


def _label_indices(save_folder):
    """Speaker -> class index of a run's ``label_encoder.txt``."""
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(str(pathlib.Path(save_folder) / "label_encoder.txt"))
    return dict(encoder.lab2ind)


def _copy_speaker_classes(theirs, their_modules, hparams):
    """Copies the classifier weights of the speakers both runs train on,
    for the speeds both share at the same place (the first, 1.0, always);
    the other classes stay fresh. Returns what was copied, for the log."""
    mine_idx = _label_indices(hparams["save_folder"])
    their_idx = _label_indices(theirs["save_folder"])
    common = [spk for spk in mine_idx if spk in their_idx]
    classifier = hparams["modules"]["classifier"]
    their_state = their_modules["classifier"].state_dict()
    k = sub_centers(classifier)
    if not common or sub_centers(their_modules["classifier"]) != k:
        return "fresh classifier: no common speakers or other sub_centers"
    shared = 0
    for a, b in zip(
        training_speeds(theirs), training_speeds(hparams), strict=False
    ):
        if a != b:
            break
        shared += 1
    weight = classifier.weight.detach().clone()
    for speed in range(shared):
        for spk in common:
            mine_row = (mine_idx[spk] + speed * len(mine_idx)) * k
            their_row = (their_idx[spk] + speed * len(their_idx)) * k
            weight[mine_row : mine_row + k] = their_state["weight"][
                their_row : their_row + k
            ]
    their_state["weight"] = weight
    classifier.load_state_dict(their_state)
    return (
        f"classifier classes of {len(common)} of {len(mine_idx)} speakers, "
        f"{shared} speed(s)"
    )
