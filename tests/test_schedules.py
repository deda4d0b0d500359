"""The AAM margin schedule: the margin at step k, and the loss it gives."""

import csv
import math
import re

import pytest
import torch
from speechbrain.nnet.losses import AdditiveAngularMargin
from test_recipe import recipe_env, train  # noqa: F401 -- shared fixture

from speechbrain_unipet.schedules import MarginScheduler, set_margin


@pytest.mark.parametrize("kind", ["linear", "exp"])
def test_margin_at_each_step(kind):
    aam = AdditiveAngularMargin(0.3, 30)
    schedule = MarginScheduler(aam, 0.3, 0.0, 2, 6, kind)
    steps_per_epoch = 10
    for step in range(0, 80):
        progress = step / steps_per_epoch
        t = min(max((progress - 2) / 4, 0.0), 1.0)
        ratio = t if kind == "linear" else 1 - 1e-3**t
        expected = 0.3 * ratio if progress < 6 else 0.3
        assert schedule(progress) == pytest.approx(expected, abs=1e-12)
        assert aam.margin == pytest.approx(expected, abs=1e-12)
    assert schedule.margin_at(4.0) == pytest.approx(
        0.15 if kind == "linear" else 0.3 * (1 - math.sqrt(1e-3))
    )


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


def test_recipe_raises_the_margin_every_step(recipe_env, tmp_path):  # noqa: F811
    out = tmp_path / "margin"
    train(
        recipe_env,
        "frozen",
        out,
        "--number_of_epochs=2",
        "--margin_increase_start=0",
        "--margin_fix_start=2",
    )
    with open(out / "save" / "train.csv", encoding="utf-8") as f:
        steps = len(list(csv.DictReader(f))) // 4  # FAST: batch_size 4
    logged = re.findall(
        r"train loss: [0-9.e+-]+, train margin: ([0-9.e+-]+)",
        (out / "train_log.txt").read_text(),
    )
    # The margin of each epoch's last step: (epoch - 1 + (steps - 1) / steps) / 2
    expected = [0.2 * (e + (steps - 1) / steps) / 2 for e in (0, 1)]
    # (the log keeps 3 significant digits)
    assert [float(m) for m in logged] == pytest.approx(expected, rel=5e-3)
