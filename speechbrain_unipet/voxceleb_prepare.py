"""VoxCeleb-layout data preparation for speaker-embedding training.

Same approach and CSV format as SpeechBrain's recipe ``voxceleb_prepare.py``
(which is not installable): ``<data_folder>/wav/<spk>/<video>/<utt>.wav``
becomes fixed-length training segments ``ID,duration,wav,start,stop,spk_id``
(``start``/``stop`` in samples, ``duration`` of the whole file). Differences
that matter:

* every speaker of the verification list (enrol *and* test side) is removed
  from training (SpeechBrain only removes the enrol side);
* bad audio never crashes training: unreadable or empty files, and files
  shorter than one segment, are skipped with a logged count; a wrong sample
  rate is an error naming the file; a trial naming an absent file is an
  error naming the trial list and the file, before any training time is
  spent;
* ``.flac`` files are accepted next to ``.wav``.

Authors
 * speechbrain-unipet contributors 2026
"""

import csv
import json
import os
import pathlib
import random

import numpy as np
import soundfile as sf
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.scoring import read_trials

logger = get_logger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac")
CSV_HEADER = ["ID", "duration", "wav", "start", "stop", "spk_id"]
OPTIONS_FILE = "prepare_options.json"


class DataPreparationError(ValueError):
    """Raised for data that cannot be used, with the file and the fix."""


def list_audio(data_folder):
    """Maps utterance id ``spk/video/utt`` -> audio path under ``wav/``."""
    root = pathlib.Path(data_folder) / "wav"
    if not root.is_dir():
        raise DataPreparationError(
            f"'{root}' does not exist. data_folder must hold the VoxCeleb "
            "layout wav/<speaker>/<video>/<utterance>.wav"
        )
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS:
                path = pathlib.Path(dirpath) / name
                rel = path.relative_to(root).with_suffix("").as_posix()
                if rel.count("/") != 2:
                    continue  # not <spk>/<video>/<utt>
                found[rel] = str(path)
    if not found:
        raise DataPreparationError(
            f"No .wav/.flac files in the VoxCeleb layout under '{root}' "
            "(expected wav/<speaker>/<video>/<utterance>.wav)"
        )
    return found


def trial_audio(trials, audio, trials_file, data_folder):
    """Audio path of every utterance of ``trials`` (id -> path).

    Raises a ``DataPreparationError`` naming the trial list and an absent
    file if any trial utterance is missing.
    """
    needed = sorted({t.enrol for t in trials} | {t.test for t in trials})
    missing = [u for u in needed if u not in audio]
    if missing:
        raise DataPreparationError(
            f"{len(missing)} utterance(s) of the trial list '{trials_file}' "
            f"are not under {data_folder}/wav, e.g. '{missing[0]}'. Check "
            "data_folder and verification_file."
        )
    return {u: audio[u] for u in needed}


def check_audio(path, sample_rate):
    """``sf.info`` of ``path``; errors name the file."""
    try:
        info = sf.info(path)
    except Exception as err:  # noqa: BLE001 -- soundfile raises many types
        raise DataPreparationError(
            f"Cannot read audio '{path}': {err}"
        ) from err
    if info.samplerate != sample_rate:
        raise DataPreparationError(
            f"'{path}' is sampled at {info.samplerate} Hz; the SSL encoders "
            f"expect {sample_rate} Hz. Resample the data (e.g. sox in.wav -r "
            f"{sample_rate} out.wav)."
        )
    return info


