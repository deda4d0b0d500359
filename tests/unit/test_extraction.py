"""The extraction engine: batched and resumed extraction each equal
one-by-one extraction; bad input gets clear errors (sharded extraction:
``tests/integration/test_extraction_sharded.py``)."""

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import build_modules, one_by_one

from speechbrain_unipet.evaluation.extraction import (
    ExtractionError,
    extract,
    parts_folder,
)
from speechbrain_unipet.evaluation.utterances import (
    read_utterances,
    utterances_from_folder,
)
from speechbrain_unipet.lobes.embedding import speaker_embeddings


def assert_gate_means(store):
    """The store's gate means are the per-utterance gates' mean."""
    assert set(store.meta["gate_means"]) == set(one_by_one.gate_means)
    for key, values in one_by_one.gate_means.items():
        np.testing.assert_allclose(
            store.meta["gate_means"][key], values, atol=1e-5
        )


@pytest.mark.parametrize("backend", ["ecapa", "mhfa"])
def test_batched_extraction_equals_one_by_one(
    extraction_setup, tmp_path, backend
):
    modules = build_modules(extraction_setup["ssl"], backend=backend)
    utts = utterances_from_folder(extraction_setup["audio"])
    store = extract(
        modules, utts, tmp_path / "store", batch_size=4, progress=False
    )
    reference = one_by_one(modules, utts)
    assert store.ids == [u.id for u in utts]
    for uid, row in zip(store.ids, store.embeddings, strict=True):
        np.testing.assert_allclose(row, reference[uid], atol=1e-4)
    np.testing.assert_allclose(
        store.durations, [n / 16000 for n in _lengths(utts)], rtol=1e-6
    )
    # UniPET's mean gates over the utterances, one value per layer.
    assert_gate_means(store)
    assert not parts_folder(tmp_path / "store").exists()


def _lengths(utts):
    return [sf.info(u.path).frames for u in utts]


def test_a_finished_store_is_reused_and_other_settings_replace_it(
    extraction_setup, tmp_path
):
    modules = build_modules(extraction_setup["ssl"])
    utts = utterances_from_folder(extraction_setup["audio"])[:3]
    calls = []

    def counting(wav, rate, key):
        calls.append(key)
        return wav

    counting.name = "counting"
    extract(modules, utts, tmp_path / "s", transform=counting, progress=False)
    extract(modules, utts, tmp_path / "s", transform=counting, progress=False)
    assert len(calls) == 3  # the second call read the store
    # Other weights (a run trained further): embedded again, not reused.
    with torch.no_grad():
        next(modules[2].parameters()).add_(0.1)
    extract(modules, utts, tmp_path / "s", transform=counting, progress=False)
    assert len(calls) == 6
    store = extract(
        modules,
        utts,
        tmp_path / "s",
        num_crops=2,
        crop_seconds=0.3,
        progress=False,
    )
    assert store.meta["crops"] == [2, 0.3]
    # A transform that cuts the audio: the store keeps what was embedded.
    from speechbrain_unipet.evaluation.conditions import Truncation

    cut = extract(
        modules,
        utts,
        tmp_path / "t",
        transform=Truncation(0.25),
        progress=False,
    )
    expected = np.minimum([n / 16000 for n in _lengths(utts)], 0.25)
    np.testing.assert_allclose(cut.durations, expected, rtol=1e-6)


def test_a_condition_degrading_another_way_is_not_served_from_the_store(
    extraction_setup, tmp_path
):
    """Same condition name, other seed: the noise differs, so the store
    is embedded again (keyed by ``signature``, not ``name``)."""
    from speechbrain_unipet.evaluation.conditions import AdditiveNoise

    modules = build_modules(extraction_setup["ssl"])
    utts = utterances_from_folder(extraction_setup["audio"])[:2]
    first = extract(
        modules,
        utts,
        tmp_path / "n",
        transform=AdditiveNoise(0.0, seed=1),
        progress=False,
    )
    first = first.embeddings.copy()
    again = extract(
        modules,
        utts,
        tmp_path / "n",
        transform=AdditiveNoise(0.0, seed=1),
        progress=False,
    )
    np.testing.assert_array_equal(again.embeddings, first)
    other = extract(
        modules,
        utts,
        tmp_path / "n",
        transform=AdditiveNoise(0.0, seed=2),
        progress=False,
    )
    assert other.meta["transform"] == AdditiveNoise(0.0, seed=2).signature
    assert np.abs(other.embeddings - first).max() > 1e-4


