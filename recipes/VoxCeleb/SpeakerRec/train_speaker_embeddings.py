#!/usr/bin/env python3
"""Speaker embeddings from a parameter-efficiently tuned SSL encoder.

PETEncoder (WavLM / HuBERT / wav2vec 2.0 / data2vec-audio + a PET method)
-> speaker back-end (``backend``: ECAPA-TDNN on the layer-weighted sum, or
MHFA / CA-MHFA / layer-adapter MFA on all hidden states) -> AAM-softmax with
a margin schedule, optional speed perturbation, on VoxCeleb or on any
speaker data (``data_format``: voxceleb, speaker_folders, csv, kaldi).

To run (from this folder):
> python train_speaker_embeddings.py hparams/unipet.yaml --data_folder=/data/voxceleb1 \
      --verification_file=/data/voxceleb1/meta/veri_test2.txt \
      --ssl_hub=microsoft/wavlm-base-plus
Own speakers (trials generated over held-out speakers), adapting a model
exported by ``python -m speechbrain_unipet.export``:
> python train_speaker_embeddings.py hparams/unipet.yaml --data_folder=/data/my_speakers \
      --init_from=exported_model/ --ssl_hub=microsoft/wavlm-base-plus
Large-margin fine-tuning, a second stage from a finished run (README):
> python train_speaker_embeddings.py hparams/unipet.yaml --data_folder=/data/voxceleb1 \
      --init_from=results/unipet/1986 --output_folder=results/unipet/1986-lmft \
      --sentence_len=6.0 --margin=0.5 --speed_perturb=False --lr=0.0001 \
      --lr_pet=0.0005 --number_of_epochs=3
A 'finetune' stage may start from a 'frozen', 'bitfit' or 'lora' run (LoRA
merged into the weights; ``speechbrain_unipet.training.warm_start.INIT_CHAINS``):
> python train_speaker_embeddings.py hparams/finetune.yaml --data_folder=/data/voxceleb1 \
      --init_from=results/lora/1986 --output_folder=results/lora/1986-ft
Multi-GPU / multi-node:
> torchrun --nproc_per_node=4 train_speaker_embeddings.py hparams/unipet.yaml ...

Re-running the same command resumes from the last checkpoint (intra-epoch
checkpoints every ``ckpt_interval_minutes``). Checkpoints hold only the
trainable tensors, never the frozen backbone.

Authors
 * speechbrain-unipet contributors 2026
"""

import csv
import pathlib
import sys

# First: it silences a SpeechBrain import-time notice nobody can act on.
import speechbrain_unipet  # noqa: F401  # isort: skip
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger
from torch.nn.parallel import DistributedDataParallel as DDP

from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.preparation import (
    check_rerun,
    preparation_options,
    prepare_speaker_data,
)
from speechbrain_unipet.lobes.embedding import speaker_embeddings
from speechbrain_unipet.training.backends import build_backend, num_classes
from speechbrain_unipet.training.checkpoints import keep_best_checkpoint
from speechbrain_unipet.training.hparams import load_recipe_hparams
from speechbrain_unipet.training.pipelines import (
    check_prepared_data,
    dataio_prep,
)
from speechbrain_unipet.training.runs import compute_embedding, same_folder
from speechbrain_unipet.training.schedules import training_progress
from speechbrain_unipet.training.validator import verification_validator
from speechbrain_unipet.training.warm_start import check_init_from, init_from
from speechbrain_unipet.utils.distributed import (
    finish_distributed,
    replica_difference,
)
from speechbrain_unipet.utils.errors import UserError

logger = get_logger(__name__)


