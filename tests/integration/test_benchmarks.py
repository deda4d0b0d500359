"""The benchmarks run end to end (on a tiny model; times not checked). The
FLOP counter of the cost benchmark: ``tests/unit/test_benchmark_flops.py``."""

import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "training_cost.py"


def test_training_cost_prints_both_tables():
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--methods",
            "frozen,unipet",
            "--rounds",
            "2",
            "--inference-rounds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "Training step, 4 x 2 s, tiny WavLM, CPU, median of 2 rounds" in text
    number = r"(-?[0-9.]+)"
    rows = {
        m: re.search(
            rf"\| `{m}` \| {number} s \| {number}x \| {number}x \| "
            rf"{number} MiB \| {number}x \| {number} \|",
            text,
        )
        for m in ("finetune", "frozen", "unipet")
    }
    rows["checkpointed"] = re.search(
        rf"\| `unipet`, gradient checkpointing \| {number} s \| {number}x \| "
        rf"{number}x \|",
        text,
    )
    assert all(rows.values()), text
    # Checkpointed layers recompute their forward during backward.
    assert float(rows["checkpointed"].group(3)) > float(rows["unipet"].group(3))
    assert rows["finetune"].group(2) == rows["finetune"].group(3) == "1.00"
    assert all(float(r.group(1)) > 0 for r in rows.values())
    # The frozen backbone does no backward pass: fewer FLOPs than finetune.
    assert 0 < float(rows["frozen"].group(3)) < 1
    phases = re.search(
        rf"`finetune` step, median: forward {number} s \({number}x of the "
        rf"step\), backward {number} s, optimiser {number} s\.",
        text,
    )
    assert phases, text
    assert 0 < float(phases.group(2)) < 1
    inference = re.findall(
        rf"\| [^|]+ \| {number} ms \| ([+-][0-9.]+) % \| "
        rf"([+-][0-9.]+) % \|",
        text,
    )
    assert len(inference) == 5, text
    assert inference[0][1] in ("+0.0", "-0.0")
    assert inference[0][2] in ("+0.0", "-0.0")
    # PET modules add arithmetic; merged LoRA adds none.
    _, inner_inter, unipet, _, merged = (float(i[2]) for i in inference)
    assert inner_inter > 0 and unipet > 0
    assert merged == 0.0


