"""CN-Celeb as released: the ``cnceleb`` layout, its evaluation protocol
(``eval/lists``) with errors that name the line, and the combination of
short utterances (Kaldi's ``choose_utts_to_combine.py`` rules).
"""

import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_unipet.data.cnceleb import (
    GENRES,
    combine_ranges,
    combine_short_recordings,
    genre_of,
    list_cnceleb,
    read_cnceleb_protocol,
    write_protocol,
)
from speechbrain_unipet.data.layouts import (
    DataPreparationError,
    Recording,
    detect_format,
    list_recordings,
    list_speaker_folders,
    list_voxceleb,
    probe_recordings,
)
from speechbrain_unipet.data.trials import read_enrolment, read_trials
from speechbrain_unipet.demo import write_cnceleb_layout
from speechbrain_unipet.utils.audio import AudioProbe


def tone(f0, seconds, rate, seed=0):
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * noise).astype(np.float32)


# ------------------------------------------------------------ combining
@pytest.mark.parametrize(
    "durations, min_seconds, expected",
    [
        ([5, 6, 7], 0.1, [(0, 1), (1, 2), (2, 3)]),
        ([0.1, 6, 7], 0.5, [(0, 2), (2, 3)]),
        ([6, 7, 0.1], 0.5, [(0, 1), (1, 3)]),
        ([6, 0.1, 7], 0.5, [(0, 2), (2, 3)]),
        ([7, 0.1, 6], 0.5, [(0, 2), (2, 3)]),
        ([1.0, 0.5, 0.1, 6.0], 1.0, [(0, 3), (3, 4)]),
        ([0.2, 0.3], 1.0, [(0, 2)]),  # all together, still short
        ([0.2], 1.0, [(0, 1)]),
        ([], 1.0, []),
        ([0.99999999, 2.0], 1.0, [(0, 1), (1, 2)]),  # within the tolerance
    ],
)
def test_combine_ranges_cases(durations, min_seconds, expected):
    assert combine_ranges(durations, min_seconds) == expected


def test_combine_ranges_partition_and_minimum():
    rng = np.random.default_rng(0)
    for trial in range(500):
        n = int(rng.integers(1, 30))
        durations = rng.exponential(rng.uniform(0.2, 4.0), n)
        min_seconds = float(rng.uniform(0.5, 6.0))
        ranges = combine_ranges(durations.tolist(), min_seconds)
        # In order, contiguous, covering everything.
        assert ranges[0][0] == 0 and ranges[-1][1] == n, trial
        assert all(a < b for a, b in ranges), trial
        assert all(
            ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1)
        ), trial
        if len(ranges) > 1:
            sums = [durations[a:b].sum() for a, b in ranges]
            assert min(sums) >= min_seconds - 1e-5, (trial, sums)


@pytest.fixture
def short_recordings(tmp_path):
    """Speaker A: group g1 (1.5 s, then a 0.3 s region of a 1 s file,
    0.4 s, 0.5 s), group g2 (0.3 s alone), an empty probe; speaker B:
    group g1 at 16 kHz, 8 kHz stereo, 16 kHz."""
    src = tmp_path / "src"
    specs = [
        ("A/g1/0", "A", "g1", 1.5, 16000, 1, None),
        ("A/g1/1", "A", "g1", 1.0, 16000, 1, (0.1, 0.4)),
        ("A/g1/2", "A", "g1", 0.4, 16000, 1, None),
        ("A/g1/3", "A", "g1", 0.5, 16000, 1, None),
        ("A/g2/0", "A", "g2", 0.3, 16000, 1, None),
        ("A/g1/9", "A", "g1", 0.3, 16000, 1, None),  # probed empty below
        ("B/g1/0", "B", "g1", 0.3, 16000, 1, None),
        ("B/g1/1", "B", "g1", 0.5, 8000, 2, None),
        ("B/g1/2", "B", "g1", 0.4, 16000, 1, None),
    ]
    recordings = []
    for k, (uid, spk, group, seconds, rate, channels, region) in enumerate(
        specs
    ):
        path = src / f"{uid}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        signal = tone(100 + 30 * k, seconds, rate, seed=k)
        if channels == 2:
            signal = np.stack([signal, 0.5 * signal], axis=1)
        sf.write(path, signal, rate)
        start, stop = region or (None, None)
        recordings.append(
            Recording(uid, str(path), spk, start, stop, group=group)
        )
    probes = probe_recordings(recordings, 1.0, 0)
    probes[5] = AudioProbe(16000, 1, 0, 0)
    return recordings, probes


