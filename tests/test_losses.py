"""Sub-centre classifier and inter-top-k AAM: against brute-force
references, and through the recipe and the exported model."""

import math

import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin
from test_export import load_in_fresh_process
from test_recipe import recipe_env, train  # noqa: F401 -- shared fixture
from test_training_stages import checkpoints, ckpt_state, speakers

from speechbrain_unipet.export import export
from speechbrain_unipet.losses import (
    InterTopKAdditiveAngularMargin,
    SubCenterClassifier,
)
from speechbrain_unipet.schedules import set_margin


def test_one_sub_center_is_speechbrains_classifier():
    torch.manual_seed(0)
    mine, theirs = SubCenterClassifier(6, 4), Classifier(6, out_neurons=4)
    theirs.load_state_dict(mine.state_dict())
    x = torch.randn(3, 1, 6)
    torch.testing.assert_close(mine(x), theirs(x))


def test_each_class_takes_its_closest_sub_center():
    torch.manual_seed(0)
    clf = SubCenterClassifier(5, out_neurons=3, sub_centers=4)
    x = torch.randn(2, 1, 5)
    out = clf(x)
    unit = torch.nn.functional.normalize
    for b in range(2):
        for c in range(3):
            rows = clf.weight.detach()[c * 4 : (c + 1) * 4]
            cosines = unit(rows, dim=1) @ unit(x[b, 0], dim=0)
            assert float(out[b, 0, c].detach()) == pytest.approx(
                float(cosines.max()), abs=1e-6
            )
    # Only the winning sub-centre of a class learns from it.
    out[0, 0, 1].backward()
    touched = clf.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert len(touched) == 1 and 4 <= touched[0] < 8


def brute_force_logits(cosine, target, margin, scale, top_k, top_k_margin):
    logits = torch.empty_like(cosine)
    for n in range(cosine.shape[0]):
        others = [c for c in range(cosine.shape[1]) if c != target[n]]
        hardest = sorted(others, key=lambda c: -float(cosine[n, c]))[:top_k]
        for c in range(cosine.shape[1]):
            theta = math.acos(float(cosine[n, c]))
            if c == target[n]:
                value = (
                    math.cos(theta + margin)
                    if theta + margin < math.pi
                    else float(cosine[n, c])
                    - math.sin(math.pi - margin) * margin
                )
            elif c in hardest and margin > 1e-3:
                value = math.cos(theta - top_k_margin)
            else:
                value = float(cosine[n, c])
            logits[n, c] = scale * value
    return logits


@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_inter_top_k_logits_match_brute_force(top_k, margin):
    torch.manual_seed(1)
    cosine = torch.rand(5, 6) * 1.8 - 0.9
    target = torch.randint(0, 6, (5,))
    one_hot = torch.nn.functional.one_hot(target, 6).float()
    aam = InterTopKAdditiveAngularMargin(
        0.0, 30, top_k=top_k, top_k_margin=0.06
    )
    set_margin(aam, margin)  # the margin schedule's way of changing it
    expected = brute_force_logits(cosine, target, margin, 30, top_k, 0.06)
    torch.testing.assert_close(
        aam(cosine, one_hot), expected, atol=1e-4, rtol=0
    )
    if top_k == 0 or margin == 0.0:
        plain = AdditiveAngularMargin(margin, 30)
        torch.testing.assert_close(aam(cosine, one_hot), plain(cosine, one_hot))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"top_k": -1}, "top_k"), ({"top_k_margin": 2.0}, "top_k_margin")],
)
def test_bad_loss_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        InterTopKAdditiveAngularMargin(0.2, 30, **kwargs)
    with pytest.raises(ValueError, match="sub_centers"):
        SubCenterClassifier(4, 3, sub_centers=0)


def test_recipe_with_sub_centers_top_k_and_speeds_exports_speaker_classes(
    recipe_env,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "sc"
    train(
        recipe_env,
        "frozen",
        out,
        "--sub_centers=3",
        "--top_k=2",
        "--speed_perturb=True",
    )
    (ckpt,) = checkpoints(out)
    n = speakers(out)
    weight = ckpt_state(ckpt, "classifier")["weight"]
    assert weight.shape[0] == 3 * 3 * n  # speeds x sub-centres x speakers
    hub = export(out, tmp_path / "hub")
    exported = torch.load(hub / "classifier.ckpt", weights_only=True)
    torch.testing.assert_close(exported["weight"], weight[: 3 * n])
    got = load_in_fresh_process(hub, recipe_env["data"], tmp_path, tmp_path)
    assert got["labels"][0].startswith("id")
