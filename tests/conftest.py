"""Fixtures of both tiers: tiny random SSL models saved like hub checkpoints,
a tiny extraction setup. Helpers (plain functions) are in ``helpers.py``;
the integration tier's trained runs are in ``integration/conftest.py``.

Tiers (``docs/testing.md``): ``tests/unit`` starts no subprocess and trains
no recipe; ``tests/integration`` holds the recipe runs (in a subprocess or
in-process), torchrun and the benchmarks. Every test under
``tests/integration`` gets the ``integration`` marker, every other one
(doctests included) the ``unit`` marker.
"""

import pathlib

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import LENGTHS, build_modules

from speechbrain_unipet.testing import tiny_ssl_folder

INTEGRATION = pathlib.Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    for item in items:
        path = pathlib.Path(str(item.path)).resolve()
        tier = "integration" if INTEGRATION in path.parents else "unit"
        item.add_marker(tier)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ssl_models")


@pytest.fixture(scope="session")
def ssl_folder(model_root):
    """Returns a function (model_type, pre_ln) -> saved tiny model folder."""

    def make(model_type="wavlm", pre_ln=False):
        return str(tiny_ssl_folder(model_root, model_type, pre_ln))

    return make


@pytest.fixture
def wavs():
    torch.manual_seed(0)
    return torch.randn(3, 4000)


@pytest.fixture(scope="session")
def extraction_setup(tmp_path_factory):
    """A 2-layer tiny WavLM, 7 files of different lengths over 3 speakers,
    and the state of ``helpers.build_modules`` saved (for other processes).
    """
    root = tmp_path_factory.mktemp("extraction")
    ssl = tiny_ssl_folder(root, "wavlm", num_hidden_layers=2)
    audio = root / "audio"
    rng = np.random.default_rng(0)
    for k, n in enumerate(LENGTHS):
        spk = audio / f"spk{k % 3}"
        spk.mkdir(parents=True, exist_ok=True)
        sf.write(spk / f"utt{k}.wav", rng.standard_normal(n) * 0.1, 16000)
    modules = build_modules(ssl)
    state = root / "modules.pt"
    torch.save(torch.nn.ModuleList(modules).state_dict(), state)
    return {"root": root, "ssl": ssl, "audio": audio, "state": state}