def _region(rec, probe):
    data, _ = sf.read(rec.path, start=probe.start, stop=probe.stop)
    return data.mean(axis=1) if data.ndim == 2 else data


def test_combine_short_recordings(short_recordings, tmp_path):
    recordings, probes = short_recordings
    out = tmp_path / "combined"
    new, written = combine_short_recordings(recordings, probes, 1.0, out)
    by_uid = {r.uid: r for r in new}
    assert sorted(by_uid) == sorted(
        ["A/g1/0", "A/g1-1-comb3", "A/g2/0", "A/g1/9", "B/g1-0-comb3"]
    )
    assert written == 2
    # Single ranges and the empty recording are the originals, untouched.
    for uid in ("A/g1/0", "A/g2/0", "A/g1/9"):
        assert by_uid[uid] is recordings[[r.uid for r in recordings].index(uid)]

    a = by_uid["A/g1-1-comb3"]
    assert (a.speaker, a.group) == ("A", "g1")
    assert a.path == str(out / "A" / "g1-1-comb3.flac")
    assert a.origin == "combined from A/g1/1 .. A/g1/3"
    data, rate = sf.read(a.path)
    info = sf.info(a.path)
    assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    expected = np.concatenate(
        [_region(recordings[k], probes[k]) for k in (1, 2, 3)]
    )
    assert data.size == expected.size == int(0.3 * 16000) + 6400 + 8000
    np.testing.assert_allclose(data, expected, atol=1e-4)

    b = by_uid["B/g1-0-comb3"]
    data, rate = sf.read(b.path)
    assert rate == 16000 and b.speaker == "B"
    middle = torchaudio.functional.resample(
        torch.from_numpy(_region(recordings[7], probes[7])), 8000, 16000
    ).numpy()
    expected = np.concatenate(
        [
            _region(recordings[6], probes[6]),
            middle,
            _region(recordings[8], probes[8]),
        ]
    )
    assert data.size == expected.size == 4800 + 8000 + 6400
    np.testing.assert_allclose(data, expected, atol=1e-4)

    # A rerun keeps the finished files; a truncated one is rewritten.
    stamps = {p: os.stat(p).st_mtime_ns for p in (a.path, b.path)}
    again, written = combine_short_recordings(recordings, probes, 1.0, out)
    assert written == 0 and [r.uid for r in again] == [r.uid for r in new]
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    sf.write(b.path, np.zeros(100), 16000)
    _, written = combine_short_recordings(recordings, probes, 1.0, out)
    assert written == 1 and sf.info(b.path).frames == 19200
    assert not list(out.rglob("*.tmp"))


def _files(tmp_path, specs, rate=16000):
    """Recordings and probes of ``(uid, speaker, group, seconds)``, each a
    tone file under ``tmp_path/src`` probed whole."""
    recordings = []
    for k, (uid, spk, group, seconds) in enumerate(specs):
        path = tmp_path / "src" / f"{uid}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(100 + 20 * k, seconds, rate, seed=k), rate)
        recordings.append(Recording(uid, str(path), spk, group=group))
    return recordings, probe_recordings(recordings, 1.0, 0)


def _seconds(recordings):
    return sum(sf.info(r.path).duration for r in recordings)


