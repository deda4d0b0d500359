"""On-disk size of an exported model per PET method, WavLM Base+ architecture.

    python benchmarks/export_sizes.py

Random weights (sizes are what matter). The PET file is what
``export`` writes as ``ssl_encoder.ckpt``; the back-end is the recipe's
ECAPA-TDNN (C=512, 192-d) + a 1,211-speaker classifier (VoxCeleb1).
"""

import io
import sys
import tempfile

import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from transformers import WavLMConfig, WavLMModel

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder


def nbytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def main():
    ecapa = ECAPA_TDNN(
        768, channels=[512, 512, 512, 512, 1536], lin_neurons=192
    )
    backend = nbytes(ecapa.state_dict()) + nbytes(
        Classifier(192, out_neurons=1211).state_dict()
    )
    with tempfile.TemporaryDirectory() as tmp:
        WavLMModel(WavLMConfig()).save_pretrained(tmp)
        sizes = {}
        for name in PET_METHODS:
            enc = PETEncoder(tmp, method=name)
            state = {k: v.cpu() for k, v in enc.pet_state_dict().items()}
            sizes[name] = nbytes({"meta": enc.pet_metadata(), "state": state})
        backbone = nbytes(enc.backbone.model.state_dict())
    full = backbone + backend
    print(
        f"Backbone (WavLM Base+) {backbone / 1e6:.1f} MB; back-end {backend / 1e6:.1f} MB\n"
    )
    print(
        "| method | PET file | PET / backbone | export without backbone | vs full fine-tuned export |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, size in sizes.items():
        print(
            f"| `{name}` | {size / 1e6:.2f} MB | {100 * size / backbone:.2f} % | "
            f"{(size + backend) / 1e6:.1f} MB | {100 * (size + backend) / full:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
