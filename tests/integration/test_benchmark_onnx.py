"""The ONNX benchmark (``benchmarks/onnx.py``) runs end to end on a tiny
model (times and the targets' verdicts not checked)."""

import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "onnx.py"


def test_onnx_benchmark_prints_its_table_and_targets():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--repeats", "1"]
        + ["--seconds", "2", "--demo-files", "6"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    number = r"([0-9.]+)"
    rows = re.findall(
        rf"^\| (PyTorch eager|ORT fp32|ORT int8) \| {number} MB \| "
        rf"{number} ms \| {number}x \| ([^|]+) \| {number} % \| "
        rf"([+-][0-9.]+) pp \| ([0-9.e+-]+) \|$",
        text,
        flags=re.M,
    )
    assert [r[0] for r in rows] == ["PyTorch eager", "ORT fp32", "ORT int8"]
    eager, fp32, int8 = rows
    assert eager[3] == "1.00" and eager[4].strip() == "1 (reference)"
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    # The fp32 graph is the eager model to float rounding: same embeddings,
    # same trial ranking.
    assert float(fp32[4]) >= 0.9999
    assert float(int8[4]) > 0.9
    assert fp32[6] in ("+0.00", "-0.00")
    assert float(fp32[7]) < 1e-4
    assert "15 trials (6 files)" in text
    assert "does not measure accuracy" in text
    assert re.search(
        r"^Targets \(issue\): ORT fp32 >= 1\.3x eager: (met|NOT met) "
        r"\([0-9.]+x\); int8 >= 2x eager: (met|NOT met) \([0-9.]+x\); int8 "
        r"cosine >= 0\.99: (met|NOT met) \([0-9.]+\)",
        text,
        flags=re.M,
    ), text
    assert re.search(r"ONNX export \(.*\): [0-9.]+ s", text)
