"""Users' own speaker data: layouts, resampling, generated trials,
pre-flight errors, best-EER checkpoint selection. Training, validating,
verifying and adapting on it through the recipe:
``tests/integration/test_own_data_recipe.py``.
"""

import collections
import csv
import os
import pathlib
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_unipet.data.layouts import (
    DataPreparationError,
    detect_format,
    list_recordings,
)
from speechbrain_unipet.data.preparation import (
    check_rerun,
    preparation_options,
    prepare_speaker_data,
)
from speechbrain_unipet.data.trials import read_trials
from speechbrain_unipet.training.checkpoints import (
    keep_best_checkpoint,
    recover_best_checkpoint,
)
from speechbrain_unipet.training.pipelines import check_prepared_data
from speechbrain_unipet.utils.audio import AudioError, load_audio

OWN_RATE = 22050


def tone(f0, seconds, rate, seed):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
    return (0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_layout(root, fmt, corpus, rate=16000):
    """Writes ``corpus`` (speaker -> list of signals) in layout ``fmt`` and
    returns the data_folder to give the recipe."""
    root.mkdir(parents=True, exist_ok=True)
    audio = root / "audio"
    entries = []
    for spk, signals in sorted(corpus.items()):
        for i, sig in enumerate(signals):
            if fmt == "voxceleb":
                path = root / "wav" / spk / f"v{i}" / "00001.flac"
            elif fmt == "speaker_folders":
                path = root / spk / "session" / f"take{i}.flac"
            else:
                path = audio / f"{spk}_{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, sig, rate)
            entries.append((f"{spk}_{i}", path, spk))
    if fmt == "csv":
        lines = ["path,speaker"] + [
            f"{p.relative_to(root)},{s}" for _, p, s in entries
        ]
        (root / "manifest.csv").write_text("\n".join(lines) + "\n")
        return root / "manifest.csv"
    if fmt == "kaldi":
        (root / "wav.scp").write_text(
            "".join(f"{u} {p}\n" for u, p, _ in entries)
        )
        (root / "utt2spk").write_text(
            "".join(f"{u} {s}\n" for u, _, s in entries)
        )
    return root


def tone_corpus(speakers=8, recordings=1, seconds=3.0, rate=16000):
    return {
        f"spk{s}": [
            tone(110 + 30 * s, seconds, rate, seed=10 * s + r)
            for r in range(recordings)
        ]
        for s in range(speakers)
    }


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


PREP = {
    "num_test_speakers": 2,
    "num_valid_speakers": 2,
    "test_segment_len": 1.0,
    "seg_dur": 0.5,
}


# ---------------------------------------------------------------- layouts
@pytest.mark.parametrize("fmt", ["voxceleb", "speaker_folders", "csv", "kaldi"])
def test_each_layout_is_detected_and_prepared_alike(tmp_path, fmt):
    corpus = tone_corpus(speakers=6, recordings=2, seconds=1.5)
    folder = write_layout(tmp_path / fmt, fmt, corpus)
    assert detect_format(folder) == fmt
    recordings = list_recordings(folder)
    assert len(recordings) == 12
    assert collections.Counter(r.speaker for r in recordings) == dict.fromkeys(
        corpus, 2
    )
    stats = prepare_speaker_data(folder, tmp_path / f"save_{fmt}", **PREP)
    assert stats["format"] == fmt
    # 2 test + 2 validation speakers held out, 2 train speakers left.
    assert stats["train"]["speakers"] == 2
    assert stats["test"]["speakers"] == 2 and stats["valid"]["trials"] > 0


def test_layouts_give_the_same_training_segments(tmp_path):
    corpus = tone_corpus(speakers=6, recordings=1, seconds=2.0)
    rows = {}
    for fmt in ("voxceleb", "speaker_folders", "csv", "kaldi"):
        folder = write_layout(tmp_path / fmt, fmt, corpus)
        prepare_speaker_data(folder, tmp_path / f"s_{fmt}", **PREP)
        rows[fmt] = sorted(
            (r["spk_id"], r["start"], r["stop"])
            for r in read_csv(tmp_path / f"s_{fmt}" / "train.csv")
        )
    assert rows["voxceleb"] and all(
        v == rows["voxceleb"] for v in rows.values()
    )


def test_csv_manifest_regions_tsv_and_ids(tmp_path):
    rate = 16000
    sig = tone(150, 4.0, rate, 0)
    sf.write(tmp_path / "long.wav", sig, rate)
    lines = ["id\tpath\tspeaker\tstart\tstop"]
    lines += [f"a{i}\tlong.wav\tA\t{i}\t{i + 1}" for i in range(4)]
    (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
    recs = list_recordings(tmp_path / "m.tsv", "csv")
    assert [(r.uid, r.start, r.stop) for r in recs][:2] == [
        ("a0", 0.0, 1.0),
        ("a1", 1.0, 2.0),
    ]
    assert all(pathlib.Path(r.path) == tmp_path / "long.wav" for r in recs)


def test_flat_folder_gets_a_clear_error(tmp_path):
    sf.write(tmp_path / "103-1240-0000.flac", tone(100, 0.5, 16000, 0), 16000)
    with pytest.raises(DataPreparationError, match="no speaker folders.*csv"):
        detect_format(tmp_path)


# ------------------------------------------------------------------- audio
def test_resampling_and_downmix_equal_torchaudio(tmp_path):
    rate, seconds = OWN_RATE, 1.0
    t = np.arange(int(rate * seconds)) / rate
    left = np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.5
    right = np.sin(2 * np.pi * 660 * t).astype(np.float32) * 0.3
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), rate, subtype="FLOAT")
    got = load_audio(path, 16000)
    stereo, file_rate = sf.read(path, dtype="float32", always_2d=True)
    reference = torchaudio.functional.resample(
        torch.from_numpy(stereo.T).mean(0), file_rate, 16000
    )
    assert got.shape == (16000,)
    torch.testing.assert_close(got, reference)
    # And it is the right signal: the two tones at the new rate.
    t16 = torch.arange(16000) / 16000
    ideal = 0.25 * torch.sin(2 * np.pi * 440 * t16) + 0.15 * torch.sin(
        2 * np.pi * 660 * t16
    )
    assert (got[200:-200] - ideal[200:-200]).abs().max() < 1e-2