def test_combine_across_a_speakers_short_groups(tmp_path, caplog):
    """WeSpeaker stops after combining within a genre; a speaker whose
    genres are each short would then train on nothing. Its short groups
    are combined across genres ("mixed"), never across speakers."""
    recordings, probes = _files(
        tmp_path,
        [
            # C: three genres, each under 3 s, 4.4 s in all.
            ("C/drama-01-001", "C", "drama", 1.2),
            ("C/vlog-01-001", "C", "vlog", 0.8),
            ("C/vlog-01-002", "C", "vlog", 0.9),
            ("C/singing-01-001", "C", "singing", 1.5),
            # D: 1.1 s in all; combined, still short, and warned about.
            ("D/drama-01-001", "D", "drama", 0.5),
            ("D/play-01-001", "D", "play", 0.6),
            # E: one long genre; its one short group is left as it is.
            ("E/drama-01-001", "E", "drama", 3.5),
            ("E/vlog-01-001", "E", "vlog", 1.0),
            # F: a long genre, and two short ones that make 3.5 s together.
            ("F/drama-01-001", "F", "drama", 4.0),
            ("F/play-01-001", "F", "play", 1.0),
            ("F/vlog-01-001", "F", "vlog", 2.5),
        ],
    )
    out = tmp_path / "combined"
    with caplog.at_level(logging.WARNING):
        new, written = combine_short_recordings(recordings, probes, 3.0, out)
    by_uid = {r.uid: r for r in new}
    assert sorted(by_uid) == sorted(
        [
            "C/mixed-drama-01-001-comb4",
            "D/mixed-drama-01-001-comb2",
            "E/drama-01-001",
            "E/vlog-01-001",
            "F/drama-01-001",
            "F/mixed-play-01-001-comb2",
        ]
    )
    assert written == 3
    c = by_uid["C/mixed-drama-01-001-comb4"]
    assert (c.speaker, c.group) == ("C", "mixed")
    assert c.path == str(out / "C" / "mixed-drama-01-001-comb4.flac")
    assert c.origin == "combined from C/drama-01-001 .. C/vlog-01-002"
    # The genres in uid order, each genre's recordings in order.
    data, _ = sf.read(c.path)
    expected = np.concatenate(
        [_region(recordings[k], probes[k]) for k in (0, 3, 1, 2)]
    )
    assert data.size == expected.size == 4.4 * 16000
    np.testing.assert_allclose(data, expected, atol=1e-4)
    assert sf.info(by_uid["F/mixed-play-01-001-comb2"].path).duration >= 3.0
    # No audio moved between speakers: each keeps its own seconds.
    for spk in "CDEF":
        mine = [r for r in recordings if r.speaker == spk]
        assert _seconds([r for r in new if r.speaker == spk]) == pytest.approx(
            _seconds(mine)
        )
    for rec in new:
        if rec.origin.startswith("combined from "):
            first, last = rec.origin[len("combined from ") :].split(" .. ")
            assert first.split("/")[0] == last.split("/")[0] == rec.speaker
    # Only D is too short in all.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "1 speaker(s)" in warnings[0].getMessage()
    assert "D (1.10 s)" in warnings[0].getMessage()
    assert "C (" not in warnings[0].getMessage()

    # A rerun keeps the mixed files.
    again, written = combine_short_recordings(recordings, probes, 3.0, out)
    assert written == 0 and [r.uid for r in again] == [r.uid for r in new]


def test_short_speakers_warning_names_five(caplog):
    """Single recordings are not read: fake paths do."""
    recordings = [
        Recording(f"s{k}/a", f"/nonexistent/s{k}.flac", f"s{k}", group="g")
        for k in range(8)
    ]
    probes = [AudioProbe(16000, 1, 0, 8000)] * 7 + [AudioProbe(16000, 1, 0, 0)]
    with caplog.at_level(logging.WARNING):
        new, written = combine_short_recordings(recordings, probes, 1.0, "x")
    assert written == 0 and len(new) == 8
    message = caplog.records[-1].getMessage()
    assert "8 speaker(s)" in message
    assert "s0 (0.50 s), s1 (0.50 s)" in message
    assert "s5" not in message and "... and 3 more" in message


