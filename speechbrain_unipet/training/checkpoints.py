"""A SpeechBrain ``Checkpointer`` whose checkpoints appear atomically and
whose recovery survives damaged checkpoints.

SpeechBrain writes ``CKPT.yaml`` (the file that makes a folder count as a
checkpoint) *before* the parameter files, so a run killed while saving
(SIGKILL, OOM-killer, pre-emption) leaves a newest "checkpoint" with
truncated files, and resuming fails with ``EOFError``. Here the meta file is
written under a temporary name and renamed into place only after every
parameter file is on disk; an interrupted save is simply not a checkpoint,
and its folder is removed (and the removal logged) by ``remove_incomplete``,
which the training script calls before training (not at construction: a
verification or export beside a running training must not remove a save in
progress). A checkpoint whose files are missing or
unreadable (a deleted or truncated file) is skipped with a warning naming
it and the file, and the next one in order is loaded instead.

Authors
 * speechbrain-unipet contributors 2026
"""

import os
import pathlib
import pickle
import shutil
import zipfile

import torch
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.training.hparams import RecipeError
from speechbrain_unipet.utils.errors import UserError

logger = get_logger(__name__)


PENDING_SUFFIX = ".pending"


class CheckpointError(UserError, RuntimeError):
    """No checkpoint of a folder can be loaded (each one's problem named)."""


