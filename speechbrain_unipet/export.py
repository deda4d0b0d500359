"""Export a trained PET speaker model as an offline pretrained folder.

    python -m speechbrain_unipet.export TRAIN_FOLDER HUB_FOLDER [--copy-backbone] [--merge-lora] [--overwrite] [--average-last N]

``TRAIN_FOLDER`` is the ``output_folder`` of ``train_speaker_embeddings.py``;
its best checkpoint (``ckpt_select``) is exported, or with ``--average-last
N`` the mean of its last N end-of-epoch checkpoints (kept with
``--ckpt_keep_last``). Whatever the back-end (``backend``), the exported
classifier has the training speakers' classes (speed perturbation's extra
classes are left out). ``HUB_FOLDER`` must not
be the run or inside it, and must be empty unless ``--overwrite`` is given;
it is written to a temporary folder first and renamed into place. It loads with
``EncoderClassifier.from_hparams(source=HUB_FOLDER, savedir=HUB_FOLDER)`` or
``SpeakerRecognition.from_hparams(...)``, offline and from any working
directory. It holds:

* ``hyperparams.yaml``: the model, with the backbone as the ``ssl_source``
  key (override it with ``overrides={"ssl_source": ...}``); no machine path;
* ``ssl_encoder.ckpt`` (the PET tensors only), ``embedding_model.ckpt``,
  ``classifier.ckpt``, ``label_encoder.ckpt`` (the names SpeechBrain's
  ``Pretrainer`` looks for);
* ``README.md``, a model card;
* with ``--copy-backbone``: ``backbone/`` (``config.json``, weights,
  ``preprocessor_config.json``), found through ``ssl_source: null``;
* with ``--merge-lora`` (LoRA models, implies ``--copy-backbone``): the LoRA
  update folded into the copied backbone weights, zero inference overhead.

Authors
 * speechbrain-unipet contributors 2026
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.inference import check_exportable
from speechbrain_unipet.lobes.embedding import (
    CHUNK_OVERLAP_SECONDS,
    MAX_CHUNK_SECONDS,
)
from speechbrain_unipet.pet.state import save_pet_file
from speechbrain_unipet.training.backends import (
    backend_factory,
    num_speakers,
    reads_layer_stack,
    sub_centers,
)
from speechbrain_unipet.training.hparams import RecipeError
from speechbrain_unipet.training.runs import EXPORT_MARKERS, load_trained_model
from speechbrain_unipet.utils.errors import UserError
from speechbrain_unipet.utils.files import atomic_write, dump_yaml

logger = get_logger(__name__)

HUB_YAML = """\
# ############################################################################
# Speaker embeddings: {method} PET on an SSL encoder + {backend_name}, exported by
# speechbrain_unipet.export. Load with
#   EncoderClassifier.from_hparams(source=<this folder>, savedir=<this folder>)
# ssl_source: the backbone (hub id or local folder); null = backbone/ next to
# ssl_encoder.ckpt. Override with overrides={{"ssl_source": "..."}}.
# ############################################################################

ssl_source: {ssl_source}
ssl_save_path: pretrained_models/ssl
sample_rate: 16000

ssl_encoder: !new:speechbrain_unipet.lobes.PETEncoder
    source: !ref <ssl_source>
    save_path: !ref <ssl_save_path>
    method: {method}
    output_all_hiddens: {output_all_hiddens}
    options:
{options}
# encode_batch gives compute_features no lengths: the waveforms pass through
# and embedding_model runs the recipe's embedding path with the lengths.
compute_features: !new:speechbrain_unipet.inference.PassThrough
mean_var_norm: !new:speechbrain_unipet.inference.PassThrough

backend: !new:{backend_class}
{backend}
# Utterances longer than max_chunk_seconds are embedded in overlapping
# windows whose embeddings are averaged (memory flat in the length; null:
# whole utterances), as the recipe's verification does.
embedding_model: !new:speechbrain_unipet.inference.SpeakerEmbeddingModel
    encoder: !ref <ssl_encoder>
    model: !ref <backend>
    max_chunk_seconds: {max_chunk_seconds}
    chunk_overlap_seconds: {chunk_overlap_seconds}

classifier: !new:{classifier_class}
{classifier}

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        ssl_encoder: !ref <ssl_encoder>
        embedding_model: !ref <backend>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""


class ExportError(UserError, ValueError):
    """A training folder that cannot be exported, with the reason."""


