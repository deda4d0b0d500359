"""Cosine scoring of trials from an embedding store: enrolment models
(mean of several utterances), the AS-norm cohort and adaptive
symmetric score normalisation, as WeSpeaker computes them.

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np
import torch

from speechbrain_unipet.scoring.store import EmbeddingStore, EmbeddingStoreError

#: How ``enrol_models`` averages a model's utterances.
ENROL_AVERAGES = {
    "raw": "the plain mean of the raw embeddings (WeSpeaker)",
    "normalised": "the mean direction of the normalised, mean-subtracted "
    "embeddings at their mean distance from the mean",
}


def enrol_models(store, enrolment, mean=None, average="raw"):
    """A store of enrolment models (CN-Celeb's "Avg" enrolment), each
    scored as one more utterance.

    ``average="raw"`` (default) is WeSpeaker's: a model is the plain mean of
    its utterances' raw embeddings (``examples/cnceleb/v2/local/
    extract_cnc.sh`` runs ``tools/vector_mean.py`` on ``enroll.map``), which
    scoring then treats as any utterance (minus the mean, L2-normalised;
    its QMF norm is that of the mean-subtracted mean). ``mean`` plays no
    part in it: the mean of the mean-subtracted embeddings is the
    mean-subtracted mean.

    ``average="normalised"``: the direction ``u`` of the mean of the
    utterances' L2-normalised, mean-subtracted embeddings, stored as
    ``mean + r * u`` with ``r`` their mean distance from ``mean`` (each
    utterance counts equally, whatever its norm). Pass the ``mean`` that
    scoring subtracts.

    Either way a one-utterance model is exactly that utterance (same
    scores, same norm), with or without mean subtraction and AS-norm; a
    model's duration is the sum of its utterances'.

    Arguments
    ---------
    store : EmbeddingStore
        Holds the enrolment utterances.
    enrolment : dict
        model id -> utterance ids (``read_enrolment``).
    mean : torch.Tensor or None
        The mean that scoring subtracts (``speaker_cohort``'s, or the
        training-set mean); used by ``average="normalised"`` only.
    average : str
        A key of ``ENROL_AVERAGES``.

    Returns
    -------
    EmbeddingStore

    Example
    -------
    >>> from speechbrain_unipet.scoring.store import EmbeddingStore
    >>> s = EmbeddingStore(["u1", "u2"], [[3.0, 0.0], [0.0, 1.0]])
    >>> enrol_models(s, {"m": ["u1", "u2"]}).embeddings.tolist()
    [[1.5, 0.5]]
    >>> enrol_models(
    ...     s, {"m": ["u1", "u2"]}, average="normalised"
    ... ).embeddings.astype(float).round(4).tolist()
    [[1.4142, 1.4142]]
    """

    if average not in ENROL_AVERAGES:
        raise ValueError(
            f"average must be one of {', '.join(ENROL_AVERAGES)}, got "
            f"{average!r}"
        )
    clash = [m for m in enrolment if m in store]
    if clash:
        raise EmbeddingStoreError(
            f"Enrolment model id(s) {clash[:3]} are also utterance ids of the "
            "store: rename the models (e.g. a '-enroll' suffix)"
        )
    _check_dim(store, mean, "subtracted mean")
    centre = 0.0 if mean is None else mean.double()
    vectors, durations = [], []
    for model, utts in enrolment.items():
        rows = store.rows(utts, what=f"enrolment (model {model})")
        x = torch.from_numpy(store.embeddings[rows]).double()
        if average == "raw":
            vectors.append(x.mean(0).float().numpy())
        else:
            x = x - centre
            direction = _normalise(_normalise(x).mean(0))
            radius = x.norm(dim=-1).mean()
            vectors.append((centre + radius * direction).float().numpy())
        durations.append(float(store.durations[rows].sum()))
    return EmbeddingStore(
        list(enrolment), np.stack(vectors), np.array(durations)
    )


#: Rows scored against the cohort at a time: AS-norm's [rows x cohort]
#: score matrix stays about 100 MB for a 6k-speaker cohort.
COHORT_BLOCK = 4096


#: Trials scored at a time (their two [block x D] gathers stay small).
TRIAL_BLOCK = 65536


def _as_store(embeddings):
    """An ``EmbeddingStore`` of a store or an ``id -> tensor`` dict."""

    if isinstance(embeddings, EmbeddingStore):
        return embeddings
    return EmbeddingStore.from_dict(embeddings)


def _normalise(x, mean=None):
    if mean is not None:
        x = x - mean
    return torch.nn.functional.normalize(x, dim=-1)


def _check_dim(store, other, what):
    if other is not None and other.shape[-1] != store.dim:
        raise EmbeddingStoreError(
            f"The {what} has dimension {other.shape[-1]} but the embeddings "
            f"{store.dim}: they come from different models; embed both with "
            "the same model"
        )


def speaker_cohort(embeddings, speaker_of, subtract_mean=True):
    """WeSpeaker's AS-norm cohort (see the module docstring): per speaker
    the plain mean of its raw embeddings, minus the mean of all the
    utterances' raw embeddings, L2-normalised.

    Arguments
    ---------
    embeddings : EmbeddingStore or dict
        Training utterances (a store, or utterance id -> embedding).
    speaker_of : dict or callable
        utterance id -> speaker id.
    subtract_mean : bool
        Subtract the mean training embedding (WeSpeaker's recipes do;
        without it, as ``score_norm.py`` without ``mean_vec_path``).

    Returns
    -------
    cohort : torch.Tensor
        [num_speakers, D], L2-normalised, speakers in sorted order.
    mean : torch.Tensor or None
        The subtracted mean; pass it to ``score_trials``.

    Example
    -------
    >>> emb = {
    ...     "a/1": torch.tensor([2.0, 0.0]),
    ...     "a/2": torch.tensor([0.0, 2.0]),
    ...     "b/1": torch.tensor([4.0, 4.0]),
    ... }
    >>> cohort, mean = speaker_cohort(emb, lambda u: u[0])
    >>> mean.tolist(), cohort.double().round(decimals=4).tolist()
    ([2.0, 2.0], [[-0.7071, -0.7071], [0.7071, 0.7071]])
    """
    if not isinstance(embeddings, dict) or embeddings:
        store = _as_store(embeddings)
    else:
        raise ValueError("speaker_cohort: no embeddings given")
    spk = speaker_of if callable(speaker_of) else speaker_of.__getitem__
    x = store.vectors().double()
    names = [spk(i) for i in store.ids]
    speakers = sorted(set(names))
    index = {s: k for k, s in enumerate(speakers)}
    labels = torch.tensor([index[s] for s in names])
    sums = torch.zeros(len(speakers), x.shape[1], dtype=x.dtype)
    sums.index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=len(speakers)).to(x.dtype)
    speaker_means = sums / counts[:, None]
    mean = x.mean(0) if subtract_mean else None
    cohort = _normalise(speaker_means, mean)
    return cohort.float(), None if mean is None else mean.float()


def _cohort_stats(x, cohort, top_n):
    """Mean and population std (ddof 0, as WeSpeaker's ``np.std``) of each
    row's ``top_n`` highest cohort scores, in row blocks so that the
    [rows x cohort] scores never exist at once."""
    k = min(top_n, cohort.shape[0])
    mu = torch.empty(x.shape[0])
    sd = torch.empty(x.shape[0])
    cohort_t = cohort.float().T.contiguous()
    for start in range(0, x.shape[0], COHORT_BLOCK):
        top = (
            (x[start : start + COHORT_BLOCK] @ cohort_t)
            .topk(k, dim=1, sorted=False)
            .values
        )
        mu[start : start + COHORT_BLOCK] = top.mean(1)
        sd[start : start + COHORT_BLOCK] = top.std(1, correction=0)
    return mu, sd.clamp(min=1e-6)


def score_trials(
    trials, embeddings, cohort=None, top_n=300, mean=None, return_details=False
):
    """Cosine scores of trials, optionally AS-normalised, as matrix
    operations (VoxCeleb1-E size in seconds: ``benchmarks/scoring.py``).

    Arguments
    ---------
    trials : list of Trial
    embeddings : EmbeddingStore or dict
        The trial utterances' embeddings (a store, or id -> embedding).
    cohort : torch.Tensor or None
        [N, D] cohort from ``speaker_cohort``; ``None`` gives raw cosine.
    top_n : int
        Cohort scores used per utterance (all if fewer).
    mean : torch.Tensor or None
        Mean to subtract before scoring (from ``speaker_cohort``, or the
        training-set mean).
    return_details : bool
        Return a dict: ``scores``, ``raw`` (cosine), ``enrol_norm`` /
        ``test_norm`` (norm of each side's embedding after mean
        subtraction, before normalisation: a QMF quality measure) and,
        with a cohort, ``enrol_cohort_mean`` / ``test_cohort_mean`` (mean
        of each side's top-n cohort scores, another).

    Returns
    -------
    torch.Tensor or dict
        One score per trial (float32), or the details.

    Example
    -------
    >>> from speechbrain_unipet.data.trials import Trial
    >>> emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    >>> score_trials([Trial(1, "a", "b")], emb)
    tensor([0.7071])
    """
    store = _as_store(embeddings)
    _check_dim(store, cohort, "AS-norm cohort")
    _check_dim(store, mean, "subtracted mean")
    if cohort is not None and top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    # Only the rows the trials use, each once.
    rows, inverse = np.unique(
        store.rows(
            [t.enrol for t in trials] + [t.test for t in trials], what="trial"
        ),
        return_inverse=True,
    )
    e, t = np.split(torch.from_numpy(inverse.reshape(-1)), 2)
    x = torch.from_numpy(store.embeddings[rows])
    if mean is not None:
        x = x - mean.float()
    norms = x.double().norm(dim=-1)
    x = _normalise(x)
    # In blocks of trials: x[e] and x[t] of 580k trials at once would
    # take 0.9 GB.
    raw = torch.cat(
        [
            (x[e[k : k + TRIAL_BLOCK]] * x[t[k : k + TRIAL_BLOCK]]).sum(-1)
            for k in range(0, len(trials), TRIAL_BLOCK)
        ]
    )
    details = {
        "scores": raw,
        "raw": raw,
        "enrol_norm": norms[e],
        "test_norm": norms[t],
    }
    if cohort is not None:
        mu, sd = _cohort_stats(x, cohort, top_n)
        details["scores"] = 0.5 * (
            (raw - mu[e]) / sd[e] + (raw - mu[t]) / sd[t]
        )
        details["enrol_cohort_mean"] = mu[e]
        details["test_cohort_mean"] = mu[t]
    return details if return_details else details["scores"]
