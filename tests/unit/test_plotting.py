"""The layer-weight, gate and condition plots: written for every input
shape, refused with a clear error for unusable input."""

import numpy as np
import pytest
import torch

from speechbrain_unipet.evaluation.plotting import (
    plot_conditions,
    plot_gates,
    plot_layer_weights,
)


def softmax(logits):
    e = np.exp(logits - np.max(logits))
    return e / e.sum()


def test_layer_weights_one_set_and_several(tmp_path):
    rng = np.random.default_rng(0)
    one = softmax(rng.normal(size=13))
    plot_layer_weights(one, tmp_path / "one.png")
    plot_layer_weights(
        torch.tensor(one, requires_grad=True), tmp_path / "t.png"
    )
    plot_layer_weights(
        {
            "keys": softmax(rng.normal(size=25)),
            "values": softmax(rng.normal(size=25)).tolist(),
        },
        tmp_path / "mhfa.png",
        title="MHFA",
    )
    for name in ("one", "t", "mhfa"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_gates_and_conditions(tmp_path):
    gates = {
        "inner_adapter": np.linspace(0.1, 0.9, 12),
        "inter_adapter": torch.rand(13),
        "deep_prompt": [0.5] * 12,
    }
    plot_gates(gates, tmp_path / "gates.png")
    rows = [
        {"condition": name, "eer": eer, "min_dcf": dcf, "num_trials": 10}
        for name, eer, dcf in [
            ("clean", 0.01, 0.1),
            ("noise_0dB", 0.12, 0.6),
            ("truncate_1s", 0.05, 0.3),
        ]
    ]
    plot_conditions(rows, tmp_path / "conditions.png", title="demo")
    for name in ("gates", "conditions"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_unusable_input_is_refused(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match="differ in length"):
        plot_layer_weights({"k": [1.0], "v": [0.5, 0.5]}, out)
    with pytest.raises(ValueError, match="no layer weights"):
        plot_layer_weights({}, out)
    with pytest.raises(ValueError, match="'layer weights'.*1-D.*\\(2, 3\\)"):
        plot_layer_weights(np.ones((2, 3)), out)
    with pytest.raises(ValueError, match="no gate values"):
        plot_gates({}, out)
    with pytest.raises(ValueError, match="missing 'min_dcf' in row 'clean'"):
        plot_conditions([{"condition": "clean", "eer": 0.1}], out)
    with pytest.raises(ValueError, match="no condition rows"):
        plot_conditions([], out)
    assert not out.exists()
