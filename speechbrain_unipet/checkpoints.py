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

from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

PENDING_SUFFIX = ".pending"


class CheckpointError(RuntimeError):
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