class AtomicCheckpointer(Checkpointer):
    """``speechbrain.utils.checkpoints.Checkpointer`` with atomic saves.

    Same arguments and behaviour as the SpeechBrain class.

    Example
    -------
    >>> import torch
    >>> ckpt_dir = getfixture("tmp_path")
    >>> model = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(ckpt_dir, {"model": model})
    >>> saved = checkpointer.save_checkpoint()
    >>> sorted(p.name for p in saved.path.iterdir())
    ['CKPT.yaml', 'model.ckpt']
    """

    def remove_incomplete(self):
        """Deletes checkpoint folders whose save never completed (no
        ``CKPT.yaml``), logging each; main process only.

        Returns
        -------
        list
            The removed folders.
        """
        folder = pathlib.Path(self.checkpoints_dir)
        if not if_main_process() or not folder.is_dir():
            return []
        removed = []
        for path in sorted(folder.glob(f"{CKPT_PREFIX}+*")):
            if path.is_dir() and not (path / METAFNAME).is_file():
                shutil.rmtree(path, ignore_errors=True)
                logger.warning(
                    "Removed %s: a checkpoint save that never completed "
                    "(the run was killed while saving).",
                    path,
                )
                removed.append(path)
        return removed

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Loads the best checkpoint by the given key, or, if it is damaged,
        the next one in that order (with a warning naming the damaged one).

        Arguments
        ---------
        importance_key, max_key, min_key, ckpt_predicate
            As for ``Checkpointer.recover_if_possible``.

        Returns
        -------
        speechbrain.utils.checkpoints.Checkpoint or None
            The loaded checkpoint; None if there is none.

        Raises
        ------
        CheckpointError
            If checkpoints exist but none can be loaded.
        """
        candidates = self.find_checkpoints(
            importance_key, max_key, min_key, ckpt_predicate
        )
        problems = []
        for checkpoint in candidates:
            try:
                self._check_files(checkpoint)
                self.load_checkpoint(checkpoint)
            except Exception as err:
                damage = damaged_files(checkpoint)
                # Only damage falls back; anything else (a checkpoint of
                # other options or another backbone) is the user's to see.
                if not (
                    damage
                    or isinstance(
                        err, (CheckpointError, EOFError, pickle.UnpicklingError)
                    )
                ):
                    raise
                problems.append(f"{checkpoint.path}: {damage or err}")
                logger.warning(
                    "Skipping checkpoint %s, which cannot be loaded: %s",
                    checkpoint.path,
                    damage or err,
                )
                continue
            if problems:
                logger.warning(
                    "Loaded %s instead (%d damaged checkpoint(s) skipped).",
                    checkpoint.path,
                    len(problems),
                )
            return checkpoint
        if problems:
            raise CheckpointError(
                f"No checkpoint in {self.checkpoints_dir} can be loaded:\n  "
                + "\n  ".join(problems)
                + "\nDelete the damaged CKPT+ folders to start from the "
                "beginning, or restore their files."
            )
        logger.info("Would load a checkpoint here, but none found yet.")
        return None

    def _check_files(self, checkpoint):
        """A clear error for a recoverable whose file is missing."""
        for name in self.recoverables:
            path = checkpoint.paramfiles.get(name)
            optional = self.optional_recoverables.get(name, False)
            if (path is None or not pathlib.Path(path).is_file()) and not (
                optional or self.allow_partial_load
            ):
                raise CheckpointError(f"the file {name}.ckpt is missing")

    def _save_checkpoint_metafile(
        self, fpath, meta_to_include=None, end_of_epoch=True
    ):
        return super()._save_checkpoint_metafile(
            f"{fpath}{PENDING_SUFFIX}", meta_to_include or {}, end_of_epoch
        )

    def save_checkpoint(self, *args, **kwargs):
        """Saves a checkpoint; it becomes visible once complete.

        ``CKPT.yaml`` is written under a temporary name and renamed last,
        so a save killed half-way leaves no checkpoint that a recovery
        would load.

        Arguments
        ---------
        *args, **kwargs
            As for ``Checkpointer.save_checkpoint``.

        Returns
        -------
        speechbrain.utils.checkpoints.Checkpoint
            The saved checkpoint (``None`` on processes other than the main
            one, as SpeechBrain returns).
        """
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if if_main_process() and checkpoint is not None:
            meta = checkpoint.path / METAFNAME
            os.replace(f"{meta}{PENDING_SUFFIX}", meta)
        return checkpoint


def damaged_files(checkpoint):
    """Names the truncated torch files of a checkpoint (a zip archive that
    lost its end, as a save killed half-way leaves), or "" if none.

    Arguments
    ---------
    checkpoint : speechbrain.utils.checkpoints.Checkpoint
        The checkpoint.

    Returns
    -------
    str
    """
    names = []
    for path in checkpoint.paramfiles.values():
        path = pathlib.Path(path)
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        if zipped and not zipfile.is_zipfile(path):
            names.append(path.name)
    return f"truncated file(s) {names}" if names else ""


def keep_best_checkpoint(
    checkpointer, stats, select, num_to_keep=1, keep_last=0
):
    """Saves an end-of-epoch checkpoint with ``stats`` as its meta and keeps
    the latest one, the ``num_to_keep`` best by ``select`` (lower is better)
    and the ``keep_last`` newest end-of-epoch ones (for averaging)."""
    from speechbrain.utils.checkpoints import ckpt_recency
    from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast

    meta = {k: float(v) for k, v in stats.items() if k != "loss"}
    saved = checkpointer.save_checkpoint(meta=meta, end_of_epoch=True)
    ddp_barrier()  # every process then sees the saved checkpoint
    if saved is None:  # not the main process: its list comes below
        keep = set()
    else:
        keep = {saved.path}
        keep.update(
            c.path
            for c in checkpointer.find_checkpoints(
                min_key=select, max_num_checkpoints=num_to_keep
            )
        )
        if keep_last:
            keep.update(
                c.path
                for c in checkpointer.find_checkpoints(
                    ckpt_predicate=lambda c: c.meta.get("end-of-epoch", False),
                    max_num_checkpoints=keep_last,
                )
            )
    # One list for all processes: each deletion is a collective call
    # (SpeechBrain's main_process_only broadcasts), so the processes must
    # delete the same checkpoints or they wait on each other for ever.
    keep = ddp_broadcast(keep)
    checkpointer.delete_checkpoints(
        num_to_keep=0,
        importance_keys=[ckpt_recency],
        ckpt_predicate=lambda c: c.path not in keep,
    )
    return saved


def recover_best_checkpoint(checkpointer, select):
    """Loads the checkpoint with the lowest ``select`` value (falling back
    to the latest one, e.g. if only intra-epoch checkpoints exist)."""
    checkpoint = checkpointer.recover_if_possible(min_key=select)
    if checkpoint is None:
        checkpoint = checkpointer.recover_if_possible()
        if checkpoint is not None:
            logger.warning(
                "No checkpoint has a %s value; loaded the latest, %s",
                select,
                checkpoint.path,
            )
    return checkpoint


def average_last_checkpoints(checkpointer, count):
    """Loads the mean of the trainable tensors of the last ``count``
    end-of-epoch checkpoints (SpeechBrain's ``average_checkpoints``) into
    the PET encoder, the embedding model and the classifier.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The run's checkpointer (recoverables ``ssl_encoder``,
        ``embedding_model``, ``classifier``).
    count : int
        How many of the newest end-of-epoch checkpoints to average.

    Returns
    -------
    list
        The averaged checkpoints, newest first.

    Raises
    ------
    RecipeError
        If fewer than ``count`` end-of-epoch checkpoints were kept.
    """
    from speechbrain.utils.checkpoints import average_checkpoints

    chosen = checkpointer.find_checkpoints(
        ckpt_predicate=lambda c: c.meta.get("end-of-epoch", False)
    )[:count]
    if len(chosen) < count:
        raise RecipeError(
            f"average of {count} checkpoints asked, but "
            f"{checkpointer.checkpoints_dir} keeps {len(chosen)} end-of-epoch "
            "checkpoints: train with --ckpt_keep_last at least that large"
        )
    for name, module in checkpointer.recoverables.items():
        if name == "ssl_encoder":
            state = average_checkpoints(
                chosen,
                name,
                parameter_loader=lambda p, **_: torch.load(
                    p, map_location="cpu", weights_only=True
                )["state"],
            )
            module.load_pet_state_dict(state)
        elif name in ("embedding_model", "classifier"):
            state = average_checkpoints(
                chosen,
                name,
                parameter_loader=lambda p, **_: torch.load(
                    p, map_location="cpu"
                ),
            )
            module.load_state_dict(state)
    logger.info(
        "Averaged %d checkpoints: %s", count, [str(c.path) for c in chosen]
    )
    return chosen
