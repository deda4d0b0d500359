"""Data preparation for the speaker recipes: train/dev CSVs of segments,
held-out test and validation speakers with their trial lists, trial
manifests, and the re-run check of a prepared folder.

Authors
 * speechbrain-unipet contributors 2026
"""

import collections
import csv
import json
import math
import os
import pathlib
import random
import re
import time

from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.cnceleb import (
    combine_short_recordings,
    read_cnceleb_protocol,
    write_protocol,
)
from speechbrain_unipet.data.layouts import (
    DataPreparationError,
    _check_probes,
    detect_format,
    list_recordings,
    probe_recordings,
)
from speechbrain_unipet.data.shards import shard_recordings
from speechbrain_unipet.data.trials import (
    Trial,
    _write_trials,
    make_trials,
    read_trials,
)

logger = get_logger(__name__)


CSV_HEADER = [
    "ID",
    "duration",
    "wav",
    "start",
    "stop",
    "spk_id",
    "sample_rate",
    "utt_start",
    "utt_stop",
]


OPTIONS_FILE = "prepare_options.json"


TRIALS_FILE = "trials.txt"


VALID_TRIALS_FILE = "valid_trials.txt"


_SEGMENT_ID = re.compile(r"^(.*)_(\d+)_(\d+)$")


# ------------------------------------------------------------------- rows
def _row(uid, rec, probe, start, stop, region):
    a, b = region
    return [
        uid,
        f"{(b - a) / probe.rate:.3f}",
        rec.path,
        start,
        stop,
        rec.speaker,
        probe.rate,
        a,
        b,
    ]