def test_region_is_read_at_the_file_rate_then_resampled(tmp_path):
    path = tmp_path / "a.wav"
    sig = tone(200, 1.0, 8000, 0)
    sf.write(path, sig, 8000, subtype="FLOAT")
    part = load_audio(path, 16000, start=2000, stop=6000)
    assert part.shape == (8000,)
    whole = load_audio(path, 16000)
    torch.testing.assert_close(
        part[500:-500], whole[4500:11500], atol=2e-2, rtol=0
    )


def test_undecodable_format_names_file_and_conversion(tmp_path):
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and "ffmpeg -i" in str(err.value)


# ------------------------------------------------------------------ trials
def test_generated_trials_are_deterministic_and_balanced(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(10, 1, 3.0)
    )
    opts = dict(PREP, num_test_speakers=4, trial_utts_per_speaker=3)
    prepare_speaker_data(folder, tmp_path / "a", **opts)
    prepare_speaker_data(folder, tmp_path / "b", **opts)
    text = (tmp_path / "a" / "trials.txt").read_text()
    assert text == (tmp_path / "b" / "trials.txt").read_text()
    trials = read_trials(tmp_path / "a" / "trials.txt")
    per_speaker = collections.defaultdict(collections.Counter)
    for t in trials:
        per_speaker[t.enrol.split("/")[0]][t.label] += 1
        assert t.enrol != t.test
        same = t.enrol.split("/")[0] == t.test.split("/")[0]
        assert same == bool(t.label)
    assert len(per_speaker) == 4
    # 3 segments per speaker: 3 target pairs, 3 non-target pairs each.
    assert all(c == {1: 3, 0: 3} for c in per_speaker.values())
    assert len({frozenset((t.enrol, t.test)) for t in trials}) == len(trials)
    test_speakers = set(per_speaker)
    train_speakers = {r["spk_id"] for r in read_csv(tmp_path / "a/train.csv")}
    valid_speakers = {
        r["spk_id"] for r in read_csv(tmp_path / "a/valid_verif.csv")
    }
    assert not test_speakers & train_speakers
    assert not valid_speakers & (train_speakers | test_speakers)
    prepare_speaker_data(folder, tmp_path / "c", **dict(opts, seed=7))
    assert (tmp_path / "c" / "trials.txt").read_text() != text


