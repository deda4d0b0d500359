"""The margin and learning-rate schedules, step by step against references
written from WeSpeaker's definitions (``wespeaker/utils/schedulers.py``,
iteration-based: ``cur_iter = (epoch - 1) * epoch_iter + i``), with ours
driven as the recipe drives them (``SpeakerBrain.on_fit_batch_start``);
through the recipe: ``tests/integration/test_training_stages.py``."""

import functools
import importlib.util
import math
import types

import pytest
import torch
from helpers import RECIPE
from speechbrain.nnet.losses import AdditiveAngularMargin

from speechbrain_unipet.training.losses import InterTopKAdditiveAngularMargin
from speechbrain_unipet.training.schedules import (
    LearningRateSchedule,
    MarginScheduler,
    set_margin,
)


# ------------------------------------------------ WeSpeaker, as defined
def wespeaker_margin(it, epoch_iter, initial, final, start, fix, kind):
    """MarginScheduler: epochs counted from 1, the exponential ratio
    1 - exp(t * log(1e-3 / (1 + 1e-6)))."""
    start_it, fix_it = (start - 1) * epoch_iter, (fix - 1) * epoch_iter
    if it >= fix_it:
        return final
    if it < start_it:
        return initial
    t = (it - start_it) / (fix_it - start_it)
    ratio = t if kind == "linear" else 1 - (1e-3 / (1 + 1e-6)) ** t
    return initial + (final - initial) * ratio


def wespeaker_exponential_decrease(
    it, epoch_iter, epochs, initial, final, warm_up, scale, from_zero
):
    """ExponentialDecrease: the rate, scale_ratio included."""
    warm_it = warm_up * epoch_iter
    coeff = scale
    if it < warm_it:
        if from_zero:
            coeff = scale * it / warm_it
        elif scale > 1:
            coeff = 1 + (scale - 1) * it / warm_it
    return coeff * initial * (final / initial) ** (it / (epochs * epoch_iter))