@pytest.mark.parametrize(
    "uids, group, expected",
    [
        # The genre is in the stem already: not repeated.
        (
            ["A/entertainment-01-001", "A/entertainment-01-002"],
            "entertainment",
            ["A/entertainment-01-001-comb2"],
        ),
        # A stem without the group (VoxCeleb's videos): prefixed.
        (["A/vid1/00001", "A/vid1/00002"], "vid1", ["A/vid1-00001-comb2"]),
        (["A/t1", "A/t2"], "", ["A/all-t1-comb2"]),
        # A stem that merely starts like the group is still prefixed.
        (["A/gx-1", "A/gx-2"], "g", ["A/g-gx-1-comb2"]),
        # Two first stems alike: numbered.
        (
            ["A/a/g-01", "A/a/g-02", "A/b/g-01", "A/b/g-02"],
            "g",
            ["A/g-01-comb2", "A/g-01-comb2-2"],
        ),
    ],
)
def test_combined_names(tmp_path, uids, group, expected):
    recordings, probes = _files(
        tmp_path, [(uid, "A", group, 0.6) for uid in uids]
    )
    new, written = combine_short_recordings(
        recordings, probes, 1.0, tmp_path / "c"
    )
    assert [r.uid for r in new] == expected and written == len(expected)
    for rec in new:
        assert rec.path == str(tmp_path / "c" / f"{rec.uid}.flac")


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resampled_length_is_torchaudios(orig):
    """The length a kept combined file is checked against: torchaudio's
    (its float32 ceiling), not the exact one, or a finished file of a
    resampled part would be rewritten on every run."""
    from speechbrain_unipet.data.cnceleb import _resampled_length

    for frames in (1, 799, 361394, 361395, 1234567):
        got = torchaudio.functional.resample(
            torch.zeros(frames), orig, 16000
        ).numel()
        assert _resampled_length(frames, orig, 16000) == got, frames


def test_genre_of():
    assert genre_of("id00012/singing-01-001") == "singing"
    assert genre_of("test/id00800-singing-01-002") == "singing"
    assert (
        genre_of("test/id00800-live_broadcast-02-010.wav") == "live_broadcast"
    )
    assert genre_of("id00012/karaoke-01-001.flac") == "karaoke"  # as parsed
    assert genre_of("enroll/id00800-enroll") == ""
    assert genre_of("id10270/x6uYqmx31kE/00001") == ""


def test_groups_of_other_layouts(tmp_path):
    for rel in ("wav/s1/vid1/00001.wav", "s1/session/a/take.wav", "s1/t.wav"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.zeros(160), 16000)
    assert [r.group for r in list_voxceleb(tmp_path)] == ["vid1"]
    groups = {r.uid: r.group for r in list_speaker_folders(tmp_path)}
    assert groups["s1/session/a/take"] == "session/a"
    assert groups["s1/t"] == ""


