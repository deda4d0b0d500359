"""Sub-centre classifier and inter-top-k AAM: against references written
from WeSpeaker's definition (``ArcMarginProduct_intertopk_subcenter``) and
brute force (through the recipe and the exported model:
``tests/integration/test_training_stages.py``)."""

import math

import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_unipet.training.losses import (
    InterTopKAdditiveAngularMargin,
    SubCenterClassifier,
)
from speechbrain_unipet.training.schedules import set_margin


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


# WeSpeaker's ArcMarginProduct_intertopk_subcenter, written here from its
# definition: target cos(theta + m) while theta + m < pi, else cos - mmm with
# mmm = 1 + cos(pi - m) (SpeechBrain: cos - sin(pi - m) * m); the k_top
# highest non-target cosines cos(theta - mp), mp = 0.06 * m / 0.2 for
# m > 0.001, else 0; everything times the scale.
def reference_logits(cosine, target, m, scale, k_top, fallback):
    mp = 0.06 * m / 0.2 if m > 0.001 else 0.0
    offset = (
        1 + math.cos(math.pi - m)
        if fallback == "wespeaker"
        else (math.sin(math.pi - m) * m)
    )
    logits = torch.empty(cosine.shape, dtype=torch.float64)
    for n in range(cosine.shape[0]):
        others = [c for c in range(cosine.shape[1]) if c != target[n]]
        hardest = sorted(others, key=lambda c: -float(cosine[n, c]))[:k_top]
        for c in range(cosine.shape[1]):
            x = float(cosine[n, c])
            theta = math.acos(x)
            if c == target[n]:
                value = (
                    math.cos(theta + m) if theta + m < math.pi else x - offset
                )
            elif c in hardest:
                value = math.cos(theta - mp)
            else:
                value = x
            logits[n, c] = scale * value
    return logits


# Target cosines below cos(pi - m) for m = 0.01 (-0.99999), 0.2 (-0.995)
# and 0.5 (-0.95): the fallback branch.
TARGET_COSINES = [-0.99999, -0.995, -0.95, -0.5, 0.3, 0.9]


def cosines_and_targets(classes=7):
    torch.manual_seed(1)
    cosine = torch.rand(len(TARGET_COSINES), classes) * 1.8 - 0.9
    target = torch.randint(0, classes, (len(TARGET_COSINES),))
    cosine[torch.arange(len(target)), target] = torch.tensor(TARGET_COSINES)
    return cosine, target


@pytest.mark.parametrize("fallback", ["wespeaker", "speechbrain"])
@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("margin", [0.0, 0.001, 0.01, 0.2, 0.5])
def test_inter_top_k_logits_match_wespeaker(margin, top_k, fallback):
    cosine, target = cosines_and_targets()
    one_hot = torch.nn.functional.one_hot(target, 7).float()
    expected = reference_logits(cosine, target, margin, 32, top_k, fallback)
    built = InterTopKAdditiveAngularMargin(
        margin, 32, top_k=top_k, top_k_margin=0.06, fallback=fallback
    )
    scheduled = InterTopKAdditiveAngularMargin(
        0.0, 32, top_k=top_k, top_k_margin=0.06, fallback=fallback
    )
    set_margin(scheduled, margin)  # the margin schedule's way of changing it
    for aam in (built, scheduled):
        got = aam(cosine, one_hot).double()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        # The loss: cross-entropy of those logits.
        loss = LogSoftmaxWrapper(aam)(cosine[:, None], target[:, None])
        ce = torch.nn.functional.cross_entropy(expected, target)
        assert float(loss) == pytest.approx(float(ce), abs=1e-4)
    if fallback == "speechbrain" and top_k == 0:
        plain = AdditiveAngularMargin(margin, 32)
        torch.testing.assert_close(
            built(cosine, one_hot), plain(cosine, one_hot)
        )


def test_wespeaker_fallback_is_continuous_at_the_threshold():
    margin = 0.5
    aam = InterTopKAdditiveAngularMargin(margin, 1, top_k=0)
    edge = math.cos(math.pi - margin)
    cos = torch.tensor([[edge + 1e-5], [edge - 1e-5]], dtype=torch.float64)
    logits = aam(cos, torch.ones(2, 1))
    assert float(logits[0, 0]) == pytest.approx(-1.0, abs=1e-3)
    assert float(logits[1, 0]) == pytest.approx(-1.0, abs=1e-3)


def test_sub_centres_with_inter_top_k_match_wespeaker():
    torch.manual_seed(2)
    classes, k = 6, 3
    clf = SubCenterClassifier(5, out_neurons=classes, sub_centers=k)
    aam = InterTopKAdditiveAngularMargin(0.0, 32, top_k=2)
    x = torch.randn(4, 1, 5)
    target = torch.tensor([0, 3, 5, 3])
    unit = torch.nn.functional.normalize
    # WeSpeaker: (batch, classes * K) cosines viewed as (batch, classes, K),
    # the largest of each class's K.
    flat = unit(x[:, 0], dim=1) @ unit(clf.weight.detach(), dim=1).T
    cosine = flat.view(4, classes, k).amax(dim=-1)
    for margin in (0.0, 0.1, 0.2):
        set_margin(aam, margin)
        expected = reference_logits(cosine, target, margin, 32, 2, "wespeaker")
        one_hot = torch.nn.functional.one_hot(target, classes).float()
        got = aam(clf(x).detach()[:, 0], one_hot).double()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k_margin": 2.0}, "top_k_margin"),
        ({"fallback": "arcface"}, "fallback"),
    ],
)
def test_bad_loss_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        InterTopKAdditiveAngularMargin(0.2, 30, **kwargs)
    with pytest.raises(ValueError, match="sub_centers"):
        SubCenterClassifier(4, 3, sub_centers=0)
