"""Data pipelines of the training recipe (random crops, speed perturbation
as extra classes) and the pre-flight checks of prepared CSVs.

Authors
 * speechbrain-unipet contributors 2026
"""

import os
import pathlib

import speechbrain as sb
import torch

from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.preparation import read_csv_rows
from speechbrain_unipet.training.hparams import training_speeds
from speechbrain_unipet.training.segments import (
    speed_perturbed,
    speed_perturbers,
    training_region,
)
from speechbrain_unipet.training.shard_data import ShardSegments
from speechbrain_unipet.utils.audio import (
    MIN_SAMPLE_RATE,
    audio_info,
    load_audio,
)


def audio_pipeline(hparams, random_chunk, speeds=(1.0,)):
    """Data pipeline reading one CSV row's segment at the encoder's rate.

    With ``random_chunk`` the segment's length is read from a random place
    of the row's region (``utt_start``/``utt_stop``), so training crops vary
    but never reach audio set aside for dev. With several ``speeds`` each
    segment is played at one of them, chosen uniformly (SpeechBrain's
    ``SpeedPerturb`` resampling): ``length * speed`` samples are read and
    resampled to ``length``; the speed's index is provided as
    ``speed_index``.
    """
    sample_rate = hparams["sample_rate"]
    perturbers = speed_perturbers(sample_rate, speeds)

    @sb.utils.data_pipeline.takes(
        "wav", "start", "stop", "utt_start", "utt_stop"
    )
    @sb.utils.data_pipeline.provides("sig", "speed_index")
    def pipeline(wav, start, stop, utt_start, utt_stop):
        """The (cropped, speed-perturbed) waveform of one CSV row."""
        length = int(stop) - int(start)
        start, stop, index = training_region(
            start, stop, utt_start, utt_stop, speeds, random_chunk
        )
        sig = load_audio(wav, sample_rate, start, stop)
        yield speed_perturbed(sig, perturbers[index], length)
        yield index

    return pipeline


def dataio_prep(hparams, shard_shuffle_buffer=0):
    """Train/dev datasets and the speaker label encoder (SpeechBrain style),
    after the pre-flight check of ``check_prepared_data``. With speed
    perturbation, training classes are ``speaker + speed_index *
    num_speakers`` (see ``num_classes``). With ``data_format: shards`` the
    training set reads the shards (``ShardSegments``, its shuffle buffer
    ``shard_shuffle_buffer``); dev reads the source files."""
    datasets, speakers = {}, set()
    for split, key in (
        ("train", "train_annotation"),
        ("dev", "valid_annotation"),
    ):
        rows = read_csv_rows(hparams[key])
        speakers |= {row["spk_id"] for row in rows}
        # From the rows, not DynamicItemDataset.from_csv: that one expands
        # "$name" in values and strips leading spaces, which breaks paths
        # and speaker names that contain them.
        datasets[split] = sb.dataio.dataset.DynamicItemDataset(
            {
                row["ID"]: {k: v for k, v in row.items() if k != "ID"}
                for row in rows
            }
        )
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    # Only the class depends on the speed: the label encoder, made from
    # the static spk_id, reads no audio.
    @sb.utils.data_pipeline.takes("spk_id", "speed_index")
    @sb.utils.data_pipeline.provides("spk_id_encoded")
    def label_pipeline(spk_id, speed_index):
        """The class of a speaker at a speed."""
        encoded = label_encoder.encode_sequence_torch([spk_id])
        return encoded + speed_index * len(label_encoder)

    for split, data in datasets.items():
        data.add_dynamic_item(
            audio_pipeline(
                hparams,
                hparams.get("random_chunk", True) and split == "train",
                training_speeds(hparams) if split == "train" else (1.0,),
            )
        )
        data.add_dynamic_item(label_pipeline)
        data.set_output_keys(["id", "sig", "spk_id_encoded"])
    label_path = pathlib.Path(hparams["save_folder"]) / "label_encoder.txt"
    label_encoder.load_or_create(
        path=str(label_path),
        from_didatasets=[datasets["train"]],
        output_key="spk_id",
    )
    check_labels(speakers, label_encoder, label_path)
    if hparams["data_format"] == "shards":
        world = (
            torch.distributed.get_world_size()
            if torch.distributed.is_initialized()
            else 1
        )
        datasets["train"] = ShardSegments(
            hparams["data_folder"],
            read_csv_rows(hparams["train_annotation"]),
            label_encoder,
            batch_size=hparams["batch_size"],
            sample_rate=hparams["sample_rate"],
            speeds=training_speeds(hparams),
            random_chunk=hparams.get("random_chunk", True),
            shuffle_buffer=shard_shuffle_buffer,
            seed=hparams["seed"],
            world_size=world,
        )
    return datasets["train"], datasets["dev"], label_encoder


