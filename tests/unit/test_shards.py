"""WebDataset shards (``speechbrain_unipet.data.shards``, ``speechbrain-unipet
make-shards``): content and metadata, audio read back, limits by count and
bytes, determinism, resuming, refused re-runs and data, splitting among
ranks and DataLoader workers, the command line."""

import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf
import speechbrain.dataio.dataloader as sb_loader
import torch

from speechbrain_unipet.cli import main
from speechbrain_unipet.data.layouts import DataPreparationError
from speechbrain_unipet.data.shards import (
    FLAC_RATIO,
    _plan,
    estimated_bytes,
    make_shards,
    read_shards,
    shard_dataset,
    shard_options,
    tar_bytes,
)
from speechbrain_unipet.utils.audio import load_audio


def tone(seconds, rate, seed, channels=1):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (120 + 20 * seed) * t)
    x = x + 0.01 * rng.standard_normal(t.size)
    if channels > 1:
        x = np.stack([x, 0.5 * x], axis=1)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A csv manifest of 4 speakers: 12 whole 16 kHz files, one 8 kHz
    stereo file, one region (start/stop) of a file, one empty file."""
    root = tmp_path_factory.mktemp("shard_data")
    rows = ["path,speaker,start,stop"]
    for s in range(4):
        for k in range(3):
            name = f"audio/spk{s}_{k}.wav"
            (root / "audio").mkdir(exist_ok=True)
            sf.write(root / name, tone(0.4 + 0.1 * k, 16000, 3 * s + k), 16000)
            rows.append(f"{name},spk{s},,")
    sf.write(root / "audio/stereo.flac", tone(0.7, 8000, 20, 2), 8000)
    rows.append("audio/stereo.flac,spk1,,")
    sf.write(root / "audio/long.wav", tone(2.0, 16000, 21), 16000)
    rows.append("audio/long.wav,spk2,0.5,1.25")
    sf.write(root / "audio/empty.wav", np.zeros(0, np.float32), 16000)
    rows.append("audio/empty.wav,spk3,,")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    summary = make_shards(data, out, max_count=4, num_workers=2)
    return out, summary


def members(path):
    with tarfile.open(path) as tar:
        return [
            (m.name, m.mtime, m.uid, m.gid, m.uname, tar.extractfile(m).read())
            for m in tar.getmembers()
        ]


def examples(folder, **kw):
    return {x["id"]: x for x in shard_dataset(folder, **kw)}


def test_counts_index_and_metadata(shards):
    out, summary = shards
    assert summary["utterances"] == 14 and summary["speakers"] == 4
    assert summary["dropped_empty"] == 1
    assert summary["shards"] == 4 and summary["written"] == 4
    index = read_shards(out)
    assert [s["utterances"] for s in index["shards"]] == [4, 4, 4, 2]
    assert index["bytes"] == sum(
        (out / s["name"]).stat().st_size for s in index["shards"]
    )
    assert index["speaker_ids"] == ["spk0", "spk1", "spk2", "spk3"]
    assert index["options"]["data_format"] == "csv"
    plan = json.loads((out / "plan.json").read_text())
    assert [len(s["ids"]) for s in plan["shards"]] == [4, 4, 4, 2]
    # Shuffled: shards mix speakers, and the order is not the listing's.
    assert max(s["speakers"] for s in index["shards"]) >= 2
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names[0].endswith(".flac") and names[1].endswith(".json")
    assert set(meta) == {
        "id",
        "speaker",
        "duration",
        "sample_rate",
        "source",
        "start",
        "stop",
    }
    assert meta["sample_rate"] == 16000 and os.path.isabs(meta["source"])


def test_audio_read_back_equals_the_source(shards, data):
    out, _ = shards
    got = examples(out, split_by_rank=False)
    assert len(got) == 14 and "audio/empty" not in got
    region = got["audio/long_0.5-1.25"]
    assert region["duration"] == pytest.approx(0.75)
    assert region["speaker"] == "spk2"
    for uid, x in got.items():
        path = data.parent / (uid.split("_0.5")[0] + ".wav")
        start, stop = 0, None
        if uid == "audio/stereo":
            path = data.parent / "audio/stereo.flac"
        if uid.startswith("audio/long"):
            start, stop = 8000, 20000
        expected = load_audio(path, 16000, start, stop)
        assert x["wav"].dtype == torch.float32
        assert x["wav"].shape == expected.shape, uid
        assert x["duration"] == expected.numel() / 16000
        assert (x["wav"] - expected).abs().max() < 1e-4, uid


def test_shard_limit_by_bytes(data, tmp_path, caplog):
    max_bytes = 60_000
    summary = make_shards(data, tmp_path / "b", max_bytes=max_bytes)
    plan = json.loads((tmp_path / "b/plan.json").read_text())
    options = shard_options(data, None, 1000, max_bytes, 1986, 16000)
    assert plan["options"] == options
    counts = [len(s["ids"]) for s in plan["shards"]]
    assert summary["shards"] == len(counts) > 1 and sum(counts) == 14
    # Each shard's estimate (FLAC_RATIO of the PCM bytes) fits the limit.
    # The files may not: these noisy tones compress to 0.68, not 0.6.
    samples = {
        uid: x["wav"].numel()
        for uid, x in examples(tmp_path / "b", split_by_rank=False).items()
    }
    for shard in plan["shards"]:
        estimate = tar_bytes(
            sum(estimated_bytes(samples[u]) for u in shard["ids"])
        )
        assert estimate <= max_bytes or len(shard["ids"]) == 1
    assert "1 shard(s) exceed max_bytes" in caplog.text
    assert FLAC_RATIO == 0.6


def test_plan_cuts_by_count_and_bytes():
    class Rec:
        def __init__(self, i):
            self.uid, self.path, self.speaker = f"u{i}", f"/a{i}.wav", "s"

    class Probe:
        rate, start, stop = 16000, 0, 16000

    recs, probes = [Rec(i) for i in range(10)], [Probe()] * 10
    one = estimated_bytes(16000)
    opts = {"seed": 1, "sample_rate": 16000, "max_count": 4, "max_bytes": None}
    shards, _ = _plan(recs, probes, opts)
    assert [len(s) for s in shards] == [4, 4, 2]
    opts["max_bytes"] = tar_bytes(3 * one)
    shards, _ = _plan(recs, probes, opts)
    assert [len(s) for s in shards] == [3, 3, 3, 1]
    opts["max_bytes"] = 1  # each utterance alone
    assert len(_plan(recs, probes, opts)[0]) == 10


def test_deterministic_and_seeded(data, tmp_path, shards):
    out, _ = shards
    again = tmp_path / "again"
    make_shards(data, again, max_count=4, num_workers=1)
    for name in ("plan.json", "index.json"):
        a = json.loads((out / name).read_text())
        b = json.loads((again / name).read_text())
        assert a == b, name
    for k in range(4):
        name = f"shard-{k:06d}.tar"
        assert (out / name).read_bytes() == (again / name).read_bytes()
    assert {m[1:5] for m in members(again / "shard-000000.tar")} == {
        (0, 0, 0, "")
    }
    other = tmp_path / "other_seed"
    make_shards(data, other, max_count=4, seed=7)
    ids = json.loads((other / "plan.json").read_text())["shards"][0]["ids"]
    first = json.loads((out / "plan.json").read_text())["shards"][0]["ids"]
    assert ids != first


def test_resume_rewrites_only_missing_shards(data, tmp_path):
    out = tmp_path / "r"
    make_shards(data, out, max_count=4)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    content = (out / "shard-000001.tar").read_bytes()
    (out / "shard-000001.tar").unlink()
    (out / ".shard-000002.999.tmp").write_bytes(b"killed")  # a killed run
    summary = make_shards(data, out, max_count=4)
    assert summary["written"] == 1 and summary["skipped"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert {n for n in after if after[n] != before[n]} == {"shard-000001.tar"}
    assert (out / "shard-000001.tar").read_bytes() == content
    assert not list(out.glob(".*.tmp"))
    # A truncated shard is not complete either.
    path = out / "shard-000002.tar"
    path.write_bytes(path.read_bytes()[:3000])
    assert make_shards(data, out, max_count=4)["written"] == 1
    # Without its index the folder is not complete.
    (out / "index.json").unlink()
    with pytest.raises(DataPreparationError, match="make-shards"):
        read_shards(out)


def test_other_options_are_refused(data, tmp_path):
    out = tmp_path / "o"
    make_shards(data, out, max_count=4)
    with pytest.raises(
        DataPreparationError, match="max_count: written 4, now 5"
    ):
        make_shards(data, out, max_count=5)
    with pytest.raises(DataPreparationError, match="seed"):
        make_shards(data, out, max_count=4, seed=2)
    with pytest.raises(DataPreparationError, match="data_format"):
        make_shards(data, out, max_count=4, data_format="kaldi")
    summary = make_shards(data, out, max_count=5, overwrite=True)
    assert summary["shards"] == 3 and not (out / "shard-000003.tar").exists()
    assert read_shards(out)["options"]["max_count"] == 5
    # A folder of something else.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataPreparationError, match="holds no plan.json"):
        make_shards(data, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_other_data_is_refused(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    out = tmp_path / "d"
    make_shards(copy, out, max_count=4)
    # Another length behind the same id (the count-cut plan is the same).
    sf.write(copy / "audio/spk0_1.wav", tone(0.9, 16000, 30), 16000)
    with pytest.raises(DataPreparationError, match="other files, regions"):
        make_shards(copy, out, max_count=4)
    # One utterance more.
    sf.write(copy / "audio/new.wav", tone(0.5, 16000, 31), 16000)
    with open(copy / "manifest.csv", "a") as f:
        f.write("audio/new.wav,spk0,,\n")
    with pytest.raises(
        DataPreparationError, match="1 utterance.s. added .e.g. 'audio/new'"
    ):
        make_shards(copy, out, max_count=4)
    assert make_shards(copy, out, max_count=4, overwrite=True)["written"] == 4


def test_unreadable_file_is_named_before_any_shard(data, tmp_path):
    bad = tmp_path / "bad.csv"
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio at all")
    bad.write_text(
        data.read_text().replace("audio/", f"{data.parent}/audio/")
        + "broken.wav,spk0,,\n"
    )
    out = tmp_path / "none"
    with pytest.raises(DataPreparationError, match="broken.wav"):
        make_shards(bad, out)
    assert not out.exists()


def test_ranks_and_workers_split_the_shards(shards, monkeypatch):
    out, _ = shards
    all_shards = {f"shard-{k:06d}.tar" for k in range(4)}
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        got = list(shard_dataset(out))
        seen.append({x["shard"] for x in got})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == all_shards
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(DataPreparationError, match="5 ranks"):
        shard_dataset(out)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")

    dataset = shard_dataset(out, shuffle_buffer=8, seed=3)
    # SpeechBrain's make_dataloader recognises it (batch_size=None).
    assert sb_loader.WDS_AVAILABLE and isinstance(dataset, sb_loader.WDS_CLASS)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2
    )
    ids = [x["id"] for x in loader]
    assert len(ids) == len(set(ids)) == 14
    in_order = [x["id"] for x in shard_dataset(out)]
    assert sorted(in_order) == sorted(ids) and in_order != ids


def test_cli_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["make-shards", str(data), str(out), "--max-count", "5"]
    assert main([*args, "--max-bytes", "1GB", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 shards" in printed and "14 utterances of 4 speakers" in printed
    assert json.loads((out / "plan.json").read_text())["options"][
        "max_bytes"
    ] == (10**9)
    # Resumed: nothing to write.
    assert main([*args, "--max-bytes", "1000MB", "--seed", "3"]) == 0
    assert "(0 written, 3 complete already)" in capsys.readouterr().out
    assert main([*args, "--seed", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "seed: written 3, now 4" in err
    with pytest.raises(SystemExit) as usage:
        main([*args, "--max-bytes", "lots"])
    assert usage.value.code == 2
    assert "'lots' is not a size" in capsys.readouterr().err


def test_torchaudio_files_and_write_errors(data, tmp_path, monkeypatch, shards):
    from speechbrain_unipet.data import shards as module
    from speechbrain_unipet.utils.audio import AudioError, NotReadBySoundfile

    real_info, real_load = module.audio_info, module.load_numpy

    def only_torchaudio(path, fallback=True):
        # stereo.flac as an m4a would be: soundfile refuses it.
        if "stereo" in str(path) and not fallback:
            raise NotReadBySoundfile(f"soundfile cannot decode '{path}'")
        return real_info(path, fallback)

    monkeypatch.setattr(module, "audio_info", only_torchaudio)
    out, _ = shards
    again = tmp_path / "deferred"
    make_shards(data, again, max_count=4, num_workers=2)
    for k in range(4):
        name = f"shard-{k:06d}.tar"
        assert (out / name).read_bytes() == (again / name).read_bytes()

    def damaged(path, *args):
        if "spk3_2" in str(path):
            raise AudioError(f"Audio file '{path}' holds NaN samples")
        return real_load(path, *args)

    monkeypatch.setattr(module, "load_numpy", damaged)
    broken = tmp_path / "broken"
    with pytest.raises(AudioError, match="spk3_2.wav"):
        make_shards(data, broken, max_count=4, num_workers=2)
    assert not (broken / "index.json").exists()
    assert not list(broken.glob(".*.tmp"))
    written = len(list(broken.glob("*.tar")))
    assert written < 4
    monkeypatch.setattr(module, "load_numpy", real_load)
    assert make_shards(data, broken, max_count=4)["written"] == 4 - written