def _dotted(cls):
    """Import path of a class, for ``!new:``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _indent(mapping, spaces):
    text = dump_yaml(mapping) if mapping else "{}\n"
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def backbone_files(hparams):
    """The local folder holding the HF backbone files of a training run."""
    source = pathlib.Path(str(hparams["ssl_hub"]))
    if source.is_dir():
        return source
    cache = pathlib.Path(str(hparams["ssl_save_path"]))
    snapshots = (
        cache
        / ("models--" + str(hparams["ssl_hub"]).replace("/", "--"))
        / "snapshots"
    )
    found = (
        sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    )
    if not found:
        raise ExportError(
            f"Cannot find the files of backbone '{hparams['ssl_hub']}' (looked "
            f"in {snapshots}) to copy them."
        )
    return found[-1].parent


def copy_backbone(encoder, hparams, dest):
    """Copies config, weights and preprocessor config into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    src = backbone_files(hparams)
    copied = []
    for path in src.iterdir():
        if (
            path.name == "config.json"
            or path.name == "preprocessor_config.json"
            or path.suffix in (".safetensors", ".bin")
            or path.name.endswith(".index.json")
        ):
            shutil.copy2(path.resolve(), dest / path.name)
            copied.append(path.name)
    encoder.backbone.save_preprocessor_config(dest)
    return copied


def check_destination(train_folder, hub_folder, overwrite=False):
    """Refuses an export destination that would damage a run or a folder.

    Arguments
    ---------
    train_folder : pathlib.Path
        The training run.
    hub_folder : pathlib.Path
        The destination.
    overwrite : bool
        Whether a non-empty destination may be replaced.

    Raises
    ------
    ExportError
        If the destination is the run, inside it or contains it, or is a
        non-empty folder (or a file) and ``overwrite`` is not set.
    """
    train, hub = train_folder.resolve(), hub_folder.resolve()
    if hub == train or train in hub.parents or hub in train.parents:
        raise ExportError(
            f"Export destination '{hub_folder}' is the training folder "
            f"'{train_folder}', inside it or contains it: exporting there "
            "would overwrite the run. Choose a folder outside the run."
        )
    if hub.exists() and not hub.is_dir():
        raise ExportError(f"Export destination '{hub_folder}' is a file.")
    if hub.is_dir() and any(hub.iterdir()):
        if not overwrite:
            raise ExportError(
                f"Export destination '{hub_folder}' is not empty. Give "
                "--overwrite to replace it, or choose an empty folder."
            )
        if not all((hub / n).is_file() for n in EXPORT_MARKERS):
            raise ExportError(
                f"Export destination '{hub_folder}' is not an exported model "
                f"folder (no {' / '.join(EXPORT_MARKERS)}): --overwrite only "
                "replaces an earlier export. Choose an empty folder."
            )


def export(
    train_folder,
    hub_folder,
    copy_backbone_files=False,
    merge_lora=False,
    overwrite=False,
    average_last=0,
):
    """Writes the hub folder (see the module docstring). Returns its path.

    Everything is written to a temporary folder next to ``hub_folder``,
    which then replaces it: a failed export leaves no half-written folder.

    Arguments
    ---------
    train_folder : str or pathlib.Path
        ``output_folder`` of the training run.
    hub_folder : str or pathlib.Path
        Destination (absent, empty, or replaced with ``overwrite``).
    copy_backbone_files : bool
        Copy the backbone into ``backbone/`` (self-contained folder).
    merge_lora : bool
        Fold LoRA into the copied backbone weights.
    overwrite : bool
        Replace a non-empty destination.
    average_last : int
        0: the best checkpoint; N: the mean of the last N.

    Returns
    -------
    pathlib.Path
    """
    train_folder = pathlib.Path(train_folder)
    final = pathlib.Path(hub_folder).resolve()
    check_destination(train_folder, final, overwrite)
    hparams, _ = load_trained_model(train_folder, average_last=average_last)
    encoder = hparams["ssl_encoder"]
    method = encoder.method.name
    if merge_lora:
        if "lora" not in encoder.method.components:
            raise ExportError(f"--merge-lora: method '{method}' has no LoRA")
        copy_backbone_files = True
    final.parent.mkdir(parents=True, exist_ok=True)
    hub = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)
    )
    umask = os.umask(0)
    os.umask(umask)
    hub.chmod(0o777 & ~umask)  # mkdtemp's 0700 would lock other users out
    try:
        _write_hub(hub, train_folder, hparams, copy_backbone_files, merge_lora)
        _replace_folder(hub, final)
    except BaseException:
        shutil.rmtree(hub, ignore_errors=True)
        raise
    if (
        not copy_backbone_files
        and pathlib.Path(str(hparams["ssl_hub"])).exists()
    ):
        logger.warning(
            "The backbone is referenced by the local path %s; the folder only "
            "works where that path exists. Use --copy-backbone to make it "
            "self-contained.",
            hparams["ssl_hub"],
        )
    return final


