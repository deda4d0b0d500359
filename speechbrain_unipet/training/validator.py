"""The validation stage of the training recipe: the EER (and minDCF) of the
held-out trial list, the metric checkpoints are selected by.

Authors
 * speechbrain-unipet contributors 2026
"""

import pathlib

import torch
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.preparation import VALID_TRIALS_FILE, read_csv_rows
from speechbrain_unipet.data.trials import read_trials
from speechbrain_unipet.lobes.embedding import InvalidAudioError
from speechbrain_unipet.scoring.cosine import score_trials
from speechbrain_unipet.scoring.metrics import eer, min_dcf
from speechbrain_unipet.training.hparams import RecipeError
from speechbrain_unipet.utils.audio import load_audio

logger = get_logger(__name__)


class VerificationValidator:
    """EER and minDCF of held-out trials, measured at every validation.

    The utterances (``valid_verif.csv``, all ``test_segment_len`` long, so a
    batch holds no padding) are decoded once and kept in memory; each
    validation embeds them in batches, split across DDP processes and
    gathered, and scores the trials by cosine.

    Arguments
    ---------
    csv_path : str
        Prepared CSV of the trial utterances.
    trials_path : str
        Their trial list (``label enrol test``).
    sample_rate : int
        The encoder's rate.
    batch_size : int
        Utterances per forward pass.

    Example
    -------
    >>> from speechbrain_unipet.data.preparation import CSV_HEADER
    >>> import soundfile as sf, numpy as np
    >>> root = getfixture("tmp_path")
    >>> rows = []
    >>> for i, spk in enumerate("aabb"):
    ...     sf.write(
    ...         root / f"{i}.wav", np.ones(800, np.float32) * (i + 1), 8000
    ...     )
    ...     rows.append(f"u{i},0.1,{root}/{i}.wav,0,800,{spk},8000,0,800")
    >>> _ = (root / "v.csv").write_text(
    ...     ",".join(CSV_HEADER) + "\\n" + "\\n".join(rows) + "\\n"
    ... )
    >>> _ = (root / "t.txt").write_text(
    ...     "1 u0 u1\\n0 u0 u2\\n1 u2 u3\\n0 u1 u3\\n"
    ... )
    >>> val = VerificationValidator(root / "v.csv", root / "t.txt", 8000, 2)
    >>> embed = lambda wavs, lens: wavs[:, None, :2] * torch.tensor([1.0, 0.5])
    >>> val.evaluate(embed, "cpu")["EER"]
    0.5
    """

    def __init__(self, csv_path, trials_path, sample_rate, batch_size):
        self.rows = {r["ID"]: r for r in read_csv_rows(csv_path)}
        self.trials = read_trials(trials_path)
        missing = {t.enrol for t in self.trials} | {t.test for t in self.trials}
        missing -= set(self.rows)
        if missing:
            raise RecipeError(
                f"{trials_path} names utterances that {csv_path} lacks, e.g. "
                f"'{sorted(missing)[0]}': run the data preparation again"
            )
        labels = {t.label for t in self.trials}
        if labels != {0, 1}:
            raise RecipeError(
                f"{trials_path} needs target and non-target trials"
            )
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self._audio = {}
        self.skipped = set()

    def _skip(self, problems):
        """Leaves segments that cannot be embedded out of the trials (once
        logged, naming each)."""
        for uid, why in problems.items():
            if uid not in self.skipped:
                self.skipped.add(uid)
                logger.warning(
                    "EER validation leaves out %s (%s): %s",
                    uid,
                    self.rows[uid]["wav"],
                    why,
                )

    def _signal(self, uid):
        if uid not in self._audio:
            row = self.rows[uid]
            self._audio[uid] = load_audio(
                row["wav"],
                self.sample_rate,
                int(row["start"]),
                int(row["stop"]),
            )
        return self._audio[uid]

    def evaluate(self, embed, device):
        """Embeds the utterances with ``embed(wavs, lens)`` (-> [B, 1, D])
        and returns ``{"EER": ..., "minDCF": ...}`` (fractions, minDCF at
        p_target 0.01)."""
        from speechbrain.utils.data_utils import batch_pad_right

        ids = sorted(self.rows)
        rank, world = 0, 1
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            rank = torch.distributed.get_rank()
            world = torch.distributed.get_world_size()
        mine = ids[rank::world]
        embeddings = {}
        for i in range(0, len(mine), self.batch_size):
            chunk = mine[i : i + self.batch_size]
            wavs, lens = batch_pad_right([self._signal(u) for u in chunk])
            try:
                out = embed(wavs.to(device), lens.to(device))
            except InvalidAudioError as err:
                self._skip({chunk[r]: why for r, why in err.problems.items()})
                out = err.embeddings
                if out is None:
                    continue
            for uid, emb in zip(chunk, out, strict=True):
                if uid not in self.skipped:
                    embeddings[uid] = emb.reshape(-1).float().cpu()
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, embeddings)
            for part in gathered:
                embeddings.update(part)
        trials = [
            t
            for t in self.trials
            if t.enrol in embeddings and t.test in embeddings
        ]
        if {t.label for t in trials} != {0, 1}:
            return {}
        scores = score_trials(trials, embeddings)
        labels = torch.tensor([t.label for t in trials], dtype=torch.bool)
        pos, neg = scores[labels], scores[~labels]
        return {
            "EER": eer(pos, neg)[0],
            "minDCF": min_dcf(pos, neg, p_target=0.01)[0],
        }


def verification_validator(hparams):
    """The run's ``VerificationValidator``, or None if it has no
    validation speakers (``num_valid_speakers: 0``).

    Raises
    ------
    RecipeError
        If checkpoints are to be selected by EER without validation
        speakers.
    """
    save = pathlib.Path(hparams["save_folder"])
    select = hparams.get("ckpt_select", "ErrorRate")
    if select not in ("EER", "minDCF", "ErrorRate"):
        raise RecipeError(
            f"ckpt_select must be EER, minDCF or ErrorRate, got {select!r}"
        )
    # null (the default): as many as the data allows, at least 2.
    if hparams.get("num_valid_speakers", 0) == 0:
        if select != "ErrorRate":
            raise RecipeError(
                f"ckpt_select: {select} needs validation speakers: set "
                "num_valid_speakers > 0, or ckpt_select: ErrorRate to select "
                "checkpoints by speaker-ID error"
            )
        return None
    return VerificationValidator(
        save / "valid_verif.csv",
        save / VALID_TRIALS_FILE,
        hparams["sample_rate"],
        hparams["batch_size"],
    )
