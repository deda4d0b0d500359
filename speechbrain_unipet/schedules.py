"""Schedules of training progress: the AAM margin and the learning rate.

Both are functions of the progress in epochs (``epoch - 1 + step /
steps_per_epoch``), updated every step, as in WeSpeaker. Being functions of
the progress, they come back right on a resumed run without a state of
their own in the checkpoint.

**Margin.**
Large-margin losses converge badly from random back-ends when the margin is
on from the first step; WeSpeaker and 3D-Speaker raise it from 0 to its
target over the first epochs, updated every step. SpeechBrain's
``AdditiveAngularMargin`` computes ``cos(m)``, ``sin(m)`` and its
thresholds once in ``__init__``, so changing ``.margin`` alone does
nothing: ``set_margin`` updates all of them.

Authors
 * speechbrain-unipet contributors 2026
"""

import math

SCHEDULE_TYPES = ("linear", "exp")
LR_SCHEDULES = ("linear", "warmup_exp")


def set_margin(aam, margin):
    """Sets the margin of an ``AdditiveAngularMargin`` and the constants
    its ``forward`` derives from it.

    Arguments
    ---------
    aam : speechbrain.nnet.losses.AdditiveAngularMargin
        The loss (for ``LogSoftmaxWrapper``, its ``loss_fn``).
    margin : float
        The new margin (radians).

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin
    >>> scheduled, fixed = (
    ...     AdditiveAngularMargin(0.0, 30),
    ...     AdditiveAngularMargin(0.2, 30),
    ... )
    >>> set_margin(scheduled, 0.2)
    >>> cos, target = torch.tensor([[0.5, 0.1]]), torch.tensor([[1.0, 0.0]])
    >>> torch.equal(scheduled(cos, target), fixed(cos, target))
    True
    """
    aam.margin = margin
    aam.cos_m = math.cos(margin)
    aam.sin_m = math.sin(margin)
    aam.th = math.cos(math.pi - margin)
    aam.mm = math.sin(math.pi - margin) * margin


class MarginScheduler:
    """The AAM margin as a function of training progress (in epochs),
    WeSpeaker's ``MarginScheduler``: ``initial_margin`` until
    ``increase_start_epoch``, then rising to ``final_margin`` by
    ``fix_start_epoch`` (linearly, or exponentially: ``1 - 1e-3 ** t`` of
    the way at fraction ``t``), then fixed.

    Arguments
    ---------
    aam : speechbrain.nnet.losses.AdditiveAngularMargin
        The loss whose margin is scheduled.
    final_margin : float
        Target margin.
    initial_margin : float
        Margin before the increase.
    increase_start_epoch : float
        When the increase starts (epochs, 0-based progress).
    fix_start_epoch : float
        When the margin reaches ``final_margin``.
    increase_type : str
        ``linear`` or ``exp``.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin
    >>> aam = AdditiveAngularMargin(0.2, 30)
    >>> schedule = MarginScheduler(aam, 0.2, 0.0, 1, 3)
    >>> [round(schedule(p), 3) for p in (0.0, 1.0, 2.0, 3.0, 5.0)]
    [0.0, 0.0, 0.1, 0.2, 0.2]
    >>> aam.margin
    0.2
    """

    def __init__(
        self,
        aam,
        final_margin=0.2,
        initial_margin=0.0,
        increase_start_epoch=0.0,
        fix_start_epoch=1.0,
        increase_type="linear",
    ):
        if increase_type not in SCHEDULE_TYPES:
            raise ValueError(
                f"increase_type '{increase_type}' must be one of "
                f"{list(SCHEDULE_TYPES)}"
            )
        if fix_start_epoch < increase_start_epoch:
            raise ValueError(
                f"fix_start_epoch={fix_start_epoch} must not come before "
                f"increase_start_epoch={increase_start_epoch}"
            )
        self.aam = aam
        self.final_margin = final_margin
        self.initial_margin = initial_margin
        self.increase_start_epoch = increase_start_epoch
        self.fix_start_epoch = fix_start_epoch
        self.increase_type = increase_type

    def margin_at(self, progress):
        """The margin at ``progress`` epochs (no side effect).

        Arguments
        ---------
        progress : float
            Epochs done, e.g. 1.5 half-way through the second epoch.

        Returns
        -------
        float
        """
        span = self.fix_start_epoch - self.increase_start_epoch
        if progress < self.increase_start_epoch:
            return self.initial_margin
        if progress >= self.fix_start_epoch or span <= 0:
            return self.final_margin
        t = (progress - self.increase_start_epoch) / span
        ratio = t if self.increase_type == "linear" else 1.0 - 1e-3**t
        return (
            self.initial_margin
            + (self.final_margin - self.initial_margin) * ratio
        )

    def __call__(self, progress):
        """Sets the loss's margin for ``progress`` epochs; returns it.

        Arguments
        ---------
        progress : float
            Epochs done.

        Returns
        -------
        float
        """
        margin = self.margin_at(progress)
        set_margin(self.aam, margin)
        return margin


