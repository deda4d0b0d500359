"""Large-margin speaker classification as the state-of-the-art SSL recipes
train it (WeSpeaker's ``ArcMarginProduct_intertopk_subcenter``, ESPnet's
``aamsoftmax_sc_topk``): sub-centre classes and an inter-top-k penalty on
top of SpeechBrain's additive angular margin.

* **Sub-centres** (Deng et al., ECCV 2020): each class has ``sub_centers``
  weight vectors and its cosine is the largest of theirs, so that noisy or
  atypical recordings of a speaker gather around a sub-centre of their own
  instead of pulling the main one. ``SubCenterClassifier`` is SpeechBrain's
  ECAPA ``Classifier`` with ``sub_centers`` rows per class and that maximum;
  the AAM loss then sees one cosine per class, as usual.
* **Inter-top-k** (Zhao et al., 2021): the ``top_k`` non-target classes
  closest to an embedding get an extra margin in their favour,
  ``cos(theta - m')``, which pushes the hardest impostors further away.
  As in WeSpeaker, ``m'`` follows the scheduled margin ``m``:
  ``top_k_margin * m / 0.2``.

SpeechBrain has neither (its ``Classifier`` is used as it is otherwise).
The target logit below the angle threshold is WeSpeaker's (continuous)
unless ``fallback="speechbrain"`` asks for SpeechBrain's.

Authors
 * speechbrain-unipet contributors 2026
"""

import math

import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin


class SubCenterClassifier(Classifier):
    """SpeechBrain's ECAPA-TDNN ``Classifier`` with ``sub_centers`` weight
    vectors per class; a class's output is the largest cosine of its
    sub-centres. With ``sub_centers=1`` it is SpeechBrain's ``Classifier``
    (same weights, same outputs).

    Rows are class-major: class ``c`` owns rows ``c * sub_centers`` to
    ``(c + 1) * sub_centers - 1``, so the first ``n`` classes are the first
    ``n * sub_centers`` rows.

    Arguments
    ---------
    input_size : int
        Embedding size.
    out_neurons : int
        Number of classes.
    sub_centers : int
        Weight vectors per class (WeSpeaker, ESPnet: 3).
    lin_blocks : int
        Linear blocks before the cosine layer (as ``Classifier``).
    lin_neurons : int
        Their size.

    Example
    -------
    >>> clf = SubCenterClassifier(8, out_neurons=5, sub_centers=3)
    >>> clf.weight.shape
    torch.Size([15, 8])
    >>> emb = torch.randn(2, 1, 8)
    >>> out = clf(emb)
    >>> out.shape
    torch.Size([2, 1, 5])
    >>> unit = torch.nn.functional.normalize
    >>> cos = unit(emb[:, 0]) @ unit(clf.weight).T
    >>> torch.allclose(out[:, 0], cos.view(2, 5, 3).amax(dim=-1))
    True
    """

    def __init__(
        self,
        input_size,
        out_neurons=1211,
        sub_centers=1,
        lin_blocks=0,
        lin_neurons=192,
    ):
        if not isinstance(sub_centers, int) or sub_centers < 1:
            raise ValueError(
                f"sub_centers={sub_centers!r} must be an integer >= 1"
            )
        super().__init__(
            input_size,
            lin_blocks=lin_blocks,
            lin_neurons=lin_neurons,
            out_neurons=out_neurons * sub_centers,
        )
        self.num_classes = out_neurons
        self.sub_centers = sub_centers

    def forward(self, x):
        """Cosine of each class's closest sub-centre.

        Arguments
        ---------
        x : torch.Tensor
            Embeddings [B, 1, E].

        Returns
        -------
        torch.Tensor
            [B, 1, out_neurons].
        """
        cosine = super().forward(x)
        if self.sub_centers == 1:
            return cosine
        batch = cosine.shape[0]
        return cosine.view(batch, 1, self.num_classes, self.sub_centers).amax(
            dim=-1
        )


#: Margin at which ``top_k_margin`` is the inter-top-k penalty: WeSpeaker
#: scales its ``mp`` with the current margin as ``mp * margin / 0.2``, so
#: that the penalty rises with the margin schedule and is 0.06 at 0.2.
TOP_K_REFERENCE_MARGIN = 0.2


#: Below the angle threshold (``theta + m > pi``), the target logit is
#: ``cos - offset``: WeSpeaker's offset ``1 + cos(pi - m)`` joins
#: ``cos(theta + m)`` continuously at the threshold (both are -1 there);
#: SpeechBrain's ``sin(pi - m) * m`` (CosFace-like) leaves a step.
AAM_FALLBACKS = ("wespeaker", "speechbrain")