# --------------------------------------------------------------- layout
@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Five synthetic speakers (one at 8 kHz stereo) written in CN-Celeb1's
    layout, the last two evaluation speakers."""
    root = tmp_path_factory.mktemp("cnceleb")
    speakers = {}
    for k in range(5):
        rate = 8000 if k == 1 else 16000
        files = []
        for part in range(2):
            signal = tone(90 + 40 * k, 6.0, rate, seed=10 * k + part)
            if k == 1:
                signal = np.stack([signal, signal], axis=1)
            path = root / "src" / f"spk{k}" / f"{part}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, signal, rate)
            files.append(path)
        speakers[f"spk{k}"] = files
    dest = root / "CN-Celeb_flac"
    counts = write_cnceleb_layout(dest, speakers, 2)
    return dest, counts


def test_layout_lists_training_speakers(layout):
    dest, counts = layout
    assert counts["train_speakers"] == 3 and counts["eval_speakers"] == 2
    assert detect_format(dest) == "cnceleb"
    recordings = list_recordings(dest)
    assert [r.uid for r in recordings] == [r.uid for r in list_cnceleb(dest)]
    assert len(recordings) == counts["train_utterances"]
    assert {r.speaker for r in recordings} == {"id00000", "id00001", "id00002"}
    for rec in recordings:
        assert rec.uid.startswith(rec.speaker + "/")
        assert rec.group in GENRES and rec.group == genre_of(rec.uid)
        assert rec.path.endswith(".flac") and os.path.isfile(rec.path)
        assert rec.origin.endswith(f"dev.lst:{int(rec.speaker[2:]) + 1}"), (
            rec.origin
        )
    for spk in ("id00000", "id00001", "id00002"):
        assert len({r.group for r in recordings if r.speaker == spk}) >= 3
    info = sf.info(recordings[0].path)
    assert (info.samplerate, info.channels) == (16000, 1)

    # Combined within speaker and genre, then across a speaker's short
    # genres ("mixed"); never across speakers.
    probes = probe_recordings(recordings, 1.0, 0)
    new, _ = combine_short_recordings(
        recordings, probes, 5.0, dest.parent / "c"
    )
    for rec in new:
        if rec.origin.startswith("combined from "):
            first, last = rec.origin[len("combined from ") :].split(" .. ")
            assert first.split("/")[0] == last.split("/")[0] == rec.speaker
            if rec.group != "mixed":
                assert genre_of(first) == genre_of(last) == rec.group


def _speakers(root, seconds):
    """Speaker ``spk<k>`` -> one tone file of ``seconds[k]`` s."""
    speakers = {}
    for k, length in enumerate(seconds):
        path = root / "src" / f"spk{k}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(90 + 40 * k, length, 16000, seed=k), 16000)
        speakers[f"spk{k}"] = [path]
    return speakers


def test_layout_evaluation_speakers_are_the_last_eligible(tmp_path):
    """A speaker too short for enrolment and a test piece trains, though
    it sorts last; the evaluation speakers are the last long enough."""
    speakers = _speakers(tmp_path, [9.0, 9.0, 9.0, 9.0, 3.0])
    dest = tmp_path / "CN-Celeb_flac"
    counts = write_cnceleb_layout(dest, speakers, 2)
    assert counts["train_speakers"] == 3 and counts["eval_speakers"] == 2
    assert (dest / "dev/dev.lst").read_text().split() == [
        "id00000",
        "id00001",
        "id00004",
    ]
    protocol = read_cnceleb_protocol(dest)
    assert sorted(protocol.concat_map) == ["id00002-enroll", "id00003-enroll"]
    assert {r.speaker for r in list_cnceleb(dest)} == {
        "id00000",
        "id00001",
        "id00004",
    }
    # Ids follow the sorted names, whichever role.
    short = sf.read(next((dest / "data/id00004").iterdir()))[0]
    assert short.size <= 3 * 16000


def test_layout_too_few_eligible_writes_nothing(tmp_path):
    speakers = _speakers(tmp_path, [3.0, 9.0, 3.0, 2.5])
    dest = tmp_path / "CN-Celeb_flac"
    with pytest.raises(DataPreparationError) as err:
        write_cnceleb_layout(dest, speakers, 2)
    message = str(err.value)
    for text in ("num_eval_speakers=2", "1 of the 4 speakers", "5.0 s"):
        assert text in message, message
    assert not dest.exists() or not any(dest.iterdir())


def test_layout_refuses_a_folder_with_files(tmp_path):
    """A second write over a first would leave the first's folders under
    the second's ids (two people under one id)."""
    speakers = _speakers(tmp_path, [9.0, 9.0, 9.0])
    dest = tmp_path / "CN-Celeb_flac"
    write_cnceleb_layout(dest, speakers, 1)
    before = sorted(p for p in dest.rglob("*"))
    smaller = dict(list(speakers.items())[:2])
    with pytest.raises(DataPreparationError) as err:
        write_cnceleb_layout(dest, smaller, 1)
    assert f"'{dest}' already holds files" in str(err.value)
    assert "Delete it" in str(err.value)
    assert sorted(p for p in dest.rglob("*")) == before
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert write_cnceleb_layout(tmp_path / "empty", smaller, 1)["trials"]