def test_long_audio_benchmark_prints_its_table():
    script = SCRIPT.with_name("long_audio.py")
    out = subprocess.run(
        [sys.executable, str(script), "--tiny", "--seconds", "1,3"]
        + ["--whole-up-to", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"^\| (\d+) s \| (\w+) \|", out.stdout, flags=re.M)
    assert rows == [
        ("1", "windowed"),
        ("1", "whole"),
        ("3", "windowed"),
        ("3", "whole"),
    ]
    assert "| 3 s | whole | not run |" in out.stdout


def test_backends_benchmark_prints_its_tables():
    script = SCRIPT.with_name("backends.py")
    out = subprocess.run(
        [sys.executable, str(script), "--tiny", "--device", "cpu"]
        + ["--rounds", "2", "--encoder", "--encoder-rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "tiny sizes, CPU, 1 thread(s), median of 2 rounds" in text
    number = r"([0-9.e+-]+)"
    row = (
        rf"^\| `(\w+)` \([^|]+\) \| ([0-9,]+) \| {number} ms \| {number}x "
        rf"\| {number} \| {number}x \|$"
    )
    rows = re.findall(row, text, flags=re.M)
    names = ["ecapa", "mhfa", "ca_mhfa", "mfa"]
    # Back-end-only table, then the one with the encoder in front.
    assert [r[0] for r in rows] == names + names, text
    for table in (rows[:4], rows[4:]):
        assert table[0][3] == table[0][5] == "1.00"
        assert all(float(r[2]) > 0 and float(r[4]) > 0 for r in table)
    # The three stack back-ends are far smaller than ECAPA, even tiny.
    params = [int(r[1].replace(",", "")) for r in rows[:4]]
    assert max(params[1:]) < params[0]


def run_benchmark(name, *args):
    script = pathlib.Path(__file__).parents[2] / "benchmarks" / name
    out = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_scoring_benchmark_prints_its_stages_and_verdict():
    text = run_benchmark(
        "scoring.py",
        "--embeddings",
        "400",
        "--trials",
        "900",
        "--cohort",
        "30",
        "--top-n",
        "5",
        "--dim",
        "16",
    )
    for stage in (
        "read trial list",
        "cosine scoring",
        "AS-norm scoring",
        "EER + minDCF",
    ):
        assert re.search(
            rf"\| {re.escape(stage)}[^|]* \| [0-9.]+ s \|", text
        ), stage
    assert re.search(r"trial list to metrics: [0-9.]+ s .*: PASS", text)


def test_extraction_benchmark_compares_batched_with_one_by_one():
    text = run_benchmark(
        "extraction.py",
        "--tiny",
        "--utterances",
        "6",
        "--min-seconds",
        "0.5",
        "--max-seconds",
        "1.5",
        "--num-workers",
        "0",
    )
    rows = re.findall(
        r"\| (one by one|batched[^|]*) \| ([0-9.]+) s \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+)x \|",
        text,
    )
    assert [r[0].split()[0] for r in rows] == ["one", "batched"]
    diff = float(
        re.search(
            r"difference batched vs one by one: ([0-9.e+-]+)", text
        ).group(1)
    )
    assert diff < 1e-4


def test_large_classifier_benchmark_prints_its_table():
    text = run_benchmark("large_classifier.py", "--tiny", "--rounds", "1")
    rows = re.findall(
        r"^\| ([0-9,]+) \| ([0-9,]+) \| (\d+) MiB \| (\d+) MiB \| (\d+) ms "
        r"\| (\d+) ms \| (\d+) % \|$",
        text,
        flags=re.M,
    )
    assert [r[0] for r in rows] == ["10", "1,000"], text
    # Parameters: classes x 3 sub-centres x 256.
    assert [int(r[1].replace(",", "")) for r in rows] == [7680, 768000]
    assert all(int(r[5]) > 0 for r in rows)


def test_data_loading_benchmark_reads_every_utterance_once():
    text = run_benchmark("data_loading.py", "--tiny")
    counts = re.findall(
        r"^  round 1: (raw files|shards), (\d) worker\(s\), (cold|warm): "
        r"(\d+) read \((\d+) distinct of (\d+), (\d+) unknown\)",
        text,
        flags=re.M,
    )
    # Cold rows only where the page cache can be emptied (fadvise, tmpfs).
    cold = "cold cache: posix_fadvise" in text
    assert cold or "cold cache: not possible" in text, text
    caches = ["cold", "warm"] if cold else ["warm"]
    runs = [
        (r, w, c) for c in caches for w in "12" for r in ("raw files", "shards")
    ]
    assert sorted(c[:3] for c in counts) == sorted(runs), text
    assert all(c[3:] == ("200", "200", "200", "0") for c in counts), text
    rows = re.findall(
        r"^\| (raw files|shards) \| (\d) \| (cold|warm) \| ([0-9,]+) \| "
        r"([0-9.]+) \| (?:([0-9.]+)x )?\|$",
        text,
        flags=re.M,
    )
    assert [r[:3] for r in rows] == runs, text
    assert all(float(r[3].replace(",", "")) > 0 for r in rows)
    assert all(float(r[4]) > 0 for r in rows)  # CPU ms per utterance
    assert all(bool(r[5]) == (r[0] == "shards") for r in rows)
    assert "CPU time per utterance, warm, shards/raw files: " in text
    assert "target shards never slower, warm cache (>= 1x): " in text


def test_data_loading_benchmark_caps_reads_as_asked():
    """``--throttle-iops``: cold raw files are read no faster than the cap
    allows (each needs at least one request; unthrottled they read at
    several hundred a second here), and the cgroup is removed after."""
    script = (
        pathlib.Path(__file__).parents[2] / "benchmarks" / "data_loading.py"
    )
    process = subprocess.Popen(
        [sys.executable, str(script), "--tiny", "--workers", "1"]
        + ["--throttle-iops", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=600)
    out = subprocess.CompletedProcess(
        process.args, process.returncode, stdout, stderr
    )
    if out.returncode:
        # No root, no cgroup block-I/O controller or no disk: said so.
        assert re.search(
            r"ERROR: --throttle-\*: (cannot cap reads here \(.+\); it needs "
            r"root|.+ is on no block device)",
            out.stdout + out.stderr,
        ), out.stderr[-3000:]
        return
    text = out.stdout
    capped = re.search(
        r"^slow storage: reads capped at 100 read IOPS on disk \d+:\d+ .*"
        r"checked: (.+)$",
        text,
        flags=re.M,
    )
    assert capped, text
    if "cold cache: not possible" in text:
        return
    rate = re.search(r"read requests, ([0-9,]+) a second", capped.group(1))
    assert rate and int(rate.group(1).replace(",", "")) <= 130, text
    raw_cold = re.search(
        r"^\| raw files \| 1 \| cold \| ([0-9,]+) \|", text, re.M
    )
    assert raw_cold and int(raw_cold.group(1).replace(",", "")) <= 130, text
    assert "reads capped at 100 read IOPS" in text.split("| reader |")[0]
    group = f"sbu_data_loading_{process.pid}"
    for root in ("/sys/fs/cgroup/blkio", "/sys/fs/cgroup"):
        assert not (pathlib.Path(root) / group).exists()
