"""The default UniPET configuration trains ~5.4 % of WavLM Base+."""

import pytest
from transformers import WavLMConfig, WavLMModel

from speechbrain_unipet.lobes import PETEncoder


@pytest.fixture(scope="module")
def base_plus_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavlm_base_plus")
    WavLMModel(WavLMConfig()).save_pretrained(folder)
    return str(folder)


def test_unipet_default_share_on_wavlm_base_plus(base_plus_folder):
    enc = PETEncoder(base_plus_folder, method="unipet")
    trainable, total = enc.count_parameters()
    share = trainable / total
    assert 0.050 <= share <= 0.060, f"unipet trains {100 * share:.2f} %"
    adapters = PETEncoder(base_plus_folder, method="inner_inter_adapter")
    trainable, total = adapters.count_parameters()
    assert 0.045 <= trainable / total <= 0.055  # "only 5 %" (2024 paper)