def test_one_recording_speakers_split_in_time(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(8, 1, 3.0)
    )
    prepare_speaker_data(folder, tmp_path / "s", **PREP)
    train = read_csv(tmp_path / "s/train.csv")
    dev = read_csv(tmp_path / "s/dev.csv")
    assert dev and {r["spk_id"] for r in dev} <= {r["spk_id"] for r in train}
    for d in dev:
        for t in (t for t in train if t["wav"] == d["wav"]):
            # training crops come from a region that ends where dev begins
            assert int(t["utt_stop"]) <= int(d["start"])
            assert int(t["stop"]) <= int(t["utt_stop"])


def test_preparation_is_cached_and_redone_when_options_change(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(8, 1, 2.0)
    )
    prepare_speaker_data(folder, tmp_path / "s", **PREP)
    csv_file = tmp_path / "s" / "train.csv"
    os.utime(csv_file, (1, 1))
    prepare_speaker_data(folder, tmp_path / "s", **PREP)
    assert csv_file.stat().st_mtime == 1
    prepare_speaker_data(folder, tmp_path / "s", **dict(PREP, seg_dur=0.25))
    assert csv_file.stat().st_mtime > 1


# --------------------------------------------------------------- bad input
def test_unknown_speaker_column_names_the_columns(tmp_path):
    sf.write(tmp_path / "a.wav", tone(100, 1.0, 16000, 0), 16000)
    (tmp_path / "m.csv").write_text("path,talker\na.wav,x\n")
    with pytest.raises(DataPreparationError) as err:
        prepare_speaker_data(tmp_path / "m.csv", tmp_path / "s", **PREP)
    msg = str(err.value)
    assert "m.csv" in msg and "talker" in msg and "speaker" in msg


def test_empty_manifest(tmp_path):
    (tmp_path / "m.csv").write_text("path,speaker\n")
    with pytest.raises(DataPreparationError, match="has a header but no rows"):
        prepare_speaker_data(tmp_path / "m.csv", tmp_path / "s", **PREP)


def test_unreadable_file_is_named_with_its_manifest_line(tmp_path):
    folder = write_layout(tmp_path, "csv", tone_corpus(8, 1, 2.0))
    (tmp_path / "audio" / "bad.flac").write_bytes(b"not audio at all")
    with open(folder, "a") as f:
        f.write("audio/bad.flac,spk0\n")
    with pytest.raises(DataPreparationError) as err:
        prepare_speaker_data(folder, tmp_path / "s", **PREP)
    msg = str(err.value)
    assert f"{folder}:10" in msg and "bad.flac" in msg


def test_trial_naming_audio_outside_the_data(tmp_path):
    folder = write_layout(tmp_path / "d", "kaldi", tone_corpus(8, 1, 2.0))
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk0_0 spk1_0\n0 spk0_0 nobody_3\n")
    with pytest.raises(DataPreparationError) as err:
        prepare_speaker_data(
            folder, tmp_path / "s", verification_file=trials, **PREP
        )
    msg = str(err.value)
    assert str(trials) in msg and "trial 2" in msg and "nobody_3" in msg


def test_too_few_speakers_for_held_out_sets(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(4, 1, 2.0)
    )
    with pytest.raises(DataPreparationError, match="num_valid_speakers=3"):
        prepare_speaker_data(
            folder, tmp_path / "s", **dict(PREP, num_valid_speakers=3)
        )


def test_held_out_sets_default_to_what_the_data_allows(tmp_path, caplog):
    """No split option: 10 one-recording speakers give 2 test and 2
    validation speakers and keep 6 for training (the former fixed 40 / 20
    refused them); the numbers are logged."""
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(10, 1, 4.0)
    )
    opts = {"test_segment_len": 1.0, "seg_dur": 0.5}
    with caplog.at_level("INFO"):
        stats = prepare_speaker_data(folder, tmp_path / "s", **opts)
    assert stats["test"]["speakers"] == 2
    assert stats["valid"]["speakers"] == 2
    assert stats["train"]["speakers"] == 6
    log = caplog.text
    assert "num_test_speakers: 2 of the 10 speakers" in log
    assert "num_valid_speakers: 2 of the 8 speakers" in log
    valid = {r["spk_id"] for r in read_csv(tmp_path / "s" / "valid_verif.csv")}
    train = {r["spk_id"] for r in read_csv(tmp_path / "s" / "train.csv")}
    test = {r["spk_id"] for r in read_csv(tmp_path / "s" / "test.csv")}
    assert len(valid) == 2 and not valid & train and not test & (train | valid)