def check_prepared_data(hparams, inspect_audio=False):
    """Pre-flight check of the training CSVs, before any training step.

    Every row has a positive segment inside its region and a usable sample
    rate; every audio file exists (and, with ``inspect_audio``, e.g. for
    CSVs not written by this run's preparation, opens and is long enough),
    and every dev speaker has training data. Errors name the CSV, the row or
    file, and the fix.
    """
    rows = {}
    for key in ("train_annotation", "valid_annotation"):
        rows[key] = read_csv_rows(hparams[key])
    train_speakers = {r["spk_id"] for r in rows["train_annotation"]}
    for row in rows["valid_annotation"]:
        if row["spk_id"] not in train_speakers:
            raise DataPreparationError(
                f"Dev speaker '{row['spk_id']}' of {hparams['valid_annotation']}"
                f" (row {row['ID']}) has no training data in "
                f"{hparams['train_annotation']}: the classifier cannot know "
                "it. Dev rows must come from training speakers."
            )
    checked = {}
    for key, table in rows.items():
        for row in table:
            where = f"{hparams[key]}, row {row['ID']}"
            try:
                start, stop = int(row["start"]), int(row["stop"])
                first, last = int(row["utt_start"]), int(row["utt_stop"])
                rate = int(row["sample_rate"])
            except ValueError as err:
                raise DataPreparationError(f"{where}: {err}") from err
            if not first <= start < stop <= last:
                raise DataPreparationError(
                    f"{where}: needs utt_start <= start < stop <= utt_stop"
                )
            if rate < MIN_SAMPLE_RATE:
                raise DataPreparationError(
                    f"{where}: sample_rate {rate} Hz is below "
                    f"{MIN_SAMPLE_RATE} Hz"
                )
            path = row["wav"]
            if path not in checked and not os.path.isfile(path):
                raise DataPreparationError(
                    f"{where}: audio file '{path}' does not exist"
                )
            checked[path] = max(checked.get(path, 0), last)
    if inspect_audio:
        for path, last in checked.items():
            info = audio_info(path)
            if info.frames < last:
                raise DataPreparationError(
                    f"'{path}' has {info.frames} samples, but the CSVs read "
                    f"up to sample {last}"
                )
    return {k: len(v) for k, v in rows.items()}


def check_labels(speakers, label_encoder, label_path):
    """The label encoder's classes must be exactly the ``speakers`` of the
    training and dev CSVs (dev speakers are training speakers)."""
    unknown = sorted(set(speakers) - set(label_encoder.lab2ind))
    if unknown or len(label_encoder) != len(speakers):
        raise DataPreparationError(
            f"{label_path} has {len(label_encoder)} classes but the data "
            f"{len(speakers)} speakers"
            + (f", e.g. '{unknown[0]}' is not one of them" if unknown else "")
            + " (left by an earlier run on other data?). Delete that file or "
            "use a new output_folder."
        )
    label_encoder.expect_len(len(speakers))