class InterTopKAdditiveAngularMargin(AdditiveAngularMargin):
    """Additive angular margin with WeSpeaker's inter-top-k penalty
    (``ArcMarginProduct_intertopk_subcenter``; the sub-centres are
    ``SubCenterClassifier``'s): the target logit is ``cos(theta + m)``
    and the ``top_k`` highest non-target cosines become ``cos(theta -
    m')``, with the penalty growing with the margin as in WeSpeaker,
    ``m' = top_k_margin * m / 0.2`` (``top_k_margin`` is the penalty at a
    margin of 0.2; none at a margin of 0.001 or less, so that a schedule
    starting at 0 starts without it). ``top_k=0`` is plain AAM.

    Where ``theta + m`` would pass pi (cosines at or below ``cos(pi -
    m)``), the target logit is ``cos - offset``: ``fallback="wespeaker"``
    uses ``1 + cos(pi - m)``, continuous there; ``"speechbrain"`` uses
    SpeechBrain's ``sin(pi - m) * m``, so that the loss is SpeechBrain's
    ``AdditiveAngularMargin`` then.

    Large-margin fine-tuning turns the penalty off in WeSpeaker
    (``do_lm``: ``top_k=0``, sub-centres kept).

    Arguments
    ---------
    margin : float
        Angular margin of the target class (radians).
    scale : float
        Scale of the logits (WeSpeaker: 32).
    easy_margin : bool
        As ``AdditiveAngularMargin``: no margin where the cosine is
        negative (the fallback is then unused).
    top_k : int
        Hardest non-target classes penalised (WeSpeaker: 5).
    top_k_margin : float
        Their penalty at a margin of 0.2 (WeSpeaker's ``mp``: 0.06).
    fallback : str
        ``wespeaker`` or ``speechbrain``: the target logit below the
        angle threshold (see above).

    Example
    -------
    >>> aam = InterTopKAdditiveAngularMargin(0.2, 30, top_k=1, top_k_margin=0.1)
    >>> cos = torch.tensor([[0.5, 0.4, -0.2]])
    >>> target = torch.tensor([[1.0, 0.0, 0.0]])
    >>> logits = aam(cos, target)
    >>> plain = AdditiveAngularMargin(0.2, 30)(cos, target)
    >>> torch.equal(logits[:, [0, 2]], plain[:, [0, 2]])
    True
    >>> hard = 30 * math.cos(math.acos(0.4) - 0.1)  # m' = 0.1 * 0.2 / 0.2
    >>> round(float(logits[0, 1]), 4) == round(hard, 4)
    True
    >>> aam.set_margin(0.4)  # the penalty follows: m' = 0.1 * 0.4 / 0.2
    >>> hard = 30 * math.cos(math.acos(0.4) - 0.2)
    >>> round(float(aam(cos, target)[0, 1]), 4) == round(hard, 4)
    True
    """

    def __init__(
        self,
        margin=0.0,
        scale=1.0,
        easy_margin=False,
        top_k=5,
        top_k_margin=0.06,
        fallback="wespeaker",
    ):
        super().__init__(margin, scale, easy_margin)
        if not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be an integer >= 0")
        if not 0 <= top_k_margin < math.pi / 2:
            raise ValueError(
                f"top_k_margin={top_k_margin!r} must be in [0, pi/2)"
            )
        if fallback not in AAM_FALLBACKS:
            raise ValueError(
                f"fallback={fallback!r} must be one of {list(AAM_FALLBACKS)}"
            )
        self.top_k = top_k
        self.top_k_margin = top_k_margin
        self.fallback = fallback
        self.set_margin(margin)

    def set_margin(self, margin):
        """Sets the margin and every constant derived from it (WeSpeaker's
        ``update``): SpeechBrain's ``cos_m``, ``sin_m``, ``th`` and ``mm``,
        the fallback offset and the inter-top-k penalty.

        Arguments
        ---------
        margin : float
            The new margin (radians).
        """
        self.margin = margin
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin
        self.offset = (
            1.0 + math.cos(math.pi - margin)
            if self.fallback == "wespeaker"
            else self.mm
        )
        self.penalty = (
            self.top_k_margin * margin / TOP_K_REFERENCE_MARGIN
            if margin > 1e-3
            else 0.0
        )

    def forward(self, outputs, targets):
        """Logits with both margins.

        Arguments
        ---------
        outputs : torch.Tensor
            Cosines [N, C].
        targets : torch.Tensor
            One-hot targets [N, C].

        Returns
        -------
        torch.Tensor
            Scaled logits [N, C].
        """
        # Clamped as SpeechBrain does: the sine's gradient is infinite at
        # |cos| = 1.
        cosine = outputs.float().clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine**2)
        phi = cosine * self.cos_m - sine * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.offset)
        logits = targets * phi + (1.0 - targets) * cosine
        k = min(self.top_k, outputs.shape[1] - 1)
        if k > 0 and self.penalty > 0:
            # cos(theta - m') of the k highest non-target cosines.
            closer = cosine * math.cos(self.penalty) + sine * math.sin(
                self.penalty
            )
            hardest = torch.topk(cosine - 2.0 * targets, k, dim=1).indices
            chosen = torch.zeros_like(cosine).scatter_(1, hardest, 1.0)
            logits = logits + chosen * (closer - cosine)
        return self.scale * logits
