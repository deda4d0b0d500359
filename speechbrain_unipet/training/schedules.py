"""Schedules of training progress: the AAM margin and the learning rate,
as WeSpeaker defines them (``wespeaker/utils/schedulers.py``).

Both are functions of the progress in epochs, ``training_progress``: at
the ``i``-th batch (0-based) of 1-based epoch ``e`` it is ``e - 1 + i /
steps_per_epoch``, which is WeSpeaker's ``cur_iter / epoch_iter`` (its
``cur_iter = (epoch - 1) * epoch_iter + i``). They are updated every step
and, being functions of the progress, come back right on a resumed run
without a state of their own in the checkpoint.

**Margin.**
Large-margin losses converge badly from random back-ends when the margin is
on from the first step; WeSpeaker and 3D-Speaker raise it from 0 to its
target over the first epochs, updated every step. SpeechBrain's
``AdditiveAngularMargin`` computes ``cos(m)``, ``sin(m)`` and its
thresholds once in ``__init__``, so changing ``.margin`` alone does
nothing: ``set_margin`` updates all of them.

**Learning rate.**
WeSpeaker scales the configured ``initial_lr`` by ``scale_ratio =
world_size * batch_size / 64`` (its ``ExponentialDecrease`` and the other
``BaseClass`` schedulers): its effective rate is ``initial_lr *
world_size * batch_size / 64``. The recipe's ``lr`` and ``lr_pet`` are
effective rates, so a WeSpeaker config copies as ``lr = initial_lr *
world_size * batch_size / 64`` (scale them yourself when the number of
GPUs or the batch changes), ``lr_final_ratio = final_lr / initial_lr``.
``WarmupLR_withStepDecay`` ignores ``scale_ratio``: there ``lr`` is the
optimizer's ``lr`` as written.

Authors
 * speechbrain-unipet contributors 2026
"""

import math

SCHEDULE_TYPES = ("linear", "exp")


LR_SCHEDULES = ("linear", "warmup_exp", "warmup_step")


def training_progress(epoch, step, steps_per_epoch):
    """Epochs done before a training step, as the recipe drives the
    schedules: SpeechBrain counts epochs from 1 and increments
    ``Brain.step`` before each batch, so batch ``step - 1`` (0-based) of
    the epoch is about to run.

    Arguments
    ---------
    epoch : int
        1-based epoch.
    step : int
        ``Brain.step`` in ``on_fit_batch_start`` (1 for the first batch).
    steps_per_epoch : int
        Batches per epoch and process.

    Returns
    -------
    float
        WeSpeaker's ``cur_iter / epoch_iter``.

    Example
    -------
    >>> [training_progress(2, s, 4) for s in (1, 2, 4)]
    [1.0, 1.25, 1.75]
    """
    return epoch - 1 + (step - 1) / max(1, steps_per_epoch)


