"""A SpeechBrain ``Checkpointer`` whose checkpoints appear atomically.

SpeechBrain writes ``CKPT.yaml`` (the file that makes a folder count as a
checkpoint) *before* the parameter files, so a run killed while saving
(SIGKILL, OOM-killer, pre-emption) leaves a newest "checkpoint" with
truncated files, and resuming fails with ``EOFError``. Here the meta file is
written under a temporary name and renamed into place only after every
parameter file is on disk; an interrupted save is simply not a checkpoint.

Authors
 * speechbrain-unipet contributors 2026
"""

import os

from speechbrain.utils.checkpoints import METAFNAME, Checkpointer
from speechbrain.utils.distributed import if_main_process

PENDING_SUFFIX = ".pending"


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
