"""The extraction engine: batched, sharded (2-process gloo) and resumed
extraction each equal one-by-one extraction; bad input gets clear errors."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization

from speechbrain_unipet.evaluation.extraction import (
    ExtractionError,
    extract,
    parts_folder,
)
from speechbrain_unipet.evaluation.utterances import (
    read_utterances,
    utterances_from_folder,
)
from speechbrain_unipet.lobes import PETEncoder
from speechbrain_unipet.lobes.backends import MHFA
from speechbrain_unipet.lobes.embedding import speaker_embeddings
from speechbrain_unipet.scoring.store import EmbeddingStore
from speechbrain_unipet.testing import tiny_ssl_folder

# Lengths in samples (16 kHz): different, so batches carry padding.
LENGTHS = [4000, 9000, 6500, 3000, 12000, 5200, 7700]


def build_modules(ssl_folder, state=None, backend="ecapa"):
    """A tiny UniPET model (gates, so gate means are tested too)."""
    torch.manual_seed(0)
    enc = PETEncoder(
        ssl_folder,
        "unipet",
        output_all_hiddens=backend != "ecapa",
        options={"adapter_dim": 4, "prompt_length": 2},
    )
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    if backend == "ecapa":
        model = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=6)
    else:
        model = MHFA(
            32, num_layers=3, heads=2, compression_dim=8, lin_neurons=6
        )
    modules = torch.nn.ModuleList([enc, norm, model])
    if state is not None:
        modules.load_state_dict(torch.load(state))
    return tuple(modules.eval())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extraction")
    ssl = tiny_ssl_folder(root, "wavlm", num_hidden_layers=2)
    audio = root / "audio"
    rng = np.random.default_rng(0)
    for k, n in enumerate(LENGTHS):
        spk = audio / f"spk{k % 3}"
        spk.mkdir(parents=True, exist_ok=True)
        sf.write(spk / f"utt{k}.wav", rng.standard_normal(n) * 0.1, 16000)
    modules = build_modules(ssl)
    state = root / "modules.pt"
    torch.save(torch.nn.ModuleList(modules).state_dict(), state)
    return {"root": root, "ssl": ssl, "audio": audio, "state": state}


def one_by_one(modules, utterances):
    """The reference: each file alone through the embedding path."""
    from speechbrain_unipet.utils.audio import load_audio

    out, gates = {}, {}
    with torch.no_grad():
        for utt in utterances:
            wav = load_audio(utt.path, 16000)[None]
            emb, utt_gates = speaker_embeddings(*modules, wav)
            out[utt.id] = emb[0, 0].numpy()
            for key, value in utt_gates.items():
                gates.setdefault(key, []).append(value[0].numpy())
    one_by_one.gate_means = {k: np.mean(v, axis=0) for k, v in gates.items()}
    return out


def assert_gate_means(store):
    """The store's gate means are the per-utterance gates' mean."""
    assert set(store.meta["gate_means"]) == set(one_by_one.gate_means)
    for key, values in one_by_one.gate_means.items():
        np.testing.assert_allclose(
            store.meta["gate_means"][key], values, atol=1e-5
        )


@pytest.mark.parametrize("backend", ["ecapa", "mhfa"])
def test_batched_extraction_equals_one_by_one(setup, tmp_path, backend):
    modules = build_modules(setup["ssl"], backend=backend)
    utts = utterances_from_folder(setup["audio"])
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
    setup, tmp_path
):
    modules = build_modules(setup["ssl"])
    utts = utterances_from_folder(setup["audio"])[:3]
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
    setup, tmp_path
):
    """Same condition name, other seed: the noise differs, so the store
    is embedded again (keyed by ``signature``, not ``name``)."""
    from speechbrain_unipet.evaluation.conditions import AdditiveNoise

    modules = build_modules(setup["ssl"])
    utts = utterances_from_folder(setup["audio"])[:2]
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


def test_crops_average_windows(setup, tmp_path):
    modules = build_modules(setup["ssl"])
    utts = utterances_from_folder(setup["audio"])
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


def test_a_killed_extraction_resumes(setup, tmp_path):
    modules = build_modules(setup["ssl"])
    utts = utterances_from_folder(setup["audio"])
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
    setup, tmp_path, caplog
):
    modules = build_modules(setup["ssl"])
    utts = utterances_from_folder(setup["audio"])
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


def test_a_failed_verification_blocks_no_later_one(setup, tmp_path, caplog):
    """A damaged file stops a verification with its name; then another
    trial list of the same run, and of a copy of the run, verify (the
    embeddings made before the error are reused, never refused)."""
    import shutil

    from speechbrain_unipet.utils.audio import AudioError

    modules = build_modules(setup["ssl"])
    clean = utterances_from_folder(setup["audio"])
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


SHARD_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_extraction import build_modules
from speechbrain_unipet.extraction import extract, utterances_from_folder
torch.distributed.init_process_group("gloo")
modules = build_modules({ssl!r}, {state!r})
store = extract(modules, utterances_from_folder({audio!r}), {out!r},
                batch_size=2, progress=False)
assert len(store) == {n}
"""


def test_sharded_extraction_equals_one_by_one(setup, tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(
        SHARD_SCRIPT.format(
            tests=str(pathlib.Path(__file__).parent),
            ssl=str(setup["ssl"]),
            state=str(setup["state"]),
            audio=str(setup["audio"]),
            out=str(tmp_path / "sharded"),
            n=len(LENGTHS),
        )
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29631",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    store = EmbeddingStore.load(tmp_path / "sharded")
    modules = build_modules(setup["ssl"], setup["state"])
    utts = utterances_from_folder(setup["audio"])
    reference = one_by_one(modules, utts)
    assert store.ids == [u.id for u in utts]
    for uid, row in zip(store.ids, store.embeddings, strict=True):
        np.testing.assert_allclose(row, reference[uid], atol=1e-4)


def test_bad_inputs_are_named(setup, tmp_path):
    modules = build_modules(setup["ssl"])
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
