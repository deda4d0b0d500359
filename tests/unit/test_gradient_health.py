"""Gradient health of every PET method at init, on tiny random backbones:
post-LN WavLM, pre-LN WavLM, post-LN HuBERT and W2V-BERT 2.0 (Conformer).

Two checks, on the trainable tensors grouped by what they are (``group_of``):

* after one backward at init, every group gets a gradient that is not
  negligible next to the largest group's;
* a few plain SGD steps through each group alone lower a toy loss by a
  stated fraction.

Plain SGD only, never Adam: Adam divides each step by the gradient's running
RMS, so a gradient that is rounding noise still makes a full-size step and
"the tensor changed" proves nothing. Everything runs in float64: a gradient
that is zero in exact arithmetic (a saddle such as AdapterBias's original
``v = ones``, ``alpha = 0`` behind a LayerNorm) then comes out at 1e-13 of
the largest group's or less, where float32 gives up to 1e-5, as much as
some real gradients.
"""

import math
from collections import defaultdict

import pytest
import torch
from helpers import perturb_pet

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder

#: Test id -> (model_type, pre_ln) of ``tiny_ssl_folder``.
BACKBONES = {
    "wavlm-postln": ("wavlm", False),
    "wavlm-preln": ("wavlm", True),
    "hubert-postln": ("hubert", False),
    "w2v-bert": ("wav2vec2-bert", False),
}
#: Backbones where the FFN output reaches everything through a LayerNorm
#: (post-LN layers; the Conformer's final LayerNorm).
LAYERNORM_AFTER_FFN = ("wavlm-postln", "hubert-postln", "w2v-bert")

#: A group whose gradient norm at init is below this fraction of the largest
#: group's is taken as getting no gradient. Measured here (float64, these
#: inputs): the smallest real group is 1.8e-5 of the largest (the 3 layer
#: weights next to full fine-tuning of HuBERT), a gradient that is zero in
#: exact arithmetic at most 1.3e-13 (AdapterBias's saddle init); 1e-9 is
#: about four decades from both (float32 rounding, ~1e-7 and more, would
#: leave no such gap). Per group, not per tensor: in a zero-initialised pair
#: (LoRA's B = 0, an adapter's up = 0, AdapterBias's alpha = 0) the other
#: half has no gradient at init by design, and learns once its partner has
#: moved.
GRAD_FLOOR = 1e-9

#: Groups with (nearly) no gradient at init by construction: UniPET's gates
#: scale branches that start at zero (zero-initialised up-projections), so a
#: gate and its branch are a zero-initialised pair across two groups (the
#: layer gates also scale the deep prompts, hence their small gradient).
#: They are checked after one SGD step of the whole method instead, where a
#: saddle would still be flat.
ZERO_AT_INIT = ("layer_gates", "inter_gates")

#: Learning rate of the joint SGD step before ``ZERO_AT_INIT`` groups are
#: checked (any step that moves the branches off zero does).
JOINT_LR = 0.1

#: Plain SGD steps per group in the descent check ("a few").
STEPS = 3
#: Candidate learning rates, largest first. Group gradients differ by many
#: decades (a softmax over 3 layer weights, 64 deep prompts behind an
#: attention, full fine-tuning), so no single rate fits all (the deep prompts
#: of post-LN WavLM / HuBERT need 1e5 and more, full fine-tuning 0.1 or
#: less); the rate is picked from this fixed grid, never derived from the
#: gradient's norm (that would blow rounding noise up to a full-size step,
#: as Adam does).
LR_GRID = tuple(10.0**k for k in range(6, -4, -1))
#: Armijo's sufficient-decrease constant: each step takes the largest rate of
#: the grid (not above the previous step's) whose step lowers the loss by at
#: least this fraction of what the gradient predicts (``lr * |g|^2``), so no
#: step overshoots and the loss goes down step after step. A flat direction
#: passes the test too, with a decrease of nothing.
ARMIJO = 0.5
#: The loss after ``STEPS`` steps must be at most (1 - this) of the loss at
#: the start. Measured: every group lowers it by 11 % or more (deep prompts
#: in unipet on post-LN WavLM), the saddle by less than 1e-13.
MIN_REL_DECREASE = 0.05
#: Scale of the random move of a group's tensors that defines its teacher
#: target (as ``perturb_pet``'s default).
TEACHER_STD = 0.05


