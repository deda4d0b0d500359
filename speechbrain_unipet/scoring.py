"""Trial lists, cosine scoring and adaptive score normalisation (AS-norm).

Cohort recipe (documented so that numbers are comparable with WeSpeaker's
tables, pitfall 15): the cohort is one embedding per *training speaker*,
the mean of that speaker's L2-normalised embeddings, computed after
subtracting the mean embedding of the training set (``subtract_mean``),
then L2-normalised again. Each enrol and test embedding (mean-subtracted
the same way) is scored against the cohort; the ``top_n`` highest cohort
scores give the mean/std of its z-normalisation, and the trial score is
``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``. WeSpeaker's VoxCeleb
WavLM recipe uses Vox2-dev speakers and ``top_n=300``; SpeechBrain's script
uses per-chunk cohort embeddings instead, which gives different numbers.

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np
import torch


class Trial:
    """One verification trial: ``label`` (1 target / 0 non-target),
    ``enrol`` and ``test`` utterance ids."""

    __slots__ = ("label", "enrol", "test")

    def __init__(self, label, enrol, test):
        self.label, self.enrol, self.test = label, enrol, test

    def __repr__(self):
        return f"Trial({self.label}, {self.enrol!r}, {self.test!r})"


def utterance_id(path):
    """VoxCeleb trial path -> utterance id (``id10270/x6uYqmx31kE/00001``).

    Arguments
    ---------
    path : str
        A path of a trial list, relative to ``wav/``.

    Returns
    -------
    str
        The path without surrounding whitespace and ``.wav``/``.flac``.

    Example
    -------
    >>> utterance_id("id10270/x6uYqmx31kE/00001.wav")
    'id10270/x6uYqmx31kE/00001'
    """
    path = path.strip()
    for ext in (".wav", ".flac"):
        if path.lower().endswith(ext):
            return path[: -len(ext)]
    return path


class TrialListError(ValueError):
    """A malformed trial list, with the file and line."""


#: Trial list formats: how a line's fields map to (label, enrol, test).
TRIAL_FORMATS = {
    "voxceleb": "'label enrol test' with label 0 or 1 (VoxCeleb)",
    "cnceleb": "'enrol test label' with label 0 or 1 (CN-Celeb trials.lst)",
    "kaldi": "'enrol test target|nontarget' (Kaldi / WeSpeaker)",
}
_KALDI_LABELS = {"target": 1, "nontarget": 0}


def _trial_format(parts):
    """The format a split line is in, or None."""
    if len(parts) != 3:
        return None
    if parts[0] in ("0", "1"):
        return "voxceleb"
    if parts[2] in ("0", "1"):
        return "cnceleb"
    if parts[2] in _KALDI_LABELS:
        return "kaldi"
    return None


def read_trials(path):
    """Reads a trial list in the VoxCeleb, CN-Celeb or Kaldi format.

    ``label enrol test`` (VoxCeleb: paths relative to ``wav/``, e.g.
    ``id10270/x6uYqmx31kE/00001.wav``), ``enrol test label`` (CN-Celeb's
    ``trials.lst``, label 0/1 last) or ``enrol test target|nontarget``
    (Kaldi / WeSpeaker). The format is read from the first line; returned
    ids drop ``.wav``/``.flac``. Blank lines are skipped; anything else
    malformed, a line in another format than the first, and a trial listed
    twice (which would count twice in the EER) raise a ``TrialListError``
    naming the file and lines.

    Arguments
    ---------
    path : str or pathlib.Path
        The trial list.

    Returns
    -------
    list of Trial
        ``label`` (1 = same speaker), ``enrol`` and ``test`` ids, in file
        order.

    Example
    -------
    >>> p = getfixture("tmp_path") / "trials.txt"
    >>> _ = p.write_text("1 a/x/1.wav a/y/2.wav\\n0 a/x/1.wav b/z/3.wav\\n")
    >>> read_trials(p)
    [Trial(1, 'a/x/1', 'a/y/2'), Trial(0, 'a/x/1', 'b/z/3')]
    >>> _ = p.write_text("spk1-enroll test/u1.wav target\\n")
    >>> read_trials(p)
    [Trial(1, 'spk1-enroll', 'test/u1')]
    """
    trials, seen, fmt = [], {}, None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            this = _trial_format(parts)
            if this is None or (fmt is not None and this != fmt):
                expected = (
                    TRIAL_FORMATS[fmt]
                    if fmt
                    else "; or ".join(TRIAL_FORMATS.values())
                )
                raise TrialListError(
                    f"{path}:{lineno}: expected {expected}"
                    + (" as on the first line" if fmt else "")
                    + f", got {line.strip()!r}"
                )
            fmt = this
            if fmt == "voxceleb":
                label, enrol, test = int(parts[0]), parts[1], parts[2]
            elif fmt == "cnceleb":
                enrol, test, label = parts[0], parts[1], int(parts[2])
            else:
                enrol, test, label = parts[0], parts[1], _KALDI_LABELS[parts[2]]
            trial = Trial(label, utterance_id(enrol), utterance_id(test))
            pair = (trial.enrol, trial.test)
            if pair in seen:
                raise TrialListError(
                    f"{path}:{lineno}: the trial {enrol} {test} is "
                    f"already on line {seen[pair]}; remove the repeat (it "
                    "would count twice in the EER)."
                )
            seen[pair] = lineno
            trials.append(trial)
    if not trials:
        raise TrialListError(f"Trial list {path} holds no trials")
    return trials


def read_enrolment(path):
    """Reads a multi-utterance enrolment list: ``model utt1 [utt2 ...]``
    per line (a model may span several lines; CN-Celeb's ``enroll.map``).

    Arguments
    ---------
    path : str or pathlib.Path

    Returns
    -------
    dict
        model id -> list of utterance ids (extensions dropped).

    Example
    -------
    >>> p = getfixture("tmp_path") / "enrol.map"
    >>> _ = p.write_text("spk1 a/1.wav a/2.wav\\nspk1 a/3.wav\\n")
    >>> read_enrolment(p)
    {'spk1': ['a/1', 'a/2', 'a/3']}
    """
    models = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise TrialListError(
                    f"{path}:{lineno}: expected 'model utt1 [utt2 ...]', got "
                    f"{line.strip()!r}"
                )
            models.setdefault(parts[0], []).extend(
                utterance_id(u) for u in parts[1:]
            )
    if not models:
        raise TrialListError(f"Enrolment list {path} holds no models")
    return models


def enrol_models(store, enrolment, mean=None):
    """A store of enrolment models (CN-Celeb's "Avg" enrolment, as
    WeSpeaker scores it), each scoring as the mean of its utterances'
    L2-normalised embeddings.

    Scoring subtracts ``mean`` and L2-normalises (``score_trials``), so a
    model is stored in the utterances' own space: ``mean + r * u`` with
    ``u`` the unit direction of the mean of the normalised, mean-subtracted
    utterance embeddings and ``r`` their mean distance from ``mean``. A
    one-utterance model is therefore exactly that utterance (same scores,
    same norm for QMF calibration), with or without mean subtraction and
    AS-norm. A model's duration is the sum of its utterances'.

    Arguments
    ---------
    store : EmbeddingStore
        Holds the enrolment utterances.
    enrolment : dict
        model id -> utterance ids (``read_enrolment``).
    mean : torch.Tensor or None
        The mean that scoring subtracts (``speaker_cohort``'s, or the
        training-set mean); pass the same one to ``score_trials``.

    Returns
    -------
    EmbeddingStore

    Example
    -------
    >>> from speechbrain_unipet.store import EmbeddingStore
    >>> s = EmbeddingStore(["u1", "u2"], [[3.0, 0.0], [0.0, 1.0]])
    >>> enrol_models(s, {"m": ["u1", "u2"]}).embeddings.astype(float).round(
    ...     4
    ... ).tolist()
    [[1.4142, 1.4142]]
    """
    from speechbrain_unipet.store import EmbeddingStore, EmbeddingStoreError

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
        x = torch.from_numpy(store.embeddings[rows]).double() - centre
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
    from speechbrain_unipet.store import EmbeddingStore

    if isinstance(embeddings, EmbeddingStore):
        return embeddings
    return EmbeddingStore.from_dict(embeddings)


def _normalise(x, mean=None):
    if mean is not None:
        x = x - mean
    return torch.nn.functional.normalize(x, dim=-1)


def _check_dim(store, other, what):
    if other is not None and other.shape[-1] != store.dim:
        from speechbrain_unipet.store import EmbeddingStoreError

        raise EmbeddingStoreError(
            f"The {what} has dimension {other.shape[-1]} but the embeddings "
            f"{store.dim}: they come from different models; embed both with "
            "the same model"
        )


def speaker_cohort(embeddings, speaker_of, subtract_mean=True):
    """Per-speaker mean embeddings for AS-norm (see the module docstring).

    Arguments
    ---------
    embeddings : EmbeddingStore or dict
        Training utterances (a store, or utterance id -> embedding).
    speaker_of : dict or callable
        utterance id -> speaker id.
    subtract_mean : bool
        Subtract the mean training embedding first (WeSpeaker's recipe).

    Returns
    -------
    cohort : torch.Tensor
        [num_speakers, D], L2-normalised.
    mean : torch.Tensor or None
        The subtracted mean; pass it to ``score_trials``.
    """
    if not isinstance(embeddings, dict) or embeddings:
        store = _as_store(embeddings)
    else:
        raise ValueError("speaker_cohort: no embeddings given")
    spk = speaker_of if callable(speaker_of) else speaker_of.__getitem__
    x = store.vectors().double()
    mean = x.mean(0) if subtract_mean else None
    x = _normalise(x, mean)
    names = [spk(i) for i in store.ids]
    speakers = sorted(set(names))
    index = {s: k for k, s in enumerate(speakers)}
    labels = torch.tensor([index[s] for s in names])
    sums = torch.zeros(len(speakers), x.shape[1], dtype=x.dtype)
    sums.index_add_(0, labels, x)
    return _normalise(sums).float(), None if mean is None else mean.float()


def _cohort_stats(x, cohort, top_n):
    """Mean and std of each row's ``top_n`` highest cohort scores, in row
    blocks so that the [rows x cohort] scores never exist at once."""
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
        sd[start : start + COHORT_BLOCK] = top.std(1, unbiased=k > 1)
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
        Return a dict: ``scores``, ``raw`` (cosine) and, with a cohort,
        ``enrol_cohort_mean`` / ``test_cohort_mean`` (mean of each side's
        top-n cohort scores, a QMF quality measure).

    Returns
    -------
    torch.Tensor or dict
        One score per trial (float32), or the details.

    Example
    -------
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
    x = _normalise(x, None if mean is None else mean.float())
    # In blocks of trials: x[e] and x[t] of 580k trials at once would
    # take 0.9 GB.
    raw = torch.cat(
        [
            (x[e[k : k + TRIAL_BLOCK]] * x[t[k : k + TRIAL_BLOCK]]).sum(-1)
            for k in range(0, len(trials), TRIAL_BLOCK)
        ]
    )
    details = {"scores": raw, "raw": raw}
    if cohort is not None:
        mu, sd = _cohort_stats(x, cohort, top_n)
        details["scores"] = 0.5 * (
            (raw - mu[e]) / sd[e] + (raw - mu[t]) / sd[t]
        )
        details["enrol_cohort_mean"] = mu[e]
        details["test_cohort_mean"] = mu[t]
    return details if return_details else details["scores"]