def set_margin(aam, margin):
    """Sets the margin of an ``AdditiveAngularMargin`` and the constants
    its ``forward`` derives from it (a loss with its own ``set_margin``,
    such as ``InterTopKAdditiveAngularMargin``, updates its own).

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
    if hasattr(aam, "set_margin"):
        aam.set_margin(margin)
        return
    aam.margin = margin
    aam.cos_m = math.cos(margin)
    aam.sin_m = math.sin(margin)
    aam.th = math.cos(math.pi - margin)
    aam.mm = math.sin(math.pi - margin) * margin


class MarginScheduler:
    """The AAM margin as a function of training progress, WeSpeaker's
    ``MarginScheduler``: ``initial_margin`` before epoch
    ``increase_start_epoch``, rising to ``final_margin`` until epoch
    ``fix_start_epoch``, then fixed.

    Epochs are numbered from 1 as in WeSpeaker's configs (and
    SpeechBrain's epoch counter): the increase begins at the first step of
    epoch ``increase_start_epoch`` (progress ``increase_start_epoch - 1``)
    and the margin is ``final_margin`` from the first step of epoch
    ``fix_start_epoch``. A ``fix_start_epoch`` of 0 or 1 (WeSpeaker's
    fixed-margin configs write 1, 1) fixes it from the start.

    At fraction ``t`` of the increase, the margin is ``initial + (final -
    initial) * r``, with ``r = t`` (linear) or WeSpeaker's exponential ``r
    = 1 - exp(t * log(1e-3 / (1 + 1e-6)))``, which rises fast and ends
    just below 1 (0.999) before the fixed margin takes over.

    Arguments
    ---------
    aam : speechbrain.nnet.losses.AdditiveAngularMargin
        The loss whose margin is scheduled.
    final_margin : float
        Target margin.
    initial_margin : float
        Margin before the increase.
    increase_start_epoch : float
        1-based epoch at whose start the increase begins.
    fix_start_epoch : float
        1-based epoch from whose start the margin is ``final_margin``.
    increase_type : str
        ``exp`` (WeSpeaker's default) or ``linear``.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin
    >>> aam = AdditiveAngularMargin(0.2, 30)
    >>> schedule = MarginScheduler(aam, 0.2, 0.0, 2, 4, "linear")
    >>> [round(schedule(p), 3) for p in (0.0, 0.99, 1.0, 2.0, 3.0, 5.0)]
    [0.0, 0.0, 0.0, 0.1, 0.2, 0.2]
    >>> aam.margin
    0.2
    """

    def __init__(
        self,
        aam,
        final_margin=0.2,
        initial_margin=0.0,
        increase_start_epoch=0.0,
        fix_start_epoch=0.0,
        increase_type="exp",
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
        # WeSpeaker's (epoch - 1) * epoch_iter, in epochs.
        start = self.increase_start_epoch - 1
        fix = self.fix_start_epoch - 1
        # The fixed margin first, as WeSpeaker: equal epochs never divide
        # by a zero-length increase.
        if progress >= fix:
            return self.final_margin
        if progress < start:
            return self.initial_margin
        t = (progress - start) / (fix - start)
        if self.increase_type == "linear":
            ratio = t
        else:
            ratio = 1.0 - math.exp(t * math.log(1e-3 / (1.0 + 1e-6)))
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

    * ``linear``: from 1 to ``final_ratio`` over ``epochs``;
    * ``warmup_exp``, WeSpeaker's ``ExponentialDecrease``: an exponential
      decay from 1 to ``final_ratio`` over ``epochs``, from the first
      step, times a warm-up coefficient rising linearly from
      ``warmup_start`` to 1 over ``warmup_epochs``: ``(warmup_start + (1
      - warmup_start) * min(p / warmup_epochs, 1)) * final_ratio ** (p /
      epochs)``. WeSpeaker's ``warm_from_zero: True`` is ``warmup_start=0``;
      ``False`` is ``1 / scale_ratio`` when ``scale_ratio = world_size *
      batch_size / 64`` is above 1, else 1 (no warm-up);
    * ``warmup_step``, WeSpeaker's ``WarmupLR_withStepDecay`` (its
      W2V-BERT recipe): with ``W = warmup_epochs * steps_per_epoch``
      warm-up steps (WeSpeaker's ``warmup_step`` counts epochs: it is
      multiplied by ``epoch_iter``), at 0-based step ``i``, ``(i + 1) /
      (W + 1)`` for ``i < W``, then ``decay_gamma ** ((i - W) //
      (decay_epochs * steps_per_epoch))`` (``decay_epochs`` 0: no decay).
      Needs ``steps_per_epoch``.

    SpeechBrain's ``WarmAndExpDecayLRSchedule`` counts steps (the total is
    only known at run time), holds a single base rate for every parameter
    group and keeps a step counter in the checkpoint; the recipe has two
    optimisers with their own rates, so the factor is computed here from
    the progress. For WeSpeaker's learning-rate scale, see the module
    docstring.

    Arguments
    ---------
    schedule : str
        ``linear``, ``warmup_exp`` or ``warmup_step``.
    epochs : float
        Length of the schedule (the number of epochs).
    final_ratio : float
        Factor reached at ``epochs`` (``linear``, ``warmup_exp``).
    warmup_epochs : float
        Warm-up length (``warmup_exp``, ``warmup_step``).
    warmup_start : float
        Warm-up coefficient at the first step (``warmup_exp``), in [0, 1].
    decay_epochs : float
        Epochs between decays (``warmup_step``; 0: none).
    decay_gamma : float
        Factor of each decay (``warmup_step``).

    Example
    -------
    >>> lr = LearningRateSchedule("warmup_exp", 10, 0.01, warmup_epochs=1)
    >>> [round(lr(p), 4) for p in (0.0, 0.5, 1.0, 5.0, 10.0)]
    [0.0, 0.3972, 0.631, 0.1, 0.01]
    >>> [
    ...     round(LearningRateSchedule("linear", 10, 0.1)(p), 4)
    ...     for p in (0, 5, 10)
    ... ]
    [1.0, 0.55, 0.1]
    >>> steps = LearningRateSchedule(
    ...     "warmup_step", 15, warmup_epochs=0.2, decay_epochs=5
    ... )
    >>> [round(steps(p, 10), 4) for p in (0, 0.1, 0.2, 5.1, 5.2)]
    [0.3333, 0.6667, 1.0, 1.0, 0.1]
    """

    def __init__(
        self,
        schedule,
        epochs,
        final_ratio=0.1,
        warmup_epochs=0.0,
        warmup_start=0.0,
        decay_epochs=0.0,
        decay_gamma=0.1,
    ):
        if schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr schedule '{schedule}' must be one of {list(LR_SCHEDULES)}"
            )
        if not final_ratio > 0:
            raise ValueError(f"final_ratio={final_ratio} must be positive")
        if schedule != "linear" and not 0 <= warmup_epochs < epochs:
            raise ValueError(
                f"warmup_epochs={warmup_epochs} must be at least 0 and "
                f"less than the {epochs} epochs"
            )
        if not 0 <= warmup_start <= 1:
            raise ValueError(f"warmup_start={warmup_start} must be in [0, 1]")
        if not decay_epochs >= 0:
            raise ValueError(f"decay_epochs={decay_epochs} must be >= 0")
        if not decay_gamma > 0:
            raise ValueError(f"decay_gamma={decay_gamma} must be positive")
        self.schedule = schedule
        self.epochs = epochs
        self.final_ratio = final_ratio
        self.warmup_epochs = warmup_epochs
        self.warmup_start = warmup_start
        self.decay_epochs = decay_epochs
        self.decay_gamma = decay_gamma

    def __call__(self, progress, steps_per_epoch=None):
        """The factor at ``progress`` epochs.

        Arguments
        ---------
        progress : float
            Epochs done (``training_progress``).
        steps_per_epoch : int
            Batches per epoch and process (``warmup_step`` only).

        Returns
        -------
        float
        """
        if self.schedule == "linear":
            t = min(max(progress / self.epochs, 0.0), 1.0)
            return 1.0 + (self.final_ratio - 1.0) * t
        if self.schedule == "warmup_exp":
            coeff = 1.0
            if progress < self.warmup_epochs:
                coeff = self.warmup_start + (1.0 - self.warmup_start) * (
                    progress / self.warmup_epochs
                )
            return coeff * self.final_ratio ** (progress / self.epochs)
        if not steps_per_epoch:
            raise ValueError("lr schedule 'warmup_step' needs steps_per_epoch")
        # The step index: progress is a whole number of steps.
        step = round(progress * steps_per_epoch)
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.decay_epochs <= 0:
            return 1.0
        decay = max(1, round(self.decay_epochs * steps_per_epoch))
        return self.decay_gamma ** ((step - warmup) // decay)