def test_a_run_prepared_with_counts_resumes_with_null_counts(tmp_path, caplog):
    """A run prepared with explicit counts (the former fixed defaults) keeps
    its preparation and split when resumed under a yaml that leaves them
    null; an explicit different count is still a change."""
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(10, 1, 4.0)
    )
    save = tmp_path / "s"
    opts = {"test_segment_len": 1.0, "seg_dur": 0.5}
    first = prepare_speaker_data(
        folder, save, num_test_speakers=3, num_valid_speakers=3, **opts
    )
    (save / "CKPT+2026-01-01+00-00-00+00").mkdir()  # trained on it

    def options(test, valid):
        return preparation_options(
            str(folder),
            None,
            None,
            test,
            valid,
            1.0,
            4,
            (90, 10),
            0.5,
            5e-4,
            1234,
        )

    assert check_rerun(save, options(None, None)) is None
    with caplog.at_level("INFO"):
        again = prepare_speaker_data(folder, save, **opts)
    assert "already done" in caplog.text
    assert again == first and again["test"]["speakers"] == 3
    with pytest.raises(DataPreparationError, match="prepared 3, now 2"):
        check_rerun(save, options(None, 2))


def test_preflight_names_unknown_dev_speaker_and_missing_file(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(8, 1, 2.0)
    )
    save = tmp_path / "s"
    prepare_speaker_data(folder, save, **PREP)
    hparams = {
        "train_annotation": str(save / "train.csv"),
        "valid_annotation": str(save / "dev.csv"),
    }
    assert check_prepared_data(hparams)["train_annotation"] > 0
    dev = (save / "dev.csv").read_text().splitlines()
    spk = dev[1].split(",")[5]
    (save / "dev.csv").write_text(
        "\n".join(dev + [dev[1].replace(spk, "stranger")]) + "\n"
    )
    with pytest.raises(DataPreparationError, match="Dev speaker 'stranger'"):
        check_prepared_data(hparams)
    (save / "dev.csv").write_text("\n".join(dev) + "\n")
    gone = pathlib.Path(read_csv(save / "train.csv")[0]["wav"])
    gone.unlink()
    with pytest.raises(DataPreparationError, match=re.escape(str(gone))):
        check_prepared_data(hparams)


# --------------------------------------------------- checkpoint selection
def test_best_eer_checkpoint_is_kept_and_loaded(tmp_path):
    from speechbrain_unipet.training.checkpoints import AtomicCheckpointer

    model = torch.nn.Linear(1, 1, bias=False)
    ckpt = AtomicCheckpointer(tmp_path, {"model": model})
    for value, eer in ((1.0, 0.3), (2.0, 0.1), (3.0, 0.2)):
        model.weight.data.fill_(value)
        keep_best_checkpoint(ckpt, {"EER": eer, "ErrorRate": 0.5}, "EER")
    kept = sorted(c.meta["EER"] for c in ckpt.list_checkpoints())
    assert kept == [0.1, 0.2]  # the best and the latest
    model.weight.data.fill_(0.0)
    best = recover_best_checkpoint(ckpt, "EER")
    assert best.meta["EER"] == 0.1 and model.weight.item() == 2.0


def test_parallel_inspection_names_a_file_no_backend_decodes(tmp_path):
    corpus = tone_corpus(speakers=40, recordings=2, seconds=1.2)
    folder = write_layout(tmp_path / "d", "speaker_folders", corpus)
    fake = folder / "spk0" / "session" / "clip.m4a"
    fake.write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    with pytest.raises(DataPreparationError) as err:
        prepare_speaker_data(folder, tmp_path / "s", num_workers=2, **PREP)
    assert str(fake) in str(err.value) and "ffmpeg -i" in str(err.value)
    fake.unlink()
    stats = prepare_speaker_data(folder, tmp_path / "s", num_workers=2, **PREP)
    assert stats["recordings"] == 80


