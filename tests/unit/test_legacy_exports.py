"""Folders exported by earlier code still load and embed as they did (the
export of today's runs: ``tests/integration/test_export.py``)."""

import pathlib
import shutil

import pytest
import torch
from speechbrain.inference.speaker import EncoderClassifier

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("method", ["unipet", "lora"])
def test_folders_exported_before_the_redesign_still_load(method, tmp_path):
    """``tests/data/legacy_export_*`` were written by the pre-component
    code (see tests/data/README.md), with the embeddings it computed."""
    data = DATA / f"legacy_export_{method}"
    hub = tmp_path / method
    shutil.copytree(data, hub)
    model = EncoderClassifier.from_hparams(
        source=str(hub), savedir=str(hub), run_opts={"device": "cpu"}
    )
    reference = torch.load(hub / "reference_embeddings.pt")
    wavs = reference["wavs"]
    lens = torch.tensor([1.0, 11000 / 16000])
    torch.testing.assert_close(
        model.encode_batch(wavs, lens),
        reference["embeddings"],
        atol=1e-5,
        rtol=0,
    )
