"""Trainable parameters per PET method on a full-size architecture.

Random weights (``WavLMConfig()`` defaults are the WavLM Base+ sizes,
``Wav2Vec2BertConfig()`` defaults those of ``facebook/w2v-bert-2.0``), saved
and loaded like a hub checkpoint, every method with its default options.
Prints a Markdown table for docs/methods.md (section Methods; with
``--backbone w2v-bert``, section W2V-BERT 2.0 (Conformer)).

    python benchmarks/param_table.py [--backbone wavlm|w2v-bert]
"""

import argparse
import sys
import tempfile

from training_cost import BACKBONES
from transformers import AutoModel

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wavlm", choices=tuple(BACKBONES))
    args = parser.parse_args()
    _, title, _, make_config = BACKBONES[args.backbone]
    with tempfile.TemporaryDirectory() as tmp:
        AutoModel.from_config(make_config()).save_pretrained(tmp)
        rows = []
        for name, method in PET_METHODS.items():
            enc = PETEncoder(tmp, method=name)
            trainable, total = enc.count_parameters()
            rows.append((name, trainable, total, method.summary))
            backbone = sum(p.numel() for p in enc.backbone.parameters())
            del enc
    print(f"{title} architecture: {backbone / 1e6:.2f} M backbone parameters\n")
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