def _replace_folder(new, final):
    """Moves ``new`` to ``final``, replacing what was there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_hub(hub, train_folder, hparams, copy_backbone_files, merge_lora):
    """Writes the exported files into the (empty) folder ``hub``."""
    encoder = hparams["ssl_encoder"]
    method = encoder.method.name

    # The encoder's validated options: every option of the method, from the
    # registry (whatever the run's yaml wrote out).
    options = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in encoder.options.items()
    }
    if merge_lora:
        encoder.merge_lora()
        dest = hub / "backbone"
        if dest.exists():
            shutil.rmtree(dest)
        copy_backbone(encoder, hparams, dest)
        for path in dest.glob("*.safetensors"):
            path.unlink()
        for path in dest.glob("*.bin"):
            path.unlink()
        encoder.backbone.save_pretrained(dest)
        method, options = "frozen", {}
        # What a frozen encoder trains: the layer weights, unless the
        # back-end reads the layer stack itself.
        state = {}
        if not encoder.output_all_hiddens:
            state["layer_weights"] = encoder.layer_weights.detach().cpu()
        meta = dict(encoder.pet_metadata(), method="frozen")
    else:
        if copy_backbone_files:
            dest = hub / "backbone"
            if dest.exists():
                shutil.rmtree(dest)
            copy_backbone(encoder, hparams, dest)
        state = {k: v.cpu() for k, v in encoder.pet_state_dict().items()}
        meta = encoder.pet_metadata()
    save_pet_file(hub / "ssl_encoder.ckpt", meta, state)
    torch.save(
        hparams["modules"]["embedding_model"].state_dict(),
        hub / "embedding_model.ckpt",
    )
    # The speakers' own classes only (speed perturbation adds classes of
    # sped-up copies after them, which the label encoder does not name).
    speakers = num_speakers(hparams["save_folder"])
    classifier = hparams["modules"]["classifier"]
    state = classifier.state_dict()
    state["weight"] = state["weight"][: speakers * sub_centers(classifier)]
    torch.save(state, hub / "classifier.ckpt")
    classifier_kwargs = dict(hparams["classifier"].keywords)
    classifier_kwargs["out_neurons"] = speakers
    shutil.copy2(
        pathlib.Path(hparams["save_folder"]) / "label_encoder.txt",
        hub / "label_encoder.ckpt",
    )

    factory = backend_factory(hparams)
    backend = dict(factory.keywords)
    backend["input_size"] = encoder.hidden_size
    if reads_layer_stack(factory):
        backend["num_layers"] = encoder.num_layers + 1
    ssl_source = (
        "null" if copy_backbone_files else json.dumps(str(hparams["ssl_hub"]))
    )
    (hub / "hyperparams.yaml").write_text(
        HUB_YAML.format(
            method=method,
            ssl_source=ssl_source,
            options=_indent(options, 8),
            output_all_hiddens=encoder.output_all_hiddens,
            backend_class=_dotted(factory.func),
            backend_name=factory.func.__name__,
            backend=_indent(backend, 4),
            classifier_class=_dotted(hparams["classifier"].func),
            classifier=_indent(classifier_kwargs, 4),
            max_chunk_seconds=MAX_CHUNK_SECONDS,
            chunk_overlap_seconds=CHUNK_OVERLAP_SECONDS,
        ),
        encoding="utf-8",
    )
    write_card(
        hub,
        hparams,
        encoder,
        method,
        copy_backbone_files,
        merge_lora,
        train_folder,
    )


def write_card(hub, hparams, encoder, method, copied, merged, train_folder):
    """README.md model card."""
    trainable, total = encoder.count_parameters()
    pet_bytes = (hub / "ssl_encoder.ckpt").stat().st_size
    lines = [
        f"# Speaker embeddings: `{method}` PET on `{hparams['ssl_hub']}`",
        "",
        "Exported by `python -m speechbrain_unipet.export`. Load offline with:",
        "",
        "```python",
        "from speechbrain.inference.speaker import SpeakerRecognition",
        "model = SpeakerRecognition.from_hparams(source=HUB, savedir=HUB)",
        "score, same = model.verify_files('a.wav', 'b.wav')",
        "```",
        "",
        f"* PET method: `{encoder.method.name}`"
        + (" (LoRA merged into the backbone)" if merged else ""),
        f"* Backbone: `{hparams['ssl_hub']}`"
        + (
            " (copied into backbone/)"
            if copied
            else " (referenced: `ssl_source`)"
        ),
        f"* Speaker back-end: `{hparams.get('backend', 'ecapa')}`",
        f"* Trainable encoder parameters: {trainable:,} of {total:,} "
        f"({100 * trainable / total:.2f} %)",
        f"* PET file `ssl_encoder.ckpt`: {pet_bytes / 1e6:.2f} MB",
        f"* Training speakers: {num_speakers(hparams['save_folder'])}",
    ]
    results = train_folder / "results.json"
    if results.is_file():
        res = json.loads(results.read_text())
        lines.append(
            f"* Verification ({res.get('verification_file', '?')}, "
            f"{res.get('num_trials', '?')} trials): EER {100 * res['eer']:.2f} %, "
            f"minDCF(0.01) {res['min_dcf']:.4f}"
        )
    else:
        lines.append("* Verification: not measured")
    (hub / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def add_arguments(parser):
    """Adds the export options to ``parser``: this module's command line
    and ``speechbrain-unipet export`` share them.

    Arguments
    ---------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        ``parser``.
    """
    parser.add_argument(
        "train_folder",
        help="output_folder of train_speaker_embeddings.py (the run)",
    )
    parser.add_argument(
        "hub_folder",
        help="folder to write: outside the run, absent or empty (or an "
        "earlier export, with --overwrite)",
    )
    parser.add_argument(
        "--copy-backbone",
        action="store_true",
        help="copy the backbone into backbone/ for a self-contained folder "
        "(default: off, the folder references the backbone)",
    )
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold LoRA into the copied backbone weights (LoRA models; "
        "implies --copy-backbone; default: off)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty HUB_FOLDER (default: off)",
    )
    parser.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="N",
        help="export the mean of the last N end-of-epoch checkpoints "
        "(trained with --ckpt_keep_last N or more) instead of the best one "
        "(default: %(default)s, the best one)",
    )
    return parser


def run(args):
    """Exports as parsed by ``add_arguments`` and says where.

    Arguments
    ---------
    args : argparse.Namespace

    Returns
    -------
    pathlib.Path
    """
    hub = export(
        args.train_folder,
        args.hub_folder,
        args.copy_backbone,
        args.merge_lora,
        args.overwrite,
        args.average_last,
    )
    print(f"Exported to {hub}")
    return hub


def main(argv=None):
    """Command line: ``python -m speechbrain_unipet.export TRAIN HUB``."""
    parser = add_arguments(
        argparse.ArgumentParser(
            description="Export a trained PET speaker model."
        )
    )
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ExportError, FileNotFoundError, RecipeError) as err:
        sys.exit(f"ERROR: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


#: Marks the calibration block ``add_calibration`` appends to
#: ``hyperparams.yaml`` (replaced, not repeated, on a second call).
CALIBRATION_MARK = "# --- score calibration (speechbrain-unipet calibrate) ---"


def add_calibration(hub_folder, calibrator, threshold=None, p_target=0.01):
    """Stores a score calibration in an exported model folder, so that
    ``speechbrain_unipet.inference.CalibratedSpeakerRecognition`` returns
    calibrated scores (LLRs) and Bayes decisions.

    Arguments
    ---------
    hub_folder : str or pathlib.Path
        A folder written by ``export``.
    calibrator : ScoreCalibrator
        Fitted on cosine scores, with duration / norm quality measures at
        most (what two recordings give alone).
    threshold : float or None
        Decision threshold on the calibrated scores (None: the Bayes
        threshold at ``p_target``).
    p_target : float
        Target prior of the default decision.
    """
    hub = pathlib.Path(hub_folder)
    yaml_path = hub / "hyperparams.yaml"
    check_calibration_target(hub, calibrator)
    entry = dict(
        calibrator.to_dict(), threshold=threshold, decision_p_target=p_target
    )
    text = yaml_path.read_text(encoding="utf-8")
    text = text.split("\n" + CALIBRATION_MARK, 1)[0].rstrip("\n") + "\n"
    # JSON is YAML (flow style): the entry needs no YAML writer.
    text += f"\n{CALIBRATION_MARK}\ncalibration: {json.dumps(entry)}\n"
    atomic_write(yaml_path, text)
    atomic_write(hub / "calibration.json", json.dumps(entry, indent=2))


def check_calibration_target(hub_folder, calibrator):
    """Refuses what ``add_calibration`` refuses, writing nothing: a folder
    that is not an export, or a calibration an exported model cannot apply.

    Arguments
    ---------
    hub_folder : str or pathlib.Path
    calibrator : ScoreCalibrator

    Raises
    ------
    ExportError
        With the reason.
    """

    hub = pathlib.Path(hub_folder)
    if not all((hub / m).is_file() for m in EXPORT_MARKERS):
        raise ExportError(
            f"{hub} is not an exported model folder (it lacks "
            f"{' or '.join(EXPORT_MARKERS)}): export the run first with "
            "python -m speechbrain_unipet.export"
        )
    try:
        check_exportable(calibrator)
    except ValueError as err:
        raise ExportError(str(err)) from None
