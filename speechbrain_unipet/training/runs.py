"""Opening what training made: a run's output folder (its best or averaged
checkpoint) or an exported model folder, as one ``LoadedModel``.

Authors
 * speechbrain-unipet contributors 2026
"""

import contextlib
import dataclasses
import pathlib
import random
import re

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.lobes.embedding import (
    speaker_embeddings,
)
from speechbrain_unipet.training.backends import build_backend, num_speakers
from speechbrain_unipet.training.checkpoints import (
    average_last_checkpoints,
    recover_best_checkpoint,
)
from speechbrain_unipet.training.hparams import RecipeError
from speechbrain_unipet.utils.errors import MissingFileError, UserError

logger = get_logger(__name__)

#: Files that make a folder an exported model (``speechbrain_unipet.export``).
EXPORT_MARKERS = ("hyperparams.yaml", "ssl_encoder.ckpt")


class ModelFolderError(UserError, ValueError):
    """A folder that is neither a training run nor an exported model."""


@dataclasses.dataclass
class LoadedModel:
    """A trained speaker-embedding model, opened from a training run or an
    exported folder: what every stage after training (verification,
    extraction, export, warm start, the command line) works with.

    Unpacks as ``hparams, modules`` (what ``load_trained_model`` returned
    before this type existed: saved copies of the recipe scripts do so).

    Arguments
    ---------
    kind : str
        ``run`` or ``export``.
    hparams : dict or object
        A run's recipe hparams (back-end instantiated), or the exported
        folder's hparams namespace.
    modules : torch.nn.ModuleDict
        ``ssl_encoder``, ``mean_var_norm``, ``embedding_model`` (a run's
        also ``classifier`` and the rest of its ``modules``), eval mode.
    sample_rate : int
        The rate the model takes audio at.
    model_id : str
        What a resumed extraction must match (folder, kind, averaging).
    chunking : dict
        Long-audio windowing of an export (``max_chunk_seconds``,
        ``chunk_overlap_seconds``); empty: the defaults.
    classifier : speechbrain.inference.speaker.EncoderClassifier or None
        The interface an export was opened with.

    Example
    -------
    >>> import torch
    >>> parts = torch.nn.ModuleDict(
    ...     {
    ...         "ssl_encoder": torch.nn.Identity(),
    ...         "mean_var_norm": torch.nn.Identity(),
    ...         "embedding_model": torch.nn.Identity(),
    ...     }
    ... )
    >>> model = LoadedModel("run", {"sample_rate": 16000}, parts, 16000, "x")
    >>> hparams, modules = model
    >>> model.parts[0] is modules["ssl_encoder"]
    True
    """

    kind: str
    hparams: object
    modules: torch.nn.ModuleDict
    sample_rate: int
    model_id: str
    chunking: dict = dataclasses.field(default_factory=dict)
    classifier: object = None

    @property
    def parts(self):
        """``(encoder, normalizer, embedding_model)``: the arguments of
        ``speaker_embeddings``."""
        return (
            self.modules["ssl_encoder"],
            self.modules["mean_var_norm"],
            self.modules["embedding_model"],
        )

    def __iter__(self):
        return iter((self.hparams, self.modules))


def is_export(folder):
    """Whether ``folder`` holds an exported model (its marker files).

    Arguments
    ---------
    folder : str or pathlib.Path
        Any folder.

    Returns
    -------
    bool

    Example
    -------
    >>> is_export(getfixture("tmp_path"))
    False
    """
    return all((pathlib.Path(folder) / m).is_file() for m in EXPORT_MARKERS)


