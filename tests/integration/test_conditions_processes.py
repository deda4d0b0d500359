"""Robustness conditions are the same in another process (the other
guarantees of the conditions: ``tests/unit/test_conditions.py``)."""

import os
import subprocess
import sys

import torch
from helpers import RATE, speech_like

from speechbrain_unipet.evaluation.conditions import parse_conditions


def test_same_audio_in_another_process(tmp_path):
    # Distributed ranks are separate processes with their own hash salt.
    wav = speech_like(0.5)
    torch.save(wav, tmp_path / "wav.pt")
    code = (
        "import sys, torch\n"
        "from speechbrain_unipet.evaluation.conditions import parse_conditions\n"
        "wav = torch.load(sys.argv[1])\n"
        "out = [c(wav, 16000, 'spk9/utt3') for c in "
        "parse_conditions('noise:3,reverb:0.5')]\n"
        "torch.save(out, sys.argv[2])\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="random")
    subprocess.run(
        [sys.executable, "-c", code, tmp_path / "wav.pt", tmp_path / "o.pt"],
        check=True,
        env=env,
    )
    theirs = torch.load(tmp_path / "o.pt")
    ours = [
        c(wav, RATE, "spk9/utt3")
        for c in parse_conditions("noise:3,reverb:0.5")
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
