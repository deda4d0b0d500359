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


def read_trials(path):
    """Reads a VoxCeleb trial list: ``label enrol_path test_path`` per line.

    Paths are relative to ``wav/`` (``id10270/x6uYqmx31kE/00001.wav``);
    returned ids drop the ``.wav``. Blank lines are skipped; anything else
    malformed, and a trial listed twice (which would count twice in the
    EER), raises a ``TrialListError`` naming the file and lines.

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
    """
    trials, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise TrialListError(
                    f"{path}:{lineno}: expected 'label enrol test' with label "
                    f"0 or 1 (VoxCeleb trial format), got {line.strip()!r}"
                )
            trial = Trial(
                int(parts[0]), utterance_id(parts[1]), utterance_id(parts[2])
            )
            pair = (trial.enrol, trial.test)
            if pair in seen:
                raise TrialListError(
                    f"{path}:{lineno}: the trial {parts[1]} {parts[2]} is "
                    f"already on line {seen[pair]}; remove the repeat (it "
                    "would count twice in the EER)."
                )
            seen[pair] = lineno
            trials.append(trial)
    if not trials:
        raise TrialListError(f"Trial list {path} holds no trials")
    return trials


def _stack(embeddings, ids, what):
    missing = [i for i in ids if i not in embeddings]
    if missing:
        raise KeyError(
            f"No embedding for {len(missing)} {what} utterance(s), e.g. "
            f"{missing[:3]}"
        )
    return torch.stack([embeddings[i].reshape(-1).float() for i in ids])


def _normalise(x, mean=None):
    if mean is not None:
        x = x - mean
    return torch.nn.functional.normalize(x, dim=-1)


def speaker_cohort(embeddings, speaker_of, subtract_mean=True):
    """Per-speaker mean embeddings for AS-norm (see the module docstring).

    Arguments
    ---------
    embeddings : dict
        utterance id -> embedding tensor (training utterances).
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
    ids = list(embeddings)
    if not ids:
        raise ValueError("speaker_cohort: no embeddings given")
    spk = speaker_of if callable(speaker_of) else speaker_of.__getitem__
    x = _stack(embeddings, ids, "cohort")
    mean = x.mean(0) if subtract_mean else None
    x = _normalise(x, mean)
    speakers = sorted({spk(i) for i in ids})
    index = {s: k for k, s in enumerate(speakers)}
    labels = torch.tensor([index[spk(i)] for i in ids])
    sums = torch.zeros(len(speakers), x.shape[1]).index_add_(0, labels, x)
    return _normalise(sums), mean


def score_trials(trials, embeddings, cohort=None, top_n=300, mean=None):
    """Cosine scores of trials, optionally AS-normalised.

    Arguments
    ---------
    trials : list of Trial
    embeddings : dict
        utterance id -> embedding.
    cohort : torch.Tensor or None
        [N, D] cohort from ``speaker_cohort``; ``None`` gives raw cosine.
    top_n : int
        Cohort scores used per utterance (all if fewer).
    mean : torch.Tensor or None
        Mean to subtract before scoring (from ``speaker_cohort``).

    Returns
    -------
    torch.Tensor
        One score per trial.

    Example
    -------
    >>> emb = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    >>> score_trials([Trial(1, "a", "b")], emb)
    tensor([0.7071])
    """
    ids = sorted({t.enrol for t in trials} | {t.test for t in trials})
    pos = {u: k for k, u in enumerate(ids)}
    x = _normalise(_stack(embeddings, ids, "trial"), mean)
    e = torch.tensor([pos[t.enrol] for t in trials])
    t = torch.tensor([pos[t.test] for t in trials])
    scores = (x[e] * x[t]).sum(-1)
    if cohort is None:
        return scores
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    cohort_scores = x @ cohort.float().T
    k = min(top_n, cohort.shape[0])
    top = cohort_scores.topk(k, dim=1).values
    mu, sd = top.mean(1), top.std(1, unbiased=k > 1).clamp(min=1e-6)
    return 0.5 * ((scores - mu[e]) / sd[e] + (scores - mu[t]) / sd[t])