def group_of(name):
    """What a trainable tensor is, from its name in ``named_parameters()``.

    Arguments
    ---------
    name : str
        A parameter name of a ``PETEncoder``.

    Returns
    -------
    str
        The PET child module for ``pet.<child>.*`` (an adapter set, the
        prompts, the gates, AdapterBias), ``lora`` for LoRA factors (they
        parametrise backbone weights), ``backbone weights`` or ``backbone
        biases`` (full fine-tuning, BitFit), else the name itself
        (``layer_weights``).

    Example
    -------
    >>> group_of("pet.inner_ffn.0.up.weight"), group_of("layer_weights")
    ('inner_ffn', 'layer_weights')
    >>> group_of(
    ...     "backbone.model.encoder.layers.0.attention.q_proj."
    ...     "parametrizations.weight.0.lora_A"
    ... )
    'lora'
    >>> group_of("backbone.model.encoder.layers.0.attention.q_proj.bias")
    'backbone biases'
    """
    parts = name.split(".")
    if parts[0] == "pet":
        return parts[1]
    if "lora_" in parts[-1]:
        return "lora"
    if parts[0] == "backbone":
        return f"backbone {'biases' if parts[-1] == 'bias' else 'weights'}"
    return name


def trainable(enc):
    """(name, tensor) pairs of the trainable tensors of ``enc``."""
    return [(n, p) for n, p in enc.named_parameters() if p.requires_grad]


@pytest.fixture(scope="module", autouse=True)
def no_denormals():
    """Denormal floats as zero, on one thread. A trial step at a too large
    rate saturates softmaxes and LayerNorms, whose float64 outputs may then
    hold denormals, which make each later pass up to 100x slower on x86
    (measured: 0.9 s instead of 10 ms). Flushing them is a per-thread CPU
    flag that PyTorch sets on the calling thread only, hence one intra-op
    thread (the tiny models gain nothing from more). Values that small
    change no loss compared here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def build(ssl_folder):
    """Returns a function (backbone id, method) -> float64 encoder in eval
    mode (no dropout noise), seeded. Each tiny model is saved once."""
    folders = {key: ssl_folder(*variant) for key, variant in BACKBONES.items()}

    def make(backbone, method, **options):
        torch.manual_seed(0)
        enc = PETEncoder(folders[backbone], method=method, options=options)
        return enc.eval().double()

    return make


@pytest.fixture(scope="module")
def data():
    """A fixed utterance [1, 2400] and a random target [32] (float64)."""
    gen = torch.Generator().manual_seed(0)
    wav = torch.randn(1, 2400, generator=gen, dtype=torch.float64)
    return wav, torch.randn(32, generator=gen, dtype=torch.float64)


def pooled(enc, wav):
    """Time-pooled output [B, D]."""
    return enc(wav).mean(1)


def group_grad_norms(enc, wav, target):
    """Gradient norm of each group after one backward of the toy loss (MSE
    of the pooled output to ``target``); a tensor without ``.grad`` counts
    as a zero gradient."""
    enc.zero_grad(set_to_none=True)
    (pooled(enc, wav) - target).pow(2).mean().backward()
    squares = defaultdict(float)
    for name, p in trainable(enc):
        g = p.grad
        squares[group_of(name)] += 0.0 if g is None else float(g.pow(2).sum())
    return {group: math.sqrt(sq) for group, sq in squares.items()}


def starved(norms, exempt=()):
    """Groups whose gradient norm is below ``GRAD_FLOOR`` of the largest."""
    top = max(norms.values())
    return sorted(
        g for g, n in norms.items() if g not in exempt and n < GRAD_FLOOR * top
    )


def sgd_step(params, lr):
    """One plain SGD step on ``params`` (their ``.grad``)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * p.grad)


