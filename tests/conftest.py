"""Shared fixtures: tiny random SSL models saved like hub checkpoints."""

import pytest
import torch

from speechbrain_unipet.testing import tiny_ssl_folder

# (model_type, pre_ln): every backbone family in both layer-norm layouts
# that HF implements (data2vec-audio only has the post-LN one).
VARIANTS = [
    ("wavlm", False),
    ("wavlm", True),
    ("hubert", False),
    ("hubert", True),
    ("wav2vec2", False),
    ("wav2vec2", True),
    ("data2vec-audio", False),
]


def variant_id(variant):
    model_type, pre_ln = variant
    return f"{model_type}-{'preln' if pre_ln else 'postln'}"


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


def perturb_pet(enc, seed=1, std=0.05):
    """Moves every trainable tensor away from its (often zero) init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * std)