class LearningRateSchedule:
    """The factor on the base learning rates as a function of training
    progress (in epochs), updated every step.

    * ``linear``: from 1 to ``final_ratio`` over ``epochs`` (the recipe's
      historical schedule, now per step);
    * ``warmup_exp`` (WeSpeaker's ``ExponentialDecrease`` with warm-up):
      from 0 to 1 linearly over ``warmup_epochs``, then exponentially from
      1 to ``final_ratio`` at ``epochs``.

    SpeechBrain's ``WarmAndExpDecayLRSchedule`` has the same shape but
    counts steps (the total is only known at run time), holds a single
    base rate for every parameter group and keeps a step counter in the
    checkpoint; the recipe has two optimisers with their own rates, so the
    factor is computed here from the progress.

    Arguments
    ---------
    schedule : str
        ``linear`` or ``warmup_exp``.
    epochs : float
        Length of the schedule (the number of epochs).
    final_ratio : float
        Factor reached at ``epochs``.
    warmup_epochs : float
        Linear warm-up from 0 (``warmup_exp`` only).

    Example
    -------
    >>> lr = LearningRateSchedule("warmup_exp", 10, 0.01, warmup_epochs=1)
    >>> [round(lr(p), 4) for p in (0.0, 0.5, 1.0, 5.5, 10.0)]
    [0.0, 0.5, 1.0, 0.1, 0.01]
    >>> [
    ...     round(LearningRateSchedule("linear", 10, 0.1)(p), 4)
    ...     for p in (0, 5, 10)
    ... ]
    [1.0, 0.55, 0.1]
    """

    def __init__(self, schedule, epochs, final_ratio=0.1, warmup_epochs=0.0):
        if schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr schedule '{schedule}' must be one of {list(LR_SCHEDULES)}"
            )
        if not final_ratio > 0:
            raise ValueError(f"final_ratio={final_ratio} must be positive")
        if not 0 <= warmup_epochs < epochs:
            raise ValueError(
                f"warmup_epochs={warmup_epochs} must be at least 0 and "
                f"less than the {epochs} epochs"
            )
        self.schedule = schedule
        self.epochs = epochs
        self.final_ratio = final_ratio
        self.warmup_epochs = warmup_epochs if schedule == "warmup_exp" else 0

    def __call__(self, progress):
        """The factor at ``progress`` epochs.

        Arguments
        ---------
        progress : float
            Epochs done.

        Returns
        -------
        float
        """
        if self.schedule == "linear":
            t = min(max(progress / self.epochs, 0.0), 1.0)
            return 1.0 + (self.final_ratio - 1.0) * t
        if progress < self.warmup_epochs:
            return progress / self.warmup_epochs
        span = self.epochs - self.warmup_epochs
        t = min((progress - self.warmup_epochs) / span, 1.0)
        return self.final_ratio**t