@pytest.mark.parametrize(
    "ext, fmt, subtype",
    [("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")],
)
def test_compressed_formats_are_listed_and_read(tmp_path, ext, fmt, subtype):
    sig = tone(220, 1.0, 16000, 0)
    path = tmp_path / "spk" / f"a.{ext}"
    path.parent.mkdir()
    sf.write(path, sig, 16000, format=fmt, subtype=subtype)
    (rec,) = list_recordings(tmp_path, "speaker_folders")
    assert rec.uid == "spk/a" and rec.speaker == "spk"
    got = load_audio(path, 16000)
    assert abs(got.numel() - sig.size) < 2000  # codec padding
    # lossy, but the same tone
    spectrum = torch.fft.rfft(got[:8000]).abs()
    assert abs(int(spectrum.argmax()) * 16000 / 8000 - 220) <= 4


def test_speakers_of_short_clips_give_whole_clips_to_dev(tmp_path):
    corpus = tone_corpus(speakers=8, recordings=8, seconds=0.6)
    folder = write_layout(tmp_path / "d", "speaker_folders", corpus)
    opts = dict(PREP, test_segment_len=0.5)
    prepare_speaker_data(folder, tmp_path / "s", **opts)
    train = read_csv(tmp_path / "s/train.csv")
    dev = read_csv(tmp_path / "s/dev.csv")
    # One segment per clip: dev takes whole clips of training speakers.
    assert dev and {r["spk_id"] for r in dev} <= {r["spk_id"] for r in train}
    assert not {r["wav"] for r in dev} & {r["wav"] for r in train}


def test_manifest_blank_rows_and_line_numbers(tmp_path):
    sf.write(tmp_path / "a.wav", tone(100, 1.0, 16000, 0), 16000)
    (tmp_path / "m.csv").write_text(
        "path,speaker,start\n\na.wav,s1,0\n,,\na.wav,s2,1500\n"
    )
    (rec1, rec2) = list_recordings(tmp_path / "m.csv")
    assert rec1.origin.endswith("m.csv:3") and rec2.origin.endswith("m.csv:5")
    with pytest.raises(DataPreparationError) as err:
        prepare_speaker_data(tmp_path / "m.csv", tmp_path / "s", **PREP)
    assert "m.csv:5" in str(err.value) and "in seconds" in str(err.value)


def test_kaldi_segments_to_end_and_repeated_keys(tmp_path):
    sf.write(tmp_path / "r.wav", tone(100, 2.0, 16000, 0), 16000)
    (tmp_path / "wav.scp").write_text("rec r.wav\n")
    (tmp_path / "segments").write_text("u1 rec 0 1.0\nu2 rec 1.0 -1\n")
    (tmp_path / "utt2spk").write_text("u1 A\nu2 A\n")
    recs = list_recordings(tmp_path)
    assert [(r.uid, r.start, r.stop) for r in recs] == [
        ("u1", 0.0, 1.0),
        ("u2", 1.0, None),
    ]
    (tmp_path / "utt2spk").write_text("u1 A\nu2 A\nu1 B\n")
    with pytest.raises(DataPreparationError, match="utt2spk:3: 'u1' repeats"):
        list_recordings(tmp_path)


def test_trials_stay_balanced_with_few_other_utterances():
    from speechbrain_unipet.data.trials import make_trials

    trials = make_trials({"a": [f"a{i}" for i in range(5)], "b": ["b0"]}, 0)
    labels = collections.Counter(label for label, _, _ in trials)
    assert labels[1] == labels[0] == 5


def test_failed_rerun_never_leaves_a_cache_that_looks_finished(tmp_path):
    folder = write_layout(
        tmp_path / "d", "speaker_folders", tone_corpus(8, 1, 2.0)
    )
    prepare_speaker_data(folder, tmp_path / "s", **PREP)
    with pytest.raises(DataPreparationError):
        prepare_speaker_data(
            folder, tmp_path / "s", **dict(PREP, num_valid_speakers=7)
        )
    csv_file = tmp_path / "s" / "train.csv"
    os.utime(csv_file, (1, 1))
    prepare_speaker_data(folder, tmp_path / "s", **PREP)
    assert csv_file.stat().st_mtime > 1  # prepared again, not reused