def test_protocol(layout, tmp_path):
    dest, counts = layout
    protocol = read_cnceleb_protocol(dest)
    assert len(protocol.trials) == counts["trials"]
    assert (
        sum(label for label, _, _ in protocol.trials) == counts["target_trials"]
    )
    models = ["id00003-enroll", "id00004-enroll"]
    assert sorted(protocol.avg_map) == sorted(protocol.concat_map) == models
    assert protocol.concat_map["id00003-enroll"] == ["enroll/id00003-enroll"]
    assert all(
        u.startswith("id00003/") for u in protocol.avg_map["id00003-enroll"]
    )
    assert len(protocol.genres) == counts["test_utterances"]
    assert all(u.startswith("test/id0000") for u in protocol.genres)
    assert set(protocol.genres.values()) <= set(GENRES)
    by_uid = {r.uid: r for r in protocol.recordings}
    assert (
        len(by_uid)
        == len(protocol.recordings)
        == (counts["enrol_utterances"] + 2 + counts["test_utterances"])
    )
    assert by_uid["enroll/id00004-enroll"].speaker == "id00004"
    assert by_uid["enroll/id00004-enroll"].path.endswith(".flac")
    for label, model, test in protocol.trials:
        assert test in by_uid and test in protocol.genres
        assert label == int(by_uid[test].speaker == model.split("-")[0])

    paths = write_protocol(protocol, tmp_path / "out")
    trials = read_trials(paths["trials"])
    assert [(t.label, t.enrol, t.test) for t in trials] == protocol.trials
    assert read_enrolment(paths["enroll_avg"]) == protocol.avg_map
    assert read_enrolment(paths["enroll_concat"]) == protocol.concat_map
    lines = paths["test_genres"].read_text().split("\n")[:-1]
    assert dict(line.split() for line in lines) == protocol.genres
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_protocol_absent(tmp_path):
    (tmp_path / "data").mkdir()
    assert read_cnceleb_protocol(tmp_path) is None


# --------------------------------------------------------------- errors
def _edit(path, line, new=None):
    """Replaces (or, with None, removes) 1-based ``line`` of ``path``."""
    lines = path.read_text().splitlines()
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


def _corrupt_missing_test(dest):
    lists = dest / "eval" / "lists"
    rel = lists.joinpath("test.lst").read_text().splitlines()[1]
    (dest / "eval" / rel).with_suffix(".flac").unlink()


def _model_line(dest):
    """enroll.map line of the model of trials.lst's first line."""
    lists = dest / "eval" / "lists"
    model = lists.joinpath("trials.lst").read_text().split()[0]
    lines = lists.joinpath("enroll.map").read_text().splitlines()
    return [k for k, line in enumerate(lines, 1) if line.startswith(model)][0]


