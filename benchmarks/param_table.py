"""Trainable parameters per PET method on the WavLM Base+ architecture.

Random weights (``WavLMConfig()`` defaults are the Base+ sizes), saved and
loaded like a hub checkpoint. Prints a Markdown table for the README.

    python benchmarks/param_table.py
"""

import sys
import tempfile

from transformers import WavLMConfig, WavLMModel

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder


def main():
    with tempfile.TemporaryDirectory() as tmp:
        WavLMModel(WavLMConfig()).save_pretrained(tmp)
        rows = []
        for name, method in PET_METHODS.items():
            enc = PETEncoder(tmp, method=name)
            trainable, total = enc.count_parameters()
            rows.append((name, trainable, total, method.summary))
        backbone = sum(p.numel() for p in enc.backbone.parameters())
    print(
        f"WavLM Base+ architecture: {backbone / 1e6:.2f} M backbone parameters\n"
    )
    print("| method | trainable | share of total | what trains |")
    print("|---|---:|---:|---|")
    for name, trainable, total, summary in rows:
        print(
            f"| `{name}` | {trainable:,} | "
            f"{100 * trainable / total:.2f} % | {summary} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