class SpeakerBrain(sb.core.Brain):
    """Speaker-ID training of the PET encoder + speaker back-end, with
    the EER of held-out speakers measured at every validation."""

    validator = None

    def compute_forward(self, batch, stage):
        """Speaker logits of a batch, through the shared embedding path;
        UniPET gate values are summed for the stage mean."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.wav_augment is not None:
            wavs, lens = self.hparams.wav_augment(wavs, lens)
        embeddings, gates = speaker_embeddings(
            self.modules.ssl_encoder,
            self.modules.mean_var_norm,
            self.modules.embedding_model,
            wavs,
            lens,
            check_rows=False,  # a silent dev crop must not end the run
        )
        for branch, values in gates.items():
            total, count = self.gate_sums.get(branch, (0.0, 0))
            per_utterance = values.float().mean(dim=1)
            self.gate_sums[branch] = (
                total + float(per_utterance.sum()),
                count + len(per_utterance),
            )
        return self.modules.classifier(embeddings), lens

    def verification_stats(self):
        """EER/minDCF of the held-out validation trials (empty if none)."""
        if self.validator is None:
            return {}
        with self.evaluation_ctx:
            return self.validator.evaluate(
                lambda wavs, lens: compute_embedding(self.modules, wavs, lens),
                self.device,
            )

    def compute_objectives(self, predictions, batch, stage):
        """AAM-softmax loss (and the speaker-ID error outside training)."""
        predictions, lens = predictions
        spkid, _ = batch.spk_id_encoded
        if stage != sb.Stage.TRAIN:
            # Dev audio is not speed-perturbed: its classes are the
            # speakers' own (the first block of classes).
            predictions = predictions[..., : self.num_speakers]
        if stage == sb.Stage.TRAIN and self.hparams.wav_augment is not None:
            spkid = self.hparams.wav_augment.replicate_labels(spkid)
        loss = self.hparams.compute_cost(predictions, spkid, lens)
        if stage != sb.Stage.TRAIN:
            self.error_metrics.append(batch.id, predictions, spkid, lens)
        return loss

    def init_optimizers(self):
        """One optimiser per parameter group (pet_opt_class, opt_class)."""
        pet = [
            p for p in self.modules.ssl_encoder.parameters() if p.requires_grad
        ]
        backend = [
            p
            for name in ("embedding_model", "classifier")
            for p in self.modules[name].parameters()
            if p.requires_grad
        ]
        self.optimizers_dict = {"backend": self.hparams.opt_class(backend)}
        if pet:
            self.optimizers_dict["pet"] = self.hparams.pet_opt_class(pet)
        self.optimizer = self.optimizers_dict["backend"]
        self.base_lrs = {
            k: opt.param_groups[0]["lr"]
            for k, opt in self.optimizers_dict.items()
        }
        if self.checkpointer is not None:
            for key, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(f"optimizer_{key}", opt)

    def _wrap_distributed(self):
        # SyncBatchNorm (which Brain always inserts) only runs on GPUs; on
        # CPU (gloo) the back-end keeps per-process BatchNorm statistics.
        if self.distributed_launch and self.device == "cpu":
            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = DDP(
                        module,
                        device_ids=None,
                        find_unused_parameters=self.find_unused_parameters,
                    )
            return
        super()._wrap_distributed()

    def on_fit_batch_start(self, batch, should_step):
        """Sets this step's AAM margin (``margin_scheduler``) and learning
        rates (``lr_annealing``: a factor on both base rates), as WeSpeaker
        does before each batch: ``progress`` is its ``cur_iter /
        epoch_iter`` (``self.step`` already counts this batch)."""
        progress = training_progress(
            self.current_epoch, self.step, self.steps_per_epoch
        )
        self.margin = self.hparams.margin_scheduler(progress)
        self.lr_factor = self.hparams.lr_annealing(
            progress, self.steps_per_epoch
        )
        for key, opt in self.optimizers_dict.items():
            # Not sb's update_learning_rate: it logs every change (each step).
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[key] * self.lr_factor

    def on_stage_start(self, stage, epoch=None):
        """Fresh error and gate statistics for the stage; shards: the
        epoch's order, and the batches a resumed epoch already trained."""
        self.gate_sums = {}
        if stage == sb.Stage.TRAIN:
            self.current_epoch = epoch
            if getattr(self, "shard_data", None) is not None:
                self.shard_data.epoch = epoch
                self.shard_data.skip_batches = self.step
                if self.step:
                    logger.info(
                        "Epoch %s resumes after %d of its %d batches: the "
                        "shards' reader skips them (none is trained twice)",
                        epoch,
                        self.step,
                        self.steps_per_epoch,
                    )
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage (loss, error, EER/minDCF, mean UniPET gates),
        anneals the learning rates and keeps the best checkpoints."""
        stats = {"loss": stage_loss}
        stats.update(
            {
                f"gate_{branch}": round(total / count, 3)
                for branch, (total, count) in self.gate_sums.items()
                if count
            }
        )
        if stage == sb.Stage.TRAIN:
            if getattr(self, "margin", None) is not None:
                stats["margin"] = round(self.margin, 4)
            self.train_stats = stats
            if self.distributed_launch:
                # Every process must still hold the same weights (one small
                # all-gather an epoch); a drift means a broken setup.
                drift = replica_difference(self.modules)
                report = logger.info if drift <= 1e-6 else logger.warning
                report(
                    "Epoch %s: the trainable weights of the %d processes "
                    "differ by at most %.3g (relative)%s",
                    epoch,
                    torch.distributed.get_world_size(),
                    drift,
                    "" if drift <= 1e-6 else ": the replicas drifted apart",
                )
            return
        stats["ErrorRate"] = self.error_metrics.summarize("average")
        stats.update(self.verification_stats())
        if stage == sb.Stage.VALID:
            # The rates of the epoch's last step (of its end if resumed
            # after it).
            factor = getattr(self, "lr_factor", None)
            if factor is None:
                factor = self.hparams.lr_annealing(epoch, self.steps_per_epoch)
            lrs = {
                f"lr_{key}": self.base_lrs[key] * factor
                for key in self.optimizers_dict
            }
            for train_logger in self.train_loggers:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, **lrs},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
            keep_best_checkpoint(
                self.checkpointer,
                stats,
                self.hparams.ckpt_select,
                self.hparams.ckpt_keep_best,
                self.hparams.ckpt_keep_last,
            )


def train_loggers(hparams):
    """SpeechBrain's text log, plus TensorBoard (main process) when asked."""
    loggers = [hparams["train_logger"]]
    if hparams.get("use_tensorboard"):
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            sys.exit(
                "ERROR: use_tensorboard needs the tensorboard package: "
                "pip install tensorboard"
            )
        from speechbrain.utils.train_logger import TensorboardLogger

        if if_main_process():
            loggers.append(TensorboardLogger(hparams["tensorboard_folder"]))
    return loggers