def _segments(probe, region, seg_dur):
    """Start frames of the non-quiet ``seg_dur`` segments in ``region``
    (a grid from the recording's start)."""
    seg = int(round(seg_dur * probe.rate))
    a, b = region
    first = (a - probe.start + seg - 1) // seg
    quiet = set(probe.quiet)
    return [
        probe.start + k * seg
        for k in range(first, (b - probe.start) // seg)
        if k not in quiet
    ], seg


def _num_segments(probe, seg_dur):
    seg = int(round(seg_dur * probe.rate))
    return (probe.stop - probe.start) // seg if seg > 0 else 0


def _trial_utterances(items, seg_dur, max_utts, whole):
    """Trial utterances of a held-out speaker: ``(id, rec, probe, start,
    stop)``. Whole recordings (or their first ``seg_dur`` when not
    ``whole``) if two or more are long enough, else ``seg_dur`` segments of
    its longest recording."""
    long = [(r, p) for r, p in items if _num_segments(p, seg_dur) >= 1]
    out = []
    if len(long) >= 2:
        for rec, probe in long[:max_utts]:
            seg = int(round(seg_dur * probe.rate))
            stop = probe.stop if whole else probe.start + seg
            uid = rec.uid if whole else f"{rec.uid}_{probe.start}_{stop}"
            out.append((uid, rec, probe, probe.start, stop))
        return out
    rec, probe = max(items, key=lambda rp: rp[1].stop - rp[1].start)
    seg = int(round(seg_dur * probe.rate))
    for k in range(min(max_utts, _num_segments(probe, seg_dur))):
        a = probe.start + k * seg
        out.append((f"{rec.uid}_{a}_{a + seg}", rec, probe, a, a + seg))
    return out


def _eligible(items, seg_dur):
    """Whether a speaker gives at least two trial utterances."""
    counts = [_num_segments(p, seg_dur) for _, p in items]
    return sum(c >= 1 for c in counts) >= 2 or max(counts, default=0) >= 2


def _tail_shares(candidates, dev_share, rng):
    """Dev segments per speaker for speakers split in time: the dev share
    of each one's segments, rounded so that the total is the dev share of
    all of them (largest remainders first, ties in ``rng`` order), and at
    least one segment overall."""
    order = list(candidates)
    rng.shuffle(order)
    exact = {spk: total * dev_share for spk, total in order}
    shares = {spk: math.floor(x) for spk, x in exact.items()}
    extra = max(1, round(sum(exact.values()))) - sum(shares.values())
    by_remainder = sorted(
        exact, key=lambda spk: exact[spk] - shares[spk], reverse=True
    )
    for spk in by_remainder[: max(0, extra)]:
        shares[spk] += 1
    return shares


def _train_dev_rows(by_speaker, seg_dur, dev_share, seed):
    """Training and dev rows; see the module docstring for the split."""
    rng = random.Random(seed)
    plans, tail_candidates = {}, []
    for spk in sorted(by_speaker):
        items = [
            (r, p)
            for r, p in by_speaker[spk]
            if _segments(p, (p.start, p.stop), seg_dur)[0]
        ]
        if not items:
            continue
        rng.shuffle(items)
        regions = {id(r): (p.start, p.stop) for r, p in items}
        dev_regions = {}
        plans[spk] = (items, regions, dev_regions)
        if len(items) * dev_share >= 1:
            n_dev = min(round(len(items) * dev_share), len(items) - 1)
            for rec, _ in items[:n_dev]:
                dev_regions[id(rec)] = regions.pop(id(rec))
        else:
            total = sum(
                len(_segments(p, regions[id(r)], seg_dur)[0]) for r, p in items
            )
            tail_candidates.append((spk, total))
    for spk, k in _tail_shares(tail_candidates, dev_share, rng).items():
        items, regions, dev_regions = plans[spk]
        rec, probe = max(items, key=lambda rp: rp[1].stop - rp[1].start)
        starts, _ = _segments(probe, regions[id(rec)], seg_dur)
        if 0 < k < len(starts):
            cut = starts[-k]
            regions[id(rec)] = (probe.start, cut)
            dev_regions[id(rec)] = (cut, probe.stop)
            continue
        # Short clips: whole recordings to dev, until k segments, always
        # keeping one recording for training.
        for other, other_probe in items[: len(items) - 1]:
            if k <= 0:
                break
            region = regions.pop(id(other))
            dev_regions[id(other)] = region
            k -= len(_segments(other_probe, region, seg_dur)[0])
    train, dev = [], []
    for spk in sorted(plans):
        items, regions, dev_regions = plans[spk]
        for target, chosen in ((train, regions), (dev, dev_regions)):
            for rec, probe in items:
                if id(rec) not in chosen:
                    continue
                starts, seg = _segments(probe, chosen[id(rec)], seg_dur)
                target += [
                    _row(
                        f"{rec.uid}_{s}_{s + seg}",
                        rec,
                        probe,
                        s,
                        s + seg,
                        chosen[id(rec)],
                    )
                    for s in starts
                ]
    return train, dev


def _write_csv(path, rows):
    tmp = pathlib.Path(f"{path}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    os.replace(tmp, path)


def resolve_trial_ids(trials, trials_file, recordings):
    """Maps each utterance id of ``trials`` to ``(recording, start, stop)``.

    Ids are recording ids or ``<recording id>_<start>_<stop>`` segments
    (samples).

    Arguments
    ---------
    trials : list of Trial
        As ``speechbrain_unipet.data.trials.read_trials`` returns them.
    trials_file : str or pathlib.Path
        The trial list, named in errors.
    recordings : list of Recording
        The recordings of the data.

    Returns
    -------
    dict
        Utterance id -> ``(Recording, start, stop)``, ``start``/``stop``
        in samples, ``None`` for the recording's own bounds.

    Raises
    ------
    DataPreparationError
        Naming the trial list, the line and the id not in the data.
    """
    by_uid = {r.uid: r for r in recordings}
    resolved = {}
    for lineno, trial in enumerate(trials, start=1):
        for uid in (trial.enrol, trial.test):
            if uid in resolved:
                continue
            if uid in by_uid:
                resolved[uid] = (by_uid[uid], None, None)
                continue
            match = _SEGMENT_ID.match(uid)
            if match and match.group(1) in by_uid:
                rec = by_uid[match.group(1)]
                resolved[uid] = (rec, int(match.group(2)), int(match.group(3)))
                continue
            raise DataPreparationError(
                f"{trials_file}: trial {lineno} names '{uid}', which is not "
                f"an utterance of the data ({len(by_uid)} utterances, e.g. "
                f"'{next(iter(by_uid), '')}'). Check data_folder, data_format "
                "and verification_file."
            )
    return resolved


def _trial_rows(resolved, probes_by_uid):
    rows = []
    for uid, (rec, start, stop) in sorted(resolved.items()):
        probe = probes_by_uid[rec.uid]
        a = probe.start if start is None else start
        b = probe.stop if stop is None else stop
        if b <= a or b > probe.stop:
            raise DataPreparationError(
                f"Trial utterance '{uid}' has no audio in [{a}, {b}) of "
                f"'{rec.path}' ({probe.stop - probe.start} samples)"
            )
        rows.append(_row(uid, rec, probe, a, b, (a, b)))
    return rows


def prepare_trial_manifest(
    data_folder,
    data_format,
    trials_file,
    csv_path,
    num_workers=None,
    enrolment=None,
):
    """Writes the CSV of the utterances a trial list names (used when
    verification is pointed at other data or trials than training).

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The data (comma-separated folders are combined).
    data_format : str, optional
        One of ``DATA_FORMATS``; ``None`` detects it.
    trials_file : str or pathlib.Path
        The trial list (VoxCeleb format).
    csv_path : str or pathlib.Path
        The CSV to write (same columns as the training CSVs).
    num_workers : int, optional
        Processes inspecting the audio, as in ``probe_recordings``.
    enrolment : dict, optional
        Model id -> utterance ids (``read_enrolment``): the trials'
        enrolment ids are these models, whose utterances are prepared.

    Returns
    -------
    list of Trial
        The trials of ``trials_file``.
    """
    recordings = list_recordings(data_folder, data_format)
    trials = read_trials(trials_file)
    wanted = trials
    if enrolment is not None:
        # Each model's utterances stand in for its id (a model's trial
        # line is then the one named in errors for all of them).
        wanted = [
            Trial(t.label, u, t.test)
            for t in trials
            for u in enrolment.get(t.enrol, [t.enrol])
        ]
    resolved = resolve_trial_ids(wanted, trials_file, recordings)
    needed = sorted(
        {rec.uid: rec for rec, _, _ in resolved.values()}.values(),
        key=lambda r: r.uid,
    )
    probes = probe_recordings(needed, 1.0, 0, num_workers)
    _check_probes(needed, probes)
    by_uid = {r.uid: p for r, p in zip(needed, probes, strict=True)}
    _write_csv(csv_path, _trial_rows(resolved, by_uid))
    return trials


# ------------------------------------------------------------------- main
def preparation_options(
    data_folder,
    data_format,
    verification_file,
    num_test_speakers,
    num_valid_speakers,
    test_segment_len,
    trial_utts_per_speaker,
    split_ratio,
    seg_dur,
    amp_th,
    seed,
    combine_min_seconds=None,
):
    """What a preparation depends on (stored in ``prepare_options.json``).

    Arguments
    ---------
    data_folder, data_format, verification_file, num_test_speakers,
    num_valid_speakers, test_segment_len, trial_utts_per_speaker,
    split_ratio, seg_dur, amp_th, seed, combine_min_seconds
        As for ``prepare_speaker_data``.

    Returns
    -------
    dict
    """
    return {
        "version": 2,
        "data_folder": str(data_folder),
        "data_format": data_format,
        "verification_file": None
        if verification_file is None
        else str(verification_file),
        "num_test_speakers": num_test_speakers,
        "num_valid_speakers": num_valid_speakers,
        "test_segment_len": test_segment_len,
        "trial_utts_per_speaker": trial_utts_per_speaker,
        "split_ratio": list(split_ratio),
        "seg_dur": seg_dur,
        "amp_th": amp_th,
        "seed": seed,
        # A preparation saved before this option did not combine: null.
        "combine_min_seconds": combine_min_seconds,
    }


#: Options whose null means "what the data allows": a preparation made with
#: any value of them fits a run that leaves them null (a run prepared with
#: the former fixed defaults resumes under today's yaml, its split kept).
AUTO_OPTIONS = ("num_test_speakers", "num_valid_speakers")


def changed_options(previous, options):
    """The data settings of ``options`` that a saved preparation does not
    fit: ``{key: (prepared, now)}``.

    Arguments
    ---------
    previous : dict
        The saved preparation's options.
    options : dict
        ``preparation_options`` of this run.

    Returns
    -------
    dict

    Example
    -------
    >>> changed_options(
    ...     {"num_valid_speakers": 20}, {"num_valid_speakers": None}
    ... )
    {}
    >>> changed_options({"num_valid_speakers": 20}, {"num_valid_speakers": 3})
    {'num_valid_speakers': (20, 3)}
    """
    return {
        k: (previous.get(k), v)
        for k, v in options.items()
        if k != "version"
        and previous.get(k) != v
        and not (k in AUTO_OPTIONS and v is None and k in previous)
    }


def check_rerun(save_folder, options, overwrite_prep=False):
    """Checks, before anything is written, that a re-run of an output
    folder prepares the data it was trained on.

    A run whose checkpoints were trained on other data (another data
    folder, trial list or split) would resume with a label encoder and
    weights that do not fit. That is an error naming both settings, unless
    ``overwrite_prep``: then the old ``save`` folder (preparation and
    checkpoints) is moved aside, never deleted, and the run starts fresh.
    Without checkpoints, only the stale label encoder is removed (the
    preparation re-runs by itself).

    Arguments
    ---------
    save_folder : str or pathlib.Path
        The run's ``save_folder``.
    options : dict
        ``preparation_options`` of this run.
    overwrite_prep : bool
        Start fresh when the data changed.

    Returns
    -------
    pathlib.Path or None
        Where the old save folder was moved, if it was.

    Raises
    ------
    DataPreparationError
        Naming the settings that differ.
    """
    save = pathlib.Path(save_folder)
    done = save / OPTIONS_FILE
    if not done.is_file():
        return None
    with open(done, encoding="utf-8") as f:
        previous = json.load(f).get("options", {})
    changed = changed_options(previous, options)
    if not changed:
        return None
    described = ", ".join(
        f"{k}: prepared {a!r}, now {b!r}" for k, (a, b) in changed.items()
    )
    if not any(save.glob("CKPT+*")):
        (save / "label_encoder.txt").unlink(missing_ok=True)
        logger.info("Data settings changed (%s): preparing again", described)
        return None
    if not overwrite_prep:
        raise DataPreparationError(
            f"{save} holds checkpoints trained on other data ({described}). "
            "Use another output_folder, or give --overwrite_prep=True to move "
            "the old preparation and checkpoints aside and start fresh."
        )
    aside = save.with_name(
        f"{save.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    save.rename(aside)
    logger.warning(
        "Data settings changed (%s): moved the old preparation and "
        "checkpoints to %s; training starts fresh.",
        described,
        aside,
    )
    return aside


def prepare_speaker_data(
    data_folder,
    save_folder,
    data_format=None,
    verification_file=None,
    num_test_speakers=None,
    num_valid_speakers=None,
    test_segment_len=3.0,
    trial_utts_per_speaker=4,
    split_ratio=(90, 10),
    seg_dur=3.0,
    amp_th=5e-4,
    sample_rate=16000,
    seed=1234,
    num_workers=None,
    skip_prep=False,
    combine_min_seconds=None,
    combine_folder=None,
):
    """Writes the recipe's CSVs and trial lists to ``save_folder``.

    Arguments
    ---------
    data_folder : str
        The corpus (see the module docstring for layouts).
    save_folder : str
        Where the CSVs go.
    data_format : str or None
        ``voxceleb``, ``speaker_folders``, ``csv``, ``kaldi``, ``cnceleb``;
        None detects.
    verification_file : str or None
        Trial list (``label enrol test``); None: CN-Celeb's evaluation
        protocol (``eval/lists``, written to ``<save_folder>/cnceleb``) for
        a CN-Celeb folder that has one, else ``trials.txt`` generated over
        ``num_test_speakers`` held-out speakers.
    num_test_speakers : int or None
        Held-out test speakers when no trial list is given; None: what the
        data allows (``AUTO_TEST_SPEAKERS``).
    num_valid_speakers : int or None
        Held-out speakers for the EER of every validation (0: none); None:
        what the data allows (``AUTO_VALID_SPEAKERS``).
    test_segment_len : float
        Seconds of the segments a one-recording held-out speaker is cut
        into (and of every validation utterance).
    trial_utts_per_speaker : int
        Trial utterances per generated speaker (targets: all their pairs).
    split_ratio : sequence
        Train/dev share of each training speaker's audio.
    seg_dur : float
        Training segment length in seconds.
    amp_th : float
        Segments with mean absolute amplitude below this are dropped (0:
        no check, header-only inspection: much faster).
    sample_rate : int
        The encoder's rate (recordings at other rates are resampled when
        read; their count is logged).
    seed : int
        Seed of the held-out speakers, the splits and the trials.
    num_workers : int or None
        Inspection processes (None: one per CPU core).
    skip_prep : bool
        Do nothing (the CSVs must exist already).
    combine_min_seconds : float or None
        Short recordings of a training speaker are concatenated, within a
        group (CN-Celeb: a genre; VoxCeleb: a video; speaker folders: a
        sub-folder), into files of at least this length, written under
        ``<combine_folder>/min<seconds>s`` (WeSpeaker's CN-Celeb
        preparation, 5 s); None: recordings as they are (those shorter
        than a training segment give none).
    combine_folder : str or None
        Where combined files go (None: ``<save_folder>/combined``). Runs on
        the same data may share one: a file already there with the
        expected length is kept, so the corpus is combined once.

    Returns
    -------
    dict
        What was written: counts, the trial list used, sample rates.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> for s in range(6):
    ...     (root / f"data/spk{s}").mkdir(parents=True)
    ...     noise = np.random.default_rng(s).normal(size=4 * 8000) * 0.1
    ...     sf.write(root / f"data/spk{s}/a.wav", noise, 8000)
    >>> stats = prepare_speaker_data(
    ...     root / "data",
    ...     root / "save",
    ...     num_test_speakers=2,
    ...     num_valid_speakers=2,
    ...     test_segment_len=1.0,
    ...     seg_dur=1.0,
    ... )
    >>> stats["format"], stats["train"]["speakers"], stats["test"]["trials"]
    ('speaker_folders', 2, 24)
    """
    save = pathlib.Path(save_folder)
    if skip_prep:
        return {}
    if trial_utts_per_speaker < 2:
        raise DataPreparationError(
            f"trial_utts_per_speaker={trial_utts_per_speaker}: target trials "
            "need at least 2 utterances per speaker"
        )
    if not 0 < split_ratio[1] < sum(split_ratio):
        raise DataPreparationError(
            f"split_ratio {list(split_ratio)} must give both train and dev a "
            "share (dev measures the speaker-ID error)"
        )
    if combine_min_seconds is not None and not combine_min_seconds > 0:
        raise DataPreparationError(
            f"combine_min_seconds={combine_min_seconds}: give a length in "
            "seconds (> 0), or null to train on the recordings as they are"
        )
    options = preparation_options(
        data_folder,
        data_format,
        verification_file,
        num_test_speakers,
        num_valid_speakers,
        test_segment_len,
        trial_utts_per_speaker,
        split_ratio,
        seg_dur,
        amp_th,
        seed,
        combine_min_seconds,
    )
    done = save / OPTIONS_FILE
    if done.is_file():
        with open(done, encoding="utf-8") as f:
            previous = json.load(f)
        saved = previous.get("options", {})
        if (
            saved.get("version") == options.get("version")
            and not changed_options(saved, options)
            and all(
                (save / name).is_file() for name in previous.get("files", [])
            )
        ):
            logger.info("Data preparation already done in %s", save)
            return previous["stats"]
        # Gone before anything is rewritten: a run that fails half-way
        # never leaves a mix of old and new files that looks finished.
        done.unlink()
    save.mkdir(parents=True, exist_ok=True)

    first_folder = str(data_folder).split(",")[0].strip()
    fmt = data_format or detect_format(first_folder)
    shard_probes = None
    if fmt == "shards":
        # What make-shards found: no source file is opened here.
        recordings, shard_probes = shard_recordings(first_folder)
    else:
        recordings = list_recordings(data_folder, data_format)
    trials = protocol = None
    if verification_file is None and fmt == "cnceleb":
        # Read before the audio is inspected: a broken list fails fast.
        protocol = read_cnceleb_protocol(first_folder)
    if (
        verification_file is None
        and protocol is None
        and num_test_speakers is not None
        and (num_test_speakers < 2)
    ):
        raise DataPreparationError(
            f"num_test_speakers={num_test_speakers}: generated trials need "
            "at least 2 speakers (or give a verification_file"
            + (
                "; the first CN-Celeb folder has no eval/lists protocol"
                if fmt == "cnceleb"
                else ""
            )
            + ")"
        )
    if verification_file is not None:
        if not os.path.isfile(verification_file):
            raise DataPreparationError(
                f"verification_file '{verification_file}' does not exist; "
                "give a trial list (label enrol test) or null to generate one"
            )
        trials = read_trials(verification_file)
        resolved = resolve_trial_ids(trials, verification_file, recordings)
    logger.info("Inspecting %d recordings (%s layout)...", len(recordings), fmt)
    if shard_probes is not None:
        probes = shard_probes  # no silence check: the shards hold no gaps
    else:
        probes = probe_recordings(recordings, seg_dur, amp_th or 0, num_workers)
    rates, multi = _check_probes(recordings, probes)
    # Trial utterances of a verification_file keep their own recordings,
    # whatever combining does to the rest.
    probe_of = {r.uid: p for r, p in zip(recordings, probes, strict=True)}
    combined, listed = 0, len(recordings)
    if combine_min_seconds is not None:
        folder = pathlib.Path(combine_folder or save / "combined")
        recordings, probes, combined = _combined(
            recordings,
            probes,
            combine_min_seconds,
            folder / f"min{combine_min_seconds:g}s",
            seg_dur,
            amp_th,
        )
        probe_of.update(zip((r.uid for r in recordings), probes, strict=True))
    by_speaker = collections.defaultdict(list)
    for rec, probe in zip(recordings, probes, strict=True):
        if probe.stop > probe.start:
            by_speaker[rec.speaker].append((rec, probe))
    empty = sum(p.stop <= p.start for p in probes)
    short = sum(
        p.stop > p.start and _num_segments(p, seg_dur) == 0 for p in probes
    )

    rng = random.Random(seed)
    files = ["train.csv", "dev.csv", "test.csv"]
    protocol_stats = None
    if protocol is not None:
        test_speakers, test_rows, trials, trials_path, protocol_stats = (
            _protocol_rows(protocol, save, seg_dur, num_workers)
        )
        files += [TRIALS_FILE] + [
            str(pathlib.Path(path).relative_to(save))
            for path in protocol_stats["files"].values()
        ]
    elif trials is not None:
        test_speakers = {rec.speaker for rec, _, _ in resolved.values()}
        test_rows = _trial_rows(resolved, probe_of)
        trials_path = str(verification_file)
    else:
        test_speakers, test_rows, trials = _hold_out(
            by_speaker,
            num_test_speakers,
            "num_test_speakers",
            rng,
            whole=True,
            seg_len=test_segment_len,
            max_utts=trial_utts_per_speaker,
            seed=seed,
        )
        trials_path = str(save / TRIALS_FILE)
        _write_trials(trials_path, trials)
        files.append(TRIALS_FILE)
    remaining = {s: v for s, v in by_speaker.items() if s not in test_speakers}
    valid_rows, valid_trials, valid_speakers = [], [], set()
    if num_valid_speakers is None or num_valid_speakers > 0:
        valid_speakers, valid_rows, valid_trials = _hold_out(
            remaining,
            num_valid_speakers,
            "num_valid_speakers",
            rng,
            whole=False,
            seg_len=test_segment_len,
            max_utts=trial_utts_per_speaker,
            seed=seed,
        )
        for spk in valid_speakers:
            del remaining[spk]
        _write_csv(save / "valid_verif.csv", valid_rows)
        _write_trials(save / VALID_TRIALS_FILE, valid_trials)
        files += ["valid_verif.csv", VALID_TRIALS_FILE]

    dev_share = split_ratio[1] / sum(split_ratio)
    train_rows, dev_rows = _train_dev_rows(remaining, seg_dur, dev_share, seed)
    train_speakers = sorted({row[5] for row in train_rows})
    if len(train_speakers) < 2:
        raise DataPreparationError(
            f"Only {len(train_speakers)} speaker(s) keep training segments of "
            f"{seg_dur} s ({len(by_speaker)} speakers in {data_folder}, "
            f"{len(test_speakers)} held out for test, {len(valid_speakers)} "
            "for validation). Use more speakers, shorter segments "
            "(sentence_len) or fewer held-out speakers (num_test_speakers, "
            "num_valid_speakers)."
        )
    if not dev_rows:
        raise DataPreparationError(
            f"No speaker of {data_folder} has audio to spare for dev (each "
            f"needs two {seg_dur} s segments): use longer recordings or a "
            "shorter sentence_len"
        )
    _write_csv(save / "train.csv", train_rows)
    _write_csv(save / "dev.csv", dev_rows)
    _write_csv(save / "test.csv", test_rows)
    stale = save / "label_encoder.txt"
    if stale.is_file():
        stale.unlink()  # speakers may have changed with the data

    stats = {
        "format": fmt,
        "recordings": listed,
        "after_combining": len(recordings),
        "sample_rates": {str(k): v for k, v in sorted(rates.items())},
        "multi_channel": multi,
        "skipped_empty": empty,
        "skipped_short": short,
        "train": {"rows": len(train_rows), "speakers": len(train_speakers)},
        "dev": {"rows": len(dev_rows)},
        "test": {
            "utterances": len(test_rows),
            "speakers": len(test_speakers),
            "trials": len(trials),
            "trial_list": trials_path,
        },
        "valid": {
            "utterances": len(valid_rows),
            "speakers": len(valid_speakers),
            "trials": len(valid_trials),
        },
        "combined_files": combined,
    }
    if protocol_stats is not None:
        stats["protocol"] = protocol_stats
    if empty or short:
        logger.warning(
            "Skipped %d empty recording(s) and %d shorter than a %.1f s "
            "training segment",
            empty,
            short,
            seg_dur,
        )
    _log_conversions(rates, multi, len(recordings), sample_rate)
    tmp = done.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(
            {"options": options, "files": files, "stats": stats}, f, indent=1
        )
    os.replace(tmp, done)
    logger.info("Data preparation: %s", stats)
    return stats


def _combined(recordings, probes, min_seconds, folder, seg_dur, amp_th):
    """The recordings with short ones combined (``combine_min_seconds``)
    into ``folder``, their probes (the written files inspected as any
    recording), and how many combined files they use."""
    new, written = combine_short_recordings(
        recordings, probes, min_seconds, folder
    )
    probe_of = {r.uid: p for r, p in zip(recordings, probes, strict=True)}
    fresh = [r for r in new if r.uid not in probe_of]
    fresh_probes = probe_recordings(fresh, seg_dur, amp_th or 0)
    _check_probes(fresh, fresh_probes)
    probe_of.update(zip((r.uid for r in fresh), fresh_probes, strict=True))
    logger.info(
        "Combined short recordings to at least %.1f s: %d recordings -> %d "
        "(%d combined files written to %s)",
        min_seconds,
        len(recordings),
        len(new),
        written,
        folder,
    )
    return new, [probe_of[r.uid] for r in new], len(fresh)


def _protocol_rows(protocol, save, seg_dur, num_workers):
    """Test rows and trials of a CN-Celeb evaluation protocol: every
    enrolment and test file whole, the trial list (enrolment side:
    models), both enrolment maps and the test genres written to
    ``<save>/cnceleb``."""
    probes = probe_recordings(protocol.recordings, seg_dur, 0, num_workers)
    _check_probes(protocol.recordings, probes)
    rows = []
    for rec, probe in zip(protocol.recordings, probes, strict=True):
        if probe.stop <= probe.start:
            raise DataPreparationError(
                f"{rec.origin or rec.path}: '{rec.path}' has no audio; the "
                "evaluation protocol needs every file it lists"
            )
        region = (probe.start, probe.stop)
        rows.append(_row(rec.uid, rec, probe, *region, region))
    files = write_protocol(protocol, save / "cnceleb")
    trials = [Trial(*t) for t in protocol.trials]
    # Also where verification looks for the trials of training (with
    # test.csv): the enrolment map then picks the protocol.
    _write_trials(save / TRIALS_FILE, protocol.trials)
    stats = {
        "models": len(protocol.avg_map),
        "test_files": len(protocol.genres),
        "trials": len(trials),
        "targets": sum(t.label for t in trials),
        "genres": len(set(protocol.genres.values())),
        "files": {k: str(v) for k, v in files.items()},
    }
    speakers = {rec.speaker for rec in protocol.recordings}
    return speakers, rows, trials, str(save / TRIALS_FILE), stats


#: Held-out speakers when ``num_test_speakers`` / ``num_valid_speakers``
#: are null: (share of the speakers that can give trial utterances, floor,
#: cap). VoxCeleb-sized data gets the former defaults (40 / 20); a handful
#: of new speakers keeps most of them for training (10 speakers: 2 + 2).
AUTO_TEST_SPEAKERS = (0.10, 2, 40)
AUTO_VALID_SPEAKERS = (0.05, 2, 20)


def auto_held_out(eligible, share, floor, cap):
    """How many of ``eligible`` speakers an automatic split holds out:
    ``round(share * eligible)``, at least ``floor``, at most ``cap``.

    Arguments
    ---------
    eligible : int
        Speakers that can give two trial utterances.
    share : float
    floor, cap : int

    Returns
    -------
    int

    Example
    -------
    >>> [auto_held_out(n, *AUTO_TEST_SPEAKERS) for n in (10, 251, 1211)]
    [2, 25, 40]
    >>> [auto_held_out(n, *AUTO_VALID_SPEAKERS) for n in (8, 226, 5994)]
    [2, 11, 20]
    """
    return int(min(cap, max(floor, round(share * eligible))))


def _hold_out(by_speaker, count, option, rng, whole, seg_len, max_utts, seed):
    """Draws ``count`` speakers that can give two trial utterances (None:
    ``auto_held_out``'s number, logged).

    Returns
    -------
    speakers : set
    rows : list
        CSV rows of their trial utterances.
    trials : list
        Balanced trials over them (``make_trials``).
    """
    eligible = sorted(
        s for s, items in by_speaker.items() if _eligible(items, seg_len)
    )
    if count is None:
        rule = (
            AUTO_TEST_SPEAKERS
            if option == "num_test_speakers"
            else AUTO_VALID_SPEAKERS
        )
        count = auto_held_out(len(eligible), *rule)
        logger.info(
            "%s: %d of the %d speakers that can give two %g s trial "
            "utterances (null: %d %%, at least %d, at most %d; set %s to "
            "choose)",
            option,
            count,
            len(eligible),
            seg_len,
            round(100 * rule[0]),
            rule[1],
            rule[2],
            option,
        )
    speakers = _pick(eligible, count, rng, option, seg_len)
    utts = {
        s: _trial_utterances(
            sorted(by_speaker[s], key=lambda rp: rp[0].uid),
            seg_len,
            max_utts,
            whole,
        )
        for s in sorted(speakers)
    }
    rows = [
        _row(uid, rec, probe, a, b, (a, b))
        for s in sorted(utts)
        for uid, rec, probe, a, b in utts[s]
    ]
    trials = make_trials({s: [u[0] for u in v] for s, v in utts.items()}, seed)
    return speakers, rows, trials


def _pick(eligible, count, rng, option, seg_len):
    """``count`` speakers drawn from ``eligible`` with ``rng``."""
    if count == 1 or count > len(eligible):
        raise DataPreparationError(
            f"{option}={count}, but "
            + (
                "trials need at least 2 speakers"
                if count == 1
                else f"only {len(eligible)} speakers left can give two "
                f"{seg_len} s trial utterances"
            )
            + f". Change {option} or test_segment_len"
            + (
                ", or set num_valid_speakers: 0 and ckpt_select: ErrorRate"
                if option == "num_valid_speakers"
                else ""
            )
            + "."
        )
    return set(rng.sample(eligible, count))


def _log_conversions(rates, multi, total, sample_rate):
    other = {r: n for r, n in rates.items() if r != sample_rate}
    if other:
        logger.info(
            "Resampling on the fly to %d Hz: %d of %d recordings (%s)",
            sample_rate,
            sum(other.values()),
            total,
            ", ".join(f"{n} at {r} Hz" for r, n in sorted(other.items())),
        )
    if multi:
        logger.info(
            "%d of %d recordings have several channels: down-mixed (mean)",
            multi,
            total,
        )


def read_csv_rows(path, required=CSV_HEADER):
    """Rows of a prepared CSV; errors name the file and missing columns."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataPreparationError(
            f"'{path}' does not exist: run the data preparation "
            "(skip_prep: False) or point the annotation key at your CSV"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataPreparationError(
                f"'{path}' lacks the column(s) {missing} (needs "
                f"{', '.join(required)}); re-run the data preparation "
                "(skip_prep: False)"
            )
        rows = list(reader)
    if not rows:
        raise DataPreparationError(f"'{path}' holds no rows")
    return rows