def test_crops_average_windows(extraction_setup, tmp_path):
    modules = build_modules(extraction_setup["ssl"])
    utts = utterances_from_folder(extraction_setup["audio"])
    store = extract(
        modules,
        utts,
        tmp_path / "c",
        num_crops=3,
        crop_seconds=0.3,
        progress=False,
    )
    from speechbrain_unipet.evaluation.extraction import crop_starts
    from speechbrain_unipet.utils.audio import load_audio

    utt = next(u for u in utts if sf.info(u.path).frames == 12000)
    wav = load_audio(utt.path, 16000)
    windows = torch.stack(
        [wav[s : s + 4800] for s in crop_starts(12000, 4800, 3)]
    )
    with torch.no_grad():
        expected = speaker_embeddings(*modules, windows)[0][:, 0].mean(0)
    row = store.embeddings[store.ids.index(utt.id)]
    np.testing.assert_allclose(row, expected.numpy(), atol=1e-4)


class Killed(Exception):
    pass


def kill_after_two_batches(modules, utts, store):
    """Starts an extraction into ``store`` that dies (like a SIGKILL: no
    clean-up runs) after two batches of two utterances were flushed;
    returns the ids it embedded."""
    seen = []

    def dies_after_four(wav, rate, key):
        if len(seen) == 4:
            raise Killed
        seen.append(key)
        return wav

    dies_after_four.name = "identity"
    with pytest.raises(Killed):
        extract(
            modules,
            utts,
            store,
            batch_size=2,
            flush_every=1,
            transform=dies_after_four,
            progress=False,
        )
    return seen


def test_a_killed_extraction_resumes(extraction_setup, tmp_path):
    modules = build_modules(extraction_setup["ssl"])
    utts = utterances_from_folder(extraction_setup["audio"])
    seen = kill_after_two_batches(modules, utts, tmp_path / "r")
    parts = parts_folder(tmp_path / "r")
    assert len(list(parts.glob("part-*.npz"))) == 2  # two whole batches

    again = []

    def identity(wav, rate, key):
        again.append(key)
        return wav

    identity.name = "identity"
    store = extract(
        modules,
        utts,
        tmp_path / "r",
        batch_size=2,
        flush_every=1,
        transform=identity,
        progress=False,
    )
    assert sorted(again) == sorted({u.id for u in utts} - set(seen))
    reference = one_by_one(modules, utts)
    for uid, row in zip(store.ids, store.embeddings, strict=True):
        np.testing.assert_allclose(row, reference[uid], atol=1e-4)
    assert_gate_means(store)  # each utterance counted once
    assert not parts.exists()


def identity_counting(calls):
    """An identity transform recording the ids it sees."""

    def identity(wav, rate, key):
        calls.append(key)
        return wav

    identity.name = "identity"
    return identity


def test_parts_of_other_settings_are_set_aside_not_refused(
    extraction_setup, tmp_path, caplog
):
    modules = build_modules(extraction_setup["ssl"])
    utts = utterances_from_folder(extraction_setup["audio"])
    kill_after_two_batches(modules, utts, tmp_path / "x")
    parts = parts_folder(tmp_path / "x")
    assert len(list(parts.glob("part-*.npz"))) == 2
    calls = []
    with caplog.at_level("WARNING"):
        store = extract(
            modules,
            utts,
            tmp_path / "x",
            transform=identity_counting(calls),
            num_crops=2,
            crop_seconds=0.3,
            progress=False,
        )
    assert len(store) == len(utts) and store.meta["crops"] == [2, 0.3]
    assert sorted(calls) == sorted(u.id for u in utts)  # nothing mixed in
    assert not parts.exists()
    (stale,) = tmp_path.glob("x.parts.stale-*")
    assert len(list(stale.glob("part-*.npz"))) == 2  # kept, not deleted
    assert "other settings (crops)" in caplog.text
    assert str(stale) in caplog.text