def open_model(model, device="cpu", average_last=0):
    """A trained model from a training run's output folder or an exported
    ``EncoderClassifier`` folder.

    Arguments
    ---------
    model : str or pathlib.Path
        A ``train_speaker_embeddings.py`` output folder, or a folder made
        by ``speechbrain_unipet.export``.
    device : str
        Where the modules go.
    average_last : int
        Training runs only: average the last N checkpoints (0: the best).

    Returns
    -------
    LoadedModel
    """
    folder = pathlib.Path(model)
    if not (folder / "hyperparams.yaml").is_file():
        raise ModelFolderError(
            f"{folder} is neither a training run nor an exported model "
            "(no hyperparams.yaml): give the output_folder of "
            "train_speaker_embeddings.py or a folder made by "
            "speechbrain-unipet export"
        )
    model_id = f"{folder.resolve()}#%s#avg{average_last}"
    if not is_export(folder):
        return load_trained_model(folder, device, average_last)
    classifier = EncoderClassifier.from_hparams(
        source=str(folder), savedir=str(folder), run_opts={"device": device}
    )
    wrapper = classifier.mods.embedding_model
    modules = torch.nn.ModuleDict(
        {
            "ssl_encoder": wrapper.encoder,
            "mean_var_norm": wrapper.normalizer,
            "embedding_model": wrapper.model,
        }
    ).eval()
    return LoadedModel(
        kind="export",
        hparams=classifier.hparams,
        modules=modules,
        sample_rate=int(getattr(classifier.hparams, "sample_rate", 16000)),
        model_id=model_id % "export",
        chunking={
            "max_chunk_seconds": wrapper.max_chunk_seconds,
            "chunk_overlap_seconds": wrapper.chunk_overlap_seconds,
        },
        classifier=classifier,
    )


def same_folder(a, b):
    """Whether two paths name the same folder.

    Arguments
    ---------
    a, b : str or pathlib.Path

    Returns
    -------
    bool

    Example
    -------
    >>> same_folder("results/run", "results/../results/run/")
    True
    """
    return pathlib.Path(a).resolve() == pathlib.Path(b).resolve()


def relocate_run_paths(text, output_folder):
    """Points the paths of a saved ``hyperparams.yaml`` at the folder it is
    read from, so that a copied or moved run uses its own files.

    SpeechBrain saves the resolved yaml: every path under the run is
    written out from the ``output_folder`` the run was trained with.

    Arguments
    ---------
    text : str
        The saved yaml.
    output_folder : str or pathlib.Path
        Where the run is now.

    Returns
    -------
    text : str
        The yaml with the stored output folder replaced where it starts a
        path.
    moved_from : str or None
        The stored output folder, if it was not this one.

    Example
    -------
    >>> yaml = "output_folder: /old/run\\nsave_folder: /old/run/save\\n"
    >>> new, was = relocate_run_paths(yaml, "/new/run")
    >>> new.splitlines(), was
    (['output_folder: /new/run', 'save_folder: /new/run/save'], '/old/run')
    """
    found = re.search(r"^\s*output_folder:\s*(\S+)\s*$", text, flags=re.M)
    if not found:
        return text, None
    stored = found.group(1).strip("'\"").rstrip("/")
    here = pathlib.Path(output_folder).resolve()
    if pathlib.Path(stored).resolve() == here:
        return text, None
    pattern = r"(?<![\w./-])" + re.escape(stored) + r"(?=/|\s|$|['\"])"
    return re.sub(pattern, lambda _: str(here), text), stored


def load_trained_model(output_folder, device="cpu", average_last=0):
    """Rebuilds a training run from its saved ``hyperparams.yaml`` and loads
    its best checkpoint by the run's ``ckpt_select`` (lowest EER by
    default; runs older than that key: lowest ErrorRate), or the mean of
    its ``average_last`` newest end-of-epoch checkpoints.

    Arguments
    ---------
    output_folder : str or pathlib.Path
        The run's output folder.
    device : str
        Where the modules go.
    average_last : int
        0: the best checkpoint; N: the average of the last N (see
        ``average_last_checkpoints``; the run must have kept them,
        ``ckpt_keep_last``).

    Returns
    -------
    LoadedModel
        ``hparams`` (the run's recipe hparams, back-end instantiated) and
        ``modules`` (on ``device``, in eval mode); unpacks as
        ``hparams, modules``.
    """
    # The run's yaml seeds every generator (its __set_seed line) and its
    # modules draw their initial weights: a run that loads another (a
    # warm start, a transfer) keeps its own seed and random stream.
    with random_state_kept():
        return _load_trained_model(output_folder, device, average_last)