@pytest.mark.parametrize(
    "corrupt, reader, expected",
    [
        (
            lambda d: (d / "eval/lists/trials.lst").unlink(),
            read_cnceleb_protocol,
            ["trials.lst' does not exist", "restore it", "<label>'"],
        ),
        (
            lambda d: _edit(
                d / "eval/lists/trials.lst", 2, "id00003-enroll test/x.wav"
            ),
            read_cnceleb_protocol,
            [
                "trials.lst:2:",
                "2 field(s), not 3",
                "1 (target) or 0 (nontarget)",
            ],
        ),
        (
            lambda d: _edit(
                d / "eval/lists/trials.lst",
                3,
                d.joinpath("eval/lists/trials.lst")
                .read_text()
                .splitlines()[2][:-1]
                + "2",
            ),
            read_cnceleb_protocol,
            ["trials.lst:3:", "label '2' is not 0 or 1", "<label>'"],
        ),
        (
            lambda d: _edit(d / "eval/lists/enroll.map", _model_line(d)),
            read_cnceleb_protocol,
            ["trials.lst:1:", "enroll.map", "add it or remove the trial"],
        ),
        (
            _corrupt_missing_test,
            read_cnceleb_protocol,
            ["test.lst:2:", "looked for", "relative to eval/"],
        ),
        (
            lambda d: (d / "dev/dev.lst").write_text(
                d.joinpath("dev/dev.lst").read_text() + "id09999\n"
            ),
            list_cnceleb,
            ["dev.lst:4:", "'id09999'", "restore the folders"],
        ),
        (
            lambda d: (d / "eval/lists/enroll.lst").write_text(
                d.joinpath("eval/lists/enroll.lst").read_text() * 2
            ),
            read_cnceleb_protocol,
            ["enroll.lst:3:", "already defined on line 1", "list each model"],
        ),
        (
            lambda d: _edit(d / "eval/lists/test.lst", 1, "test/other.wav"),
            read_cnceleb_protocol,
            ["trials.lst:", "is not listed in", "test.lst"],
        ),
        (
            lambda d: (d / "eval/lists/enroll.map").write_text("\n"),
            read_cnceleb_protocol,
            ["enroll.map' is empty", "id00800-enroll id00800/singing"],
        ),
        (
            lambda d: (d / "dev/dev.lst").write_text("id00000 id00001\n"),
            list_cnceleb,
            ["dev.lst:1:", "one speaker id a line"],
        ),
        (
            lambda d: shutil.rmtree(d / "data"),
            list_cnceleb,
            ["data' does not exist", "give data_folder the folder"],
        ),
    ],
    ids=[
        "no-trials",
        "two-fields",
        "label-2",
        "model-not-in-map",
        "missing-test-file",
        "speaker-without-folder",
        "duplicate-model",
        "test-not-listed",
        "empty-map",
        "dev-two-fields",
        "no-data",
    ],
)
def test_errors_name_file_and_line(layout, tmp_path, corrupt, reader, expected):
    dest = tmp_path / "copy"
    shutil.copytree(layout[0], dest)
    corrupt(dest)
    with pytest.raises(DataPreparationError) as err:
        reader(dest)
    for text in expected:
        assert text in str(err.value), str(err.value)


# ------------------------------------------------- the recipe's preparation
def _prepare(folder, save, **options):
    from speechbrain_unipet.data.preparation import prepare_speaker_data

    settings = {
        "data_format": "cnceleb",  # as the recipe's yamls say
        "num_test_speakers": 0,
        "num_valid_speakers": 0,
        "seg_dur": 1.0,
        "test_segment_len": 1.0,
        "amp_th": 0,
        "num_workers": 1,
    }
    settings.update(options)
    return prepare_speaker_data(folder, save, **settings)


def test_preparation_trains_no_evaluation_speaker(layout, tmp_path):
    """The protocol's speakers stay out of training even when no
    ``dev/dev.lst`` says which speakers train (every folder of ``data/``
    is then listed, the evaluation speakers' enrolment utterances too)."""
    from speechbrain_unipet.data.preparation import read_csv_rows

    dest, _ = layout
    copy = tmp_path / "CN-Celeb_flac"
    shutil.copytree(dest, copy)
    (copy / "dev" / "dev.lst").unlink()
    stats = _prepare(copy, tmp_path / "save", combine_min_seconds=3.0)
    train = {r["spk_id"] for r in read_csv_rows(tmp_path / "save/train.csv")}
    protocol = read_cnceleb_protocol(copy)
    evaluation = {r.speaker for r in protocol.recordings}
    assert evaluation and not train & evaluation
    assert len(train) == 3
    assert stats["protocol"]["models"] == 2
    assert stats["combined_files"] > 0
    # The trials of training are the protocol's (models on the enrol side).
    assert [
        (t.label, t.enrol, t.test)
        for t in read_trials(tmp_path / "save" / "trials.txt")
    ] == protocol.trials
    test_ids = {r["ID"] for r in read_csv_rows(tmp_path / "save/test.csv")}
    assert test_ids == {r.uid for r in protocol.recordings}