def test_a_failed_verification_blocks_no_later_one(
    extraction_setup, tmp_path, caplog
):
    """A damaged file stops a verification with its name; then another
    trial list of the same run, and of a copy of the run, verify (the
    embeddings made before the error are reused, never refused)."""
    import shutil

    from speechbrain_unipet.utils.audio import AudioError

    modules = build_modules(extraction_setup["ssl"])
    clean = utterances_from_folder(extraction_setup["audio"])
    bad = tmp_path / "bad"
    bad.mkdir()
    nan = np.random.default_rng(1).standard_normal(3500) * 0.1
    nan[100] = np.nan
    sf.write(bad / "nan.wav", nan, 16000, subtype="FLOAT")
    # Shortest but one: found in the last batch, after 6 utterances.
    with_nan = clean + utterances_from_folder(bad)
    run = tmp_path / "run"
    store = run / "embeddings" / "test"

    def verify(run_folder, utterances, calls):
        return extract(
            modules,
            utterances,
            run_folder / "embeddings" / "test",
            batch_size=2,
            transform=identity_counting(calls),
            model_id=str(run_folder.resolve()),  # as model_modules does
            progress=False,
        )

    with pytest.raises(AudioError, match=r"nan\.wav' holds NaN"):
        verify(run, with_nan, [])
    assert not store.exists()
    # What was embedded before the error is kept (resumable), nothing else.
    assert sorted(p.name for p in store.parent.iterdir()) == ["test.parts"]
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)

    calls = []
    result = verify(run, clean, calls)
    assert len(calls) == 1  # the 6 embedded before the error are reused
    reference = one_by_one(modules, clean)
    assert result.ids == [u.id for u in clean]
    for uid, row in zip(result.ids, result.embeddings, strict=True):
        np.testing.assert_allclose(row, reference[uid], atol=1e-4)
    assert sorted(p.name for p in store.parent.iterdir()) == ["test"]

    # The copy's model path differs: its parts are set aside, logged.
    calls = []
    with caplog.at_level("WARNING"):
        copied = verify(copy, clean, calls)
    assert len(calls) == len(clean)
    np.testing.assert_allclose(copied.embeddings, result.embeddings, atol=1e-6)
    names = sorted(p.name for p in (copy / "embeddings").iterdir())
    assert names[0] == "test" and names[1].startswith("test.parts.stale-")
    assert len(names) == 2 and "other settings (model)" in caplog.text


def test_bad_inputs_are_named(extraction_setup, tmp_path):
    modules = build_modules(extraction_setup["ssl"])
    silent = tmp_path / "silent"
    silent.mkdir()
    sf.write(silent / "zeros.wav", np.zeros(4000), 16000)
    with pytest.raises(ExtractionError, match=r"zeros.wav.*digital silence"):
        extract(
            modules,
            utterances_from_folder(silent),
            tmp_path / "s",
            progress=False,
        )
    # Failed on its first batch: no part folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent"]
    with pytest.raises(ExtractionError, match="No audio files"):
        (tmp_path / "empty").mkdir()
        utterances_from_folder(tmp_path / "empty")
    lst = tmp_path / "list.txt"
    lst.write_text("a x.wav\na y.wav\n")
    with pytest.raises(ExtractionError, match=r"list.txt:2: the id 'a'"):
        read_utterances(lst)
    with pytest.raises(ExtractionError, match="does not exist"):
        read_utterances(tmp_path / "nothing")
