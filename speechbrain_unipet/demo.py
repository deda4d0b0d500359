"""Offline demo of the PET encoder: every method on a tiny random WavLM.

    python -m speechbrain_unipet.demo

Builds a tiny random-weight WavLM, saves it like a hub checkpoint, then for
every PET method takes a few optimiser steps on a toy task and prints the
trainable share and the loss. Real speaker verification needs a pretrained
hub model and the recipe in ``recipes/VoxCeleb/SpeakerRec``.
"""

import sys
import tempfile

import torch

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder
from speechbrain_unipet.testing import tiny_ssl_folder


def main(steps=5):
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_ssl_folder(tmp, "wavlm")
        wavs = torch.randn(4, 8000)
        lens = torch.tensor([1.0, 0.9, 0.75, 0.6])
        target = torch.randn(4, 1, 32)
        print(
            f"{'method':<22}{'trainable':>10}{'share':>9}  loss: first -> last"
        )
        for name in PET_METHODS:
            enc = PETEncoder(folder, method=name).train()
            trainable, total = enc.count_parameters()
            opt = torch.optim.Adam(
                [p for p in enc.parameters() if p.requires_grad], lr=1e-2
            )
            losses = []
            for _ in range(steps):
                opt.zero_grad()
                loss = ((enc(wavs, lens) - target) ** 2).mean()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            print(
                f"{name:<22}{trainable:>10,}{100 * trainable / total:>8.1f}%"
                f"  {losses[0]:.4f} -> {losses[-1]:.4f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