def test_training_only_folder_needs_held_out_speakers(layout, tmp_path):
    """CN-Celeb2 (no eval/lists) with num_test_speakers=0 has no trials:
    an error that says why, before any audio is read."""
    dest, _ = layout
    copy = tmp_path / "CN-Celeb2_flac"
    shutil.copytree(dest, copy)
    shutil.rmtree(copy / "eval")
    (copy / "dev" / "dev.lst").unlink()  # all 5 speakers train
    with pytest.raises(DataPreparationError, match="no eval/lists protocol"):
        _prepare(copy, tmp_path / "save")
    # Held-out speakers instead: it prepares.
    stats = _prepare(copy, tmp_path / "save", num_test_speakers=2)
    assert stats["test"]["speakers"] == 2 and "protocol" not in stats


@pytest.mark.parametrize("seconds", [0, -1.0])
def test_combine_min_seconds_must_be_positive(layout, tmp_path, seconds):
    with pytest.raises(DataPreparationError, match="combine_min_seconds"):
        _prepare(layout[0], tmp_path / "save", combine_min_seconds=seconds)


def test_an_option_given_twice_is_named():
    from speechbrain_unipet.training.hparams import RecipeError, _yaml_mapping

    with pytest.raises(RecipeError, match="given twice.*data_folder"):
        _yaml_mapping("data_folder: a\nseed: 1\ndata_folder: b\n")


def test_cnceleb1_and_cnceleb2_train_together(layout, tmp_path):
    """``data_folder: CN-Celeb_flac,CN-Celeb2_flac``: CN-Celeb2's speakers
    (its ``spk.lst``) train beside CN-Celeb1's; the protocol is CN-Celeb1's."""
    from speechbrain_unipet.data.preparation import read_csv_rows

    dest, counts = layout
    cn2 = tmp_path / "CN-Celeb2_flac"
    names = []
    for k, folder in enumerate(sorted((dest / "data").iterdir())):
        name = f"id1{k:04d}"  # CN-Celeb2's ids do not meet CN-Celeb1's
        shutil.copytree(folder, cn2 / "data" / name)
        names.append(name)
    (cn2 / "spk.lst").write_text("\n".join(names) + "\n")
    assert detect_format(cn2) == "cnceleb"
    stats = _prepare(f"{dest},{cn2}", tmp_path / "save")
    train = {r["spk_id"] for r in read_csv_rows(tmp_path / "save/train.csv")}
    assert set(names) <= train
    assert len(train) == counts["train_speakers"] + len(names)
    assert stats["protocol"]["models"] == counts["eval_speakers"]


def test_trial_utterances_keep_their_recordings_when_others_combine(
    layout, tmp_path
):
    """A verification_file's utterances are scored as listed, even where
    combining merges the other short recordings of the data."""
    from speechbrain_unipet.data.preparation import read_csv_rows

    dest, _ = layout
    recordings = list_cnceleb(dest)
    by_speaker = {}
    for rec in recordings:
        by_speaker.setdefault(rec.speaker, []).append(rec.uid)
    a, b = by_speaker[sorted(by_speaker)[0]][:2]
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 {a} {b}\n")
    _prepare(
        dest,
        tmp_path / "save",
        verification_file=str(trials),
        combine_min_seconds=3.0,
    )
    test = {r["ID"] for r in read_csv_rows(tmp_path / "save/test.csv")}
    assert test == {a, b}
