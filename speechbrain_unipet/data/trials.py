"""Trial lists and enrolment maps: the formats (VoxCeleb, Kaldi, NIST,
CN-Celeb), reading them with errors that name the line, and drawing
balanced trials for held-out speakers.

Authors
 * speechbrain-unipet contributors 2026
"""

import itertools
import os
import pathlib
import random

from speechbrain_unipet.utils.errors import UserError

#: Trial list formats: how a line's fields map to (label, enrol, test).
TRIAL_FORMATS = {
    "voxceleb": "'label enrol test' with label 0 or 1 (VoxCeleb)",
    "cnceleb": "'enrol test label' with label 0 or 1 (CN-Celeb trials.lst)",
    "kaldi": "'enrol test target|nontarget' (Kaldi / WeSpeaker)",
}


_KALDI_LABELS = {"target": 1, "nontarget": 0}


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


class TrialListError(UserError, ValueError):
    """A malformed trial list, with the file and line."""


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
    """Reads a multi-utterance enrolment list (CN-Celeb's ``enroll.map``).

    Each line is ``model utt1 [utt2 ...]``; a model may span several lines.

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


def read_trial_groups(path):
    """Reads a group per test utterance (``utt group`` per line), e.g.
    CN-Celeb's genre of each test file, for per-group error rates.

    Arguments
    ---------
    path : str or pathlib.Path

    Returns
    -------
    dict
        test utterance id (extension dropped) -> group name.

    Raises
    ------
    TrialListError
        Naming the file and line of a malformed or repeated entry.

    Example
    -------
    >>> p = getfixture("tmp_path") / "test_genres.txt"
    >>> _ = p.write_text("test/a-singing-01-001.wav singing\\n")
    >>> read_trial_groups(p)
    {'test/a-singing-01-001': 'singing'}
    """
    groups, seen = {}, {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise TrialListError(
                    f"{path}:{lineno}: expected 'utterance group', got "
                    f"{line.strip()!r}"
                )
            uid = utterance_id(parts[0])
            if uid in seen:
                raise TrialListError(
                    f"{path}:{lineno}: '{uid}' repeats line {seen[uid]}"
                )
            seen[uid] = lineno
            groups[uid] = parts[1]
    if not groups:
        raise TrialListError(f"Group list {path} holds no utterances")
    return groups


# ------------------------------------------------------------------ trials
def make_trials(utts_by_speaker, seed):
    """Balanced trials: per speaker, every target pair of its utterances and
    as many non-target pairs (one of its utterances against another
    speaker's), drawn with ``seed``.

    Arguments
    ---------
    utts_by_speaker : dict
        Speaker -> list of its utterance ids.
    seed : int
        Seed of the non-target draw (the same seed gives the same trials).

    Returns
    -------
    list of (label, enrol, test)

    Example
    -------
    >>> trials = make_trials({"a": ["a1", "a2"], "b": ["b1", "b2"]}, seed=0)
    >>> sorted(label for label, _, _ in trials)
    [0, 0, 1, 1]
    """
    rng = random.Random(seed)
    speakers = sorted(utts_by_speaker)
    trials, used = [], set()
    for spk in speakers:
        own = sorted(utts_by_speaker[spk])
        targets = list(itertools.combinations(own, 2))
        others = sorted(
            u for s in speakers if s != spk for u in utts_by_speaker[s]
        )
        candidates = [(a, b) for a in own for b in others]
        rng.shuffle(candidates)
        non_targets = []
        for a, b in candidates:
            if len(non_targets) == len(targets):
                break
            if frozenset((a, b)) not in used:
                used.add(frozenset((a, b)))
                non_targets.append((a, b))
        if len(non_targets) < len(targets):  # few others: keep it balanced
            targets = sorted(rng.sample(targets, len(non_targets)))
        trials += [(1, a, b) for a, b in targets]
        trials += [(0, a, b) for a, b in non_targets]
    return trials


def _write_trials(path, trials):
    tmp = pathlib.Path(f"{path}.tmp")
    tmp.write_text(
        "".join(f"{label} {a} {b}\n" for label, a, b in trials),
        encoding="utf-8",
    )
    os.replace(tmp, path)