def prepare_voxceleb(
    data_folder,
    save_folder,
    verification_pairs_file,
    splits=("train", "dev", "test"),
    split_ratio=(90, 10),
    seg_dur=3.0,
    amp_th=5e-4,
    sample_rate=16000,
    seed=1234,
    skip_prep=False,
):
    """Writes ``train.csv``, ``dev.csv`` and ``test.csv`` to ``save_folder``.

    Arguments
    ---------
    data_folder : str
        Folder with ``wav/<spk>/<video>/<utt>.wav`` (a comma-separated list
        of folders combines VoxCeleb1 and 2).
    save_folder : str
        Where the CSVs go.
    verification_pairs_file : str
        VoxCeleb trial list (``label enrol test``, paths relative to
        ``wav/``); its speakers are excluded from train/dev.
    splits : sequence
        Which of ``train``, ``dev``, ``test`` to write.
    split_ratio : sequence
        Utterance-level train/dev percentages (dev measures speaker-ID
        error, not verification).
    seg_dur : float
        Training segment length in seconds.
    amp_th : float
        Segments with mean absolute amplitude below this are dropped.
    sample_rate : int
        Required sample rate.
    seed : int
        Seed of the train/dev split.
    skip_prep : bool
        Do nothing (the CSVs must exist already).

    Returns
    -------
    dict
        Counts of what was written and skipped.
    """
    save = pathlib.Path(save_folder)
    if skip_prep:
        return {}
    options = {
        "data_folder": str(data_folder),
        "verification_pairs_file": str(verification_pairs_file),
        "splits": list(splits),
        "split_ratio": list(split_ratio),
        "seg_dur": seg_dur,
        "amp_th": amp_th,
        "sample_rate": sample_rate,
        "seed": seed,
    }
    done = save / OPTIONS_FILE
    if done.is_file() and all((save / f"{s}.csv").is_file() for s in splits):
        with open(done, encoding="utf-8") as f:
            if json.load(f) == options:
                logger.info("Data preparation already done in %s", save)
                return {}
    save.mkdir(parents=True, exist_ok=True)

    audio = {}
    for folder in str(data_folder).split(","):
        audio.update(list_audio(folder.strip()))
    trials = read_trials(verification_pairs_file)
    test_ids = sorted(
        trial_audio(trials, audio, verification_pairs_file, data_folder)
    )
    test_speakers = {u.split("/")[0] for u in test_ids}
    train_ids = sorted(u for u in audio if u.split("/")[0] not in test_speakers)
    if ("train" in splits or "dev" in splits) and not train_ids:
        raise DataPreparationError(
            f"Every speaker under {data_folder}/wav appears in the trial "
            "list: no training data is left."
        )
    rng = random.Random(seed)
    rng.shuffle(train_ids)
    n_train = int(round(len(train_ids) * split_ratio[0] / sum(split_ratio)))
    if len(train_ids) > 1:
        n_train = min(max(n_train, 1), len(train_ids) - 1)
    parts = {"train": train_ids[:n_train], "dev": train_ids[n_train:]}
    stats = {}
    for split in splits:
        if split == "test":
            rows, skipped = _whole_file_rows(test_ids, audio, sample_rate)
        else:
            rows, skipped = _segment_rows(
                parts[split], audio, seg_dur, amp_th, sample_rate
            )
        if not rows:
            raise DataPreparationError(
                f"No usable audio for the '{split}' split ({skipped} files "
                f"skipped). Check the data under {data_folder}."
            )
        _write_csv(save / f"{split}.csv", rows)
        stats[split] = {"rows": len(rows), "skipped_files": skipped}
        if skipped:
            logger.warning(
                "%s: skipped %d unreadable, empty or too short file(s)",
                split,
                skipped,
            )
    with open(done, "w", encoding="utf-8") as f:
        json.dump(options, f)
    logger.info("Data preparation: %s", stats)
    return stats


def _read(path):
    try:
        signal, _ = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001
        logger.warning("Skipping unreadable audio %s: %s", path, err)
        return None
    return signal[:, 0]


def _segment_rows(ids, audio, seg_dur, amp_th, sample_rate):
    rows, skipped = [], 0
    seg = int(round(seg_dur * sample_rate))
    for utt in ids:
        check_audio(audio[utt], sample_rate)
        signal = _read(audio[utt])
        if signal is None or len(signal) < seg:
            skipped += 1
            continue
        duration = len(signal) / sample_rate
        spk = utt.split("/")[0]
        for start in range(0, len(signal) - seg + 1, seg):
            chunk = signal[start : start + seg]
            if np.mean(np.abs(chunk)) < amp_th:
                continue
            uid = f"{utt.replace('/', '--')}_{start}_{start + seg}"
            rows.append(
                [uid, f"{duration:.3f}", audio[utt], start, start + seg, spk]
            )
    return rows, skipped


def _whole_file_rows(ids, audio, sample_rate):
    rows = []
    for utt in ids:
        info = check_audio(audio[utt], sample_rate)
        if info.frames == 0:
            raise DataPreparationError(
                f"Trial audio '{audio[utt]}' is empty; remove its trials."
            )
        rows.append(
            [
                utt,
                f"{info.frames / sample_rate:.3f}",
                audio[utt],
                0,
                info.frames,
                utt.split("/")[0],
            ]
        )
    return rows, 0


def _write_csv(path, rows):
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    os.replace(tmp, path)