def wespeaker_warmup_step_decay(it, epoch_iter, lr, warmup, decay, gamma):
    """WarmupLR_withStepDecay: warm-up and decay both given in epochs (its
    __init__ multiplies warmup_step and decay_step by epoch_iter)."""
    warm_it = warmup * epoch_iter
    if it < warm_it:
        return lr * (it + 1) / (warm_it + 1)
    if decay <= 0:
        return lr
    return lr * gamma ** ((it - warm_it) // (decay * epoch_iter))


# --------------------------------------------- ours, as the recipe runs
@functools.cache
def recipe_brain_class():
    spec = importlib.util.spec_from_file_location(
        "train_speaker_embeddings", RECIPE / "train_speaker_embeddings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SpeakerBrain


def drive_like_the_recipe(margin_scheduler, lr_annealing, epochs, epoch_iter):
    """(margin, backend rate) before each batch of a SpeechBrain run: the
    recipe's own ``on_fit_batch_start`` on a stand-in Brain, ``step``
    incremented before each batch as ``Brain._fit_train`` does."""
    brain_class = recipe_brain_class()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(
            margin_scheduler=margin_scheduler, lr_annealing=lr_annealing
        ),
        optimizers_dict={"backend": opt},
        base_lrs={"backend": 1.0},
        steps_per_epoch=epoch_iter,
    )
    seen = []
    for epoch in range(1, epochs + 1):
        brain.current_epoch, brain.step = epoch, 0
        for _ in range(epoch_iter):
            brain.step += 1
            brain_class.on_fit_batch_start(brain, None, True)
            seen.append((brain.margin, opt.param_groups[0]["lr"]))
    return seen


EPOCH_ITER = 7


@pytest.mark.parametrize("kind", ["exp", "linear"])
@pytest.mark.parametrize(
    "scale, from_zero", [(1.0, True), (2.0, True), (2.0, False), (0.5, False)]
)
def test_but_mhfa_schedule_at_every_step(kind, scale, from_zero):
    """BUT's MHFA config: margin 0 -> 0.2, increase_start_epoch 2,
    fix_start_epoch 5; ExponentialDecrease 5e-3 -> 5e-5 over 30 epochs with
    3 warm-up epochs (scale_ratio = GPUs * batch / 64)."""
    aam = InterTopKAdditiveAngularMargin(0.0, 32, top_k=5)
    margin = MarginScheduler(aam, 0.2, 0.0, 2, 5, kind)
    # WeSpeaker -> ours: lr = initial_lr * scale_ratio; warm_from_zero:
    # False starts the warm-up at 1 / scale_ratio (above 1), else no warm-up.
    start = 0.0 if from_zero else (1 / scale if scale > 1 else 1.0)
    lr = LearningRateSchedule("warmup_exp", 30, 5e-5 / 5e-3, 3, start)
    seen = drive_like_the_recipe(margin, lr, 30, EPOCH_ITER)
    for it, (got_margin, got_factor) in enumerate(seen):
        want = wespeaker_margin(it, EPOCH_ITER, 0.0, 0.2, 2, 5, kind)
        assert got_margin == pytest.approx(want, abs=1e-12), it
        rate = wespeaker_exponential_decrease(
            it, EPOCH_ITER, 30, 5e-3, 5e-5, 3, scale, from_zero
        )
        assert 5e-3 * scale * got_factor == pytest.approx(rate, rel=1e-12)
    # The loss holds the last margin set, and its inter-top-k penalty
    # follows it (0.06 at 0.2).
    assert aam.margin == seen[-1][0] == 0.2
    assert aam.penalty == pytest.approx(0.06)
    # The margin starts rising at the first step of epoch 2 and is fixed
    # from the first step of epoch 5.
    margins = [m for m, _ in seen]
    assert margins[EPOCH_ITER] == 0.0 < margins[EPOCH_ITER + 1]
    assert margins[4 * EPOCH_ITER - 1] < 0.2 == margins[4 * EPOCH_ITER]


def test_warmup_step_decay_at_every_step():
    """WeSpeaker's W2V-BERT recipe: 5 warm-up epochs, x0.1 every 5 epochs."""
    margin = MarginScheduler(AdditiveAngularMargin(0.2, 32), 0.2, 0.2, 1, 1)
    lr = LearningRateSchedule(
        "warmup_step", 15, warmup_epochs=5, decay_epochs=5, decay_gamma=0.1
    )
    seen = drive_like_the_recipe(margin, lr, 15, EPOCH_ITER)
    for it, (got_margin, got_factor) in enumerate(seen):
        assert got_margin == 0.2
        want = wespeaker_warmup_step_decay(it, EPOCH_ITER, 1.0, 5, 5, 0.1)
        assert got_factor == pytest.approx(want, rel=1e-12), it
    no_decay = LearningRateSchedule("warmup_step", 3, warmup_epochs=2)
    assert [no_decay(i / 4, 4) for i in range(12)] == [
        wespeaker_warmup_step_decay(i, 4, 1.0, 2, 0, 0.1) for i in range(12)
    ]


def test_warmup_exp_decays_under_the_warm_up():
    """ExponentialDecrease decays from the first step: after 3 warm-up
    epochs of 40 with a final ratio of 0.01 the factor is 0.01 ** (3 / 40)."""
    lr = LearningRateSchedule("warmup_exp", 40, 0.01, warmup_epochs=3)
    assert lr(3.0) == pytest.approx(0.708, abs=5e-4)
    assert lr(3.0) == pytest.approx(0.01 ** (3 / 40), rel=1e-12)
    assert lr(0.0) == 0.0 and lr(40.0) == pytest.approx(0.01)


@pytest.mark.parametrize("start, fix", [(0, 0), (1, 1), (0, 1)])
def test_fixed_margin_from_the_start(start, fix):
    """WeSpeaker's fixed-margin configs (1, 1) and ours (0, 0)."""
    aam = AdditiveAngularMargin(0.0, 32)
    schedule = MarginScheduler(aam, 0.3, 0.0, start, fix)
    for it in range(3 * EPOCH_ITER):
        want = wespeaker_margin(it, EPOCH_ITER, 0.0, 0.3, start, fix, "exp")
        assert want == 0.3
        assert schedule(it / EPOCH_ITER) == 0.3 and aam.margin == 0.3


def test_exp_ends_just_below_the_final_margin():
    """WeSpeaker's 1e-6: the last step before the fixed margin is at a
    ratio 1 - 1e-3 / (1 + 1e-6) ** ..., never exactly 1."""
    schedule = MarginScheduler(AdditiveAngularMargin(0.0, 32), 1.0, 0.0, 1, 2)
    assert schedule.margin_at(0.5) == pytest.approx(
        1 - math.sqrt(1e-3 / (1 + 1e-6)), rel=1e-12
    )
    assert schedule.margin_at(1 - 1e-9) < 0.9991


def test_set_margin_gives_the_loss_of_that_margin():
    torch.manual_seed(0)
    cosine = torch.rand(6, 4) * 2 - 1
    targets = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    moving = AdditiveAngularMargin(0.0, 30)
    for margin in (0.0, 0.05, 0.2, 0.5):
        set_margin(moving, margin)
        fixed = AdditiveAngularMargin(margin, 30)
        torch.testing.assert_close(
            moving(cosine, targets), fixed(cosine, targets)
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"final_ratio": 0}, "final_ratio"),
        ({"warmup_epochs": 10}, "warmup_epochs"),
        ({"warmup_start": 1.5}, "warmup_start"),
        ({"decay_epochs": -1}, "decay_epochs"),
        ({"decay_gamma": 0}, "decay_gamma"),
    ],
)
def test_bad_schedule_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LearningRateSchedule("warmup_exp", 10, **{"final_ratio": 0.1, **kwargs})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        LearningRateSchedule("warmup_step", 10)(0.5)
    with pytest.raises(ValueError, match="fix_start_epoch"):
        MarginScheduler(AdditiveAngularMargin(0.0, 32), 0.2, 0.0, 3, 2)