def descent(enc, group, wav):
    """Relative decrease of a toy loss after ``STEPS`` plain SGD steps of
    ``group`` alone (every other tensor frozen); the tensors are restored.

    The toy loss is the MSE of the pooled output to a *teacher* target: the
    pooled output once the group's tensors are moved by random noise. The
    group alone can reach it (a random target may be out of reach of, e.g.,
    three layer weights), and only through a real gradient. Each step's rate
    is the largest of ``LR_GRID`` (not above the previous step's) that
    passes Armijo's test.

    Arguments
    ---------
    enc : PETEncoder
        A float64 encoder in eval mode.
    group : str
        A group of ``group_of``.
    wav : torch.Tensor
        The fixed input.

    Returns
    -------
    float
        ``1 - final loss / initial loss`` (0 when no rate lowers the loss).
    """
    named = trainable(enc)
    mine = [p for n, p in named if group_of(n) == group]
    saved = [p.detach().clone() for p in mine]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mine:
            p.add_(
                torch.randn(p.shape, generator=gen, dtype=p.dtype) * TEACHER_STD
            )
        target = pooled(enc, wav)
        for p, s in zip(mine, saved, strict=True):
            p.copy_(s)
    ids = {id(p) for p in mine}
    for _, p in named:
        p.requires_grad_(id(p) in ids)

    def loss():
        with torch.no_grad():
            return float((pooled(enc, wav) - target).pow(2).mean())

    try:
        start = current = loss()
        if start == 0.0:  # moving the group does not move the output
            return 0.0
        largest = LR_GRID[0]
        for _ in range(STEPS):
            enc.zero_grad(set_to_none=True)
            (pooled(enc, wav) - target).pow(2).mean().backward()
            point = [p.detach().clone() for p in mine]
            grads = [
                torch.zeros_like(p) if p.grad is None else p.grad for p in mine
            ]
            slope = sum(float(g.pow(2).sum()) for g in grads)
            with torch.no_grad():
                for lr in (r for r in LR_GRID if r <= largest):
                    for p, x, g in zip(mine, point, grads, strict=True):
                        p.copy_(x - lr * g)
                    trial = loss()
                    if trial <= current - ARMIJO * lr * slope:
                        break
                else:  # no rate lowers the loss
                    return 1.0 - current / start
            current, largest = trial, lr
        return 1.0 - current / start
    finally:
        with torch.no_grad():
            for p, s in zip(mine, saved, strict=True):
                p.copy_(s)
        for _, p in named:
            p.requires_grad_(True)
        enc.zero_grad(set_to_none=True)


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("method", list(PET_METHODS))
def test_every_group_gets_a_gradient_at_init(build, data, backbone, method):
    enc = build(backbone, method)
    norms = group_grad_norms(enc, *data)
    assert not starved(norms, ZERO_AT_INIT), norms
    if set(norms) & set(ZERO_AT_INIT):
        # A zero-initialised pair learns once its partner has moved.
        sgd_step([p for _, p in trainable(enc)], JOINT_LR)
        norms = group_grad_norms(enc, *data)
        assert not starved(norms), norms


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("method", list(PET_METHODS))
def test_sgd_through_each_group_alone_lowers_a_toy_loss(
    build, data, backbone, method
):
    enc = build(backbone, method)
    groups = sorted({group_of(n) for n, _ in trainable(enc)})
    if set(groups) & set(ZERO_AT_INIT):
        # Gates scale branches that are zero at init: move every PET tensor
        # first (each group then starts from there).
        perturb_pet(enc)
    decrease = {g: descent(enc, g, data[0]) for g in groups}
    assert min(decrease.values()) >= MIN_REL_DECREASE, decrease


def saddle(enc):
    """Sets AdapterBias's former init (``v = ones``, ``alpha = 0``), the
    saddle behind a LayerNorm, through the public parameter names."""
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.startswith("pet.adapterbias.") and name.endswith("vector"):
                p.fill_(1.0)
            elif name.startswith("pet.adapterbias.") and ".alpha." in name:
                p.zero_()
    return enc


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_the_checks_flag_adapterbias_former_init_behind_a_layernorm(
    build, data, backbone
):
    """The checks above can fail: with ``v = ones`` and ``alpha = 0`` the
    shift lies along the ones vector, which a LayerNorm removes, so neither
    tensor gets a gradient on post-LN layers or W2V-BERT (pre-LN WavLM
    passes: there the shift reaches the output unnormalised)."""
    wav, target = data
    enc = saddle(build(backbone, "adapterbias"))
    flagged = starved(group_grad_norms(enc, wav, target)) == ["adapterbias"]
    decrease = descent(enc, "adapterbias", wav)
    if backbone in LAYERNORM_AFTER_FFN:
        assert flagged and decrease < MIN_REL_DECREASE
    else:
        assert not flagged and decrease >= MIN_REL_DECREASE
    # The s3adapter option (v = ones, default alpha) is not a saddle: v
    # gets a gradient, alpha follows once v has left the ones vector.
    enc = build(backbone, "adapterbias", adapterbias_init="s3adapter")
    assert not starved(group_grad_norms(enc, wav, target))
    assert descent(enc, "adapterbias", wav) >= MIN_REL_DECREASE