def write_audio_csv(folder, csv_path):
    """CSV (ID, duration, wav, wav_format, wav_opts) of a folder's audio."""
    import soundfile as sf

    rows = []
    for path in sorted(pathlib.Path(folder).rglob("*")):
        if path.suffix.lower() in (".wav", ".flac"):
            info = sf.info(path)
            rows.append(
                [path.stem, info.duration, str(path), path.suffix[1:], ""]
            )
    if not rows:
        raise DataPreparationError(f"No .wav/.flac files under '{folder}'")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        writer.writerows(rows)


def build_augmenter(hparams):
    """Noise / reverberation augmentation from local folders, or None."""
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    augmentations = []
    save = pathlib.Path(hparams["save_folder"])
    rate = hparams["sample_rate"]
    if hparams.get("noise_folder"):
        run_on_main(
            write_audio_csv, args=[hparams["noise_folder"], save / "noise.csv"]
        )
        augmentations.append(
            AddNoise(
                csv_file=str(save / "noise.csv"),
                snr_low=hparams["noise_snr_low"],
                snr_high=hparams["noise_snr_high"],
                noise_sample_rate=rate,
                clean_sample_rate=rate,
                num_workers=0,
            )
        )
    if hparams.get("rir_folder"):
        run_on_main(
            write_audio_csv, args=[hparams["rir_folder"], save / "rir.csv"]
        )
        augmentations.append(
            AddReverb(
                csv_file=str(save / "rir.csv"),
                reverb_sample_rate=rate,
                clean_sample_rate=rate,
            )
        )
    if not augmentations:
        return None
    return Augmenter(
        parallel_augment=True,
        concat_original=True,
        min_augmentations=len(augmentations),
        max_augmentations=len(augmentations),
        augment_prob=1.0,
        augmentations=augmentations,
    )