@contextlib.contextmanager
def random_state_kept():
    """Restores the generators of ``random``, NumPy and torch (CPU and
    CUDA) on exit, whatever the block seeded or drew.

    Example
    -------
    >>> _ = torch.manual_seed(7)
    >>> with random_state_kept():
    ...     _ = torch.manual_seed(1986)
    >>> torch.initial_seed()
    7
    """
    states = (
        random.getstate(),
        np.random.get_state(),
        torch.random.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def _load_trained_model(output_folder, device, average_last):
    saved = pathlib.Path(output_folder) / "hyperparams.yaml"
    if not saved.is_file():
        raise MissingFileError(
            f"{saved} not found: the folder must be the output_folder of "
            "train_speaker_embeddings.py"
        )
    text, moved_from = relocate_run_paths(
        saved.read_text(encoding="utf-8"), output_folder
    )
    if moved_from is not None:
        logger.warning(
            "%s was trained as %s: reading its files (checkpoints, CSVs, "
            "label encoder) from %s (a copied or moved run).",
            output_folder,
            moved_from,
            pathlib.Path(output_folder).resolve(),
        )
    hparams = load_hyperpyyaml(text)
    hparams = hparams.get("recipe", hparams)  # runs of the nested layout
    if "save_folder" not in hparams or "checkpointer" not in hparams:
        raise MissingFileError(
            f"{output_folder} is not a training run (its hyperparams.yaml has "
            "no save_folder; is it an exported model folder?): the folder "
            "must be the output_folder of train_speaker_embeddings.py"
        )
    build_backend(hparams, num_speakers(hparams["save_folder"]))
    if average_last:
        kept = hparams.get("ckpt_keep_last", 0)
        if kept < average_last:
            # Otherwise the newest checkpoints left (the best and the
            # latest) would be averaged: not the last epochs.
            raise RecipeError(
                f"average of the last {average_last} checkpoints asked, but "
                f"{output_folder} was trained with ckpt_keep_last={kept}: "
                "train with --ckpt_keep_last at least that large"
            )
        average_last_checkpoints(hparams["checkpointer"], average_last)
    else:
        checkpoint = recover_best_checkpoint(
            hparams["checkpointer"], hparams.get("ckpt_select", "ErrorRate")
        )
        if checkpoint is None:
            raise MissingFileError(
                f"No checkpoint in {hparams['save_folder']}: train the model "
                "first"
            )
        logger.info("Loaded checkpoint %s", checkpoint.path)
    modules = torch.nn.ModuleDict(hparams["modules"]).to(device).eval()
    return LoadedModel(
        kind="run",
        hparams=hparams,
        modules=modules,
        sample_rate=int(hparams["sample_rate"]),
        model_id=f"{pathlib.Path(output_folder).resolve()}#run#avg{average_last}",
    )


@torch.no_grad()
def compute_embedding(modules, wavs, wav_lens=None, **chunking):
    """Embeddings [B, 1, E] of a trained model's modules, through the one
    embedding path (``speechbrain_unipet.lobes.embedding.speaker_embeddings``).

    Arguments
    ---------
    modules : dict or torch.nn.ModuleDict
        ``ssl_encoder``, ``mean_var_norm`` and ``embedding_model``.
    wavs : torch.Tensor
        Waveforms [B, S].
    wav_lens : torch.Tensor or None
        Relative lengths (None: nothing padded).
    **chunking
        ``max_chunk_seconds`` / ``chunk_overlap_seconds`` of
        ``speaker_embeddings`` (default: its module constants).

    Returns
    -------
    torch.Tensor
    """
    return speaker_embeddings(
        modules["ssl_encoder"],
        modules["mean_var_norm"],
        modules["embedding_model"],
        wavs,
        wav_lens,
        **chunking,
    )[0]