def main(argv):
    """Prepares the data, builds the model and trains it (see the module
    docstring)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        hparams, overrides = load_recipe_hparams(hparams_file, overrides)
    except ValueError as err:  # bad key, method or option: no traceback
        sys.exit(f"ERROR: {err}")
    if hparams["backend"] not in hparams["backends"]:
        sys.exit(
            f"ERROR: --backend={hparams['backend']} is not one of the yaml's "
            f"backends: {sorted(hparams['backends'])}"
        )
    if hparams["init_from"] and same_folder(
        hparams["init_from"], hparams["output_folder"]
    ):
        # Checked first: a resumed run skips init_from, and would otherwise
        # quietly train on instead of saying the command is wrong.
        sys.exit(
            f"ERROR: init_from '{hparams['init_from']}' is this run's own "
            "output_folder: give the second stage another --output_folder"
        )
    # Before the data preparation: an init_from that cannot start this run
    # (another method that does not carry into this one) fails in seconds.
    if hparams["init_from"] and not hparams["checkpointer"].find_checkpoints():
        check_init_from(hparams, hparams["init_from"])

    prep = {
        "data_folder": hparams["data_folder"],
        "data_format": hparams["data_format"],
        "verification_file": hparams["verification_file"],
        "num_test_speakers": hparams["num_test_speakers"],
        "num_valid_speakers": hparams["num_valid_speakers"],
        "test_segment_len": hparams["test_segment_len"],
        "trial_utts_per_speaker": hparams["trial_utts_per_speaker"],
        "split_ratio": hparams["split_ratio"],
        "seg_dur": hparams["sentence_len"],
        "amp_th": hparams["amp_th"],
        "seed": hparams["seed"],
        "combine_min_seconds": hparams["combine_min_seconds"],
    }
    # Before anything is written: a re-run on other data must not reuse
    # (or damage) checkpoints trained on the old data.
    run_on_main(
        check_rerun,
        args=[hparams["save_folder"], preparation_options(**prep)],
        kwargs={"overwrite_prep": hparams["overwrite_prep"]},
    )
    # Then the experiment folder, so that the preparation's messages reach
    # log.txt and the screen.
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    run_on_main(
        prepare_speaker_data,
        kwargs={
            **prep,
            "save_folder": hparams["save_folder"],
            "sample_rate": hparams["sample_rate"],
            "num_workers": hparams["prep_workers"],
            "skip_prep": hparams["skip_prep"],
            "combine_folder": hparams["combine_folder"],
        },
    )
    # Pre-flight: everything a user can get wrong fails here, in seconds.
    run_on_main(
        check_prepared_data,
        args=[hparams],
        kwargs={"inspect_audio": hparams["skip_prep"]},
    )
    if hparams["prepare_only"]:
        # Lists checked, short utterances combined, trials written: the
        # same command without it finds the preparation done.
        logger.info(
            "Data prepared in %s; no training (prepare_only)",
            hparams["save_folder"],
        )
        finish_distributed()
        return
    validator = verification_validator(hparams)
    hparams["wav_augment"] = build_augmenter(hparams)
    train_data, valid_data, label_encoder = dataio_prep(
        hparams, shard_shuffle_buffer=hparams["shard_shuffle_buffer"]
    )
    logger.info(
        "Training on %d segments of %s (%s %.1f s crops), validating on %d "
        "segments of %s",
        len(train_data),
        hparams["train_annotation"],
        "random" if hparams["random_chunk"] else "fixed",
        hparams["sentence_len"],
        len(valid_data),
        hparams["valid_annotation"],
    )
    build_backend(hparams, len(label_encoder))
    if hparams["speed_perturb"]:
        logger.info(
            "Speed perturbation at speeds %s: %d classes for %d speakers",
            hparams["speeds"],
            num_classes(hparams, len(label_encoder)),
            len(label_encoder),
        )
    # Not on a resumed run: its checkpoint replaces these weights anyway
    # (and the earlier run may be gone by then).
    if hparams["init_from"] and not hparams["checkpointer"].find_checkpoints():
        init_from(
            hparams,
            hparams["init_from"],
            hparams["init_average_last"],
            classifier=hparams["init_classifier"],
        )
    trainable, total = hparams["ssl_encoder"].count_parameters()
    logger.info(
        "PET method '%s': %s of %s encoder parameters train (%.2f %%)",
        hparams["pet_method"],
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )

    loggers = train_loggers(hparams)
    brain = SpeakerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_loggers = loggers
    brain.validator = validator
    # Only training removes folders of saves that never completed (a
    # verification or export running beside it must not).
    run_on_main(hparams["checkpointer"].remove_incomplete)
    # Batches per epoch and process (drop_last): the schedules' step, as
    # WeSpeaker's epoch_iter (samples // world_size // batch_size).
    world = (
        torch.distributed.get_world_size()
        if torch.distributed.is_initialized()
        else 1
    )
    brain.num_speakers = len(label_encoder)
    train_loader_kwargs = hparams["dataloader_options"]
    brain.shard_data = None
    if isinstance(train_data, torch.utils.data.IterableDataset):
        # Shards: the dataset orders, splits and sizes the epoch itself.
        brain.shard_data = train_data
        brain.steps_per_epoch = train_data.steps
        train_loader_kwargs = {
            **{
                k: v
                for k, v in train_loader_kwargs.items()
                if k not in ("shuffle", "sampler")
            },
            "collate_fn": sb.dataio.batch.PaddedBatch,
        }
    else:
        per_process = -(-len(train_data) // world)  # DistributedSampler pads
        if hparams["dataloader_options"].get("drop_last", False):
            brain.steps_per_epoch = per_process // hparams["batch_size"]
        else:
            brain.steps_per_epoch = -(-per_process // hparams["batch_size"])
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_loader_kwargs,
        valid_loader_kwargs={
            **hparams["dataloader_options"],
            "shuffle": False,
            "drop_last": False,
        },
    )
    finish_distributed()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (UserError, FileNotFoundError) as err:
        sys.exit(f"ERROR: {err}")
