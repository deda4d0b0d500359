"""Trial reading, cosine scoring, AS-norm and plots."""

import builtins

import numpy as np
import pytest
import torch

from speechbrain_unipet.data.trials import Trial, read_enrolment, read_trials
from speechbrain_unipet.scoring.cosine import (
    enrol_models,
    score_trials,
    speaker_cohort,
)
from speechbrain_unipet.scoring.store import EmbeddingStore, EmbeddingStoreError


def test_read_trials_errors_name_file_and_line(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("1 a/b/1.wav a/c/2.wav\n\n2 a/b/1.wav x/y/3.wav\n")
    with pytest.raises(
        ValueError, match=r"t.txt:3: expected 'label enrol test'"
    ):
        read_trials(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="no trials"):
        read_trials(p)


def test_missing_embedding_is_named():
    with pytest.raises(EmbeddingStoreError, match="id1/v/2"):
        score_trials(
            [Trial(1, "id1/v/1", "id1/v/2")], {"id1/v/1": torch.ones(3)}
        )


def wespeaker_pipeline(trials, emb, train, speaker_of, top_n):
    """WeSpeaker's cosine scoring + AS-norm, written from its scripts:
    score.py (mean of the cohort set's raw embeddings, cosine of
    mean-subtracted embeddings), tools/vector_mean.py (a speaker's plain
    mean of raw embeddings), score_norm.py (everything minus the mean,
    cohort and trial sides L2-normalised, top-n highest cohort scores,
    np.mean / np.std, 0.5 * (z_e + z_t); magnitudes of the mean-subtracted
    embeddings). float64, one trial at a time."""
    mean_vec = np.mean(np.stack(list(train.values())), axis=0)
    by_speaker = {}
    for utt, vec in train.items():
        by_speaker.setdefault(speaker_of(utt), []).append(vec)
    cohort = np.stack([np.mean(v, axis=0) for v in by_speaker.values()])
    cohort = cohort - mean_vec
    cohort = cohort / np.sqrt((cohort**2).sum(axis=1, keepdims=True))

    def side(utt):
        vec = emb[utt] - mean_vec
        unit = vec / np.sqrt((vec**2).sum())
        top = np.sort(cohort @ unit)[::-1][:top_n]
        return unit, np.mean(top), np.std(top), np.linalg.norm(vec)

    rows = []
    for trial in trials:
        e, mu_e, sd_e, mag_e = side(trial.enrol)
        t, mu_t, sd_t, mag_t = side(trial.test)
        score = float(e @ t)
        normed = 0.5 * ((score - mu_e) / sd_e + (score - mu_t) / sd_t)
        rows.append((score, normed, mag_e, mag_t, mu_e, mu_t))
    return np.array(rows)


@pytest.mark.parametrize("top_n", [3, 6, 100])
def test_as_norm_equals_the_wespeaker_pipeline(top_n):
    rng = np.random.default_rng(top_n)
    dim = 8
    offset = rng.normal(0, 2, dim)  # a common mean worth subtracting
    # Speakers with 1 to 9 utterances of very different norms: a plain
    # mean of raw embeddings differs from a mean of normalised ones.
    train = {}
    for k, count in enumerate([1, 2, 3, 5, 9, 1, 4, 2]):
        centre = rng.normal(0, 1, dim)
        for u in range(count):
            scale = rng.uniform(0.2, 5.0)
            train[f"spk{k}/u{u}"] = offset + scale * (
                centre + 0.5 * rng.normal(0, 1, dim)
            )
    emb = {f"e{i}": offset + rng.normal(0, 2, dim) for i in range(9)}
    ids = sorted(emb)
    trials = [
        Trial(int(i % 3 == 0), a, b)
        for i, (a, b) in enumerate((a, b) for a in ids for b in ids if a < b)
    ]

    def speaker(utt):
        return utt.split("/")[0]

    expected = wespeaker_pipeline(trials, emb, train, speaker, top_n)
    store = EmbeddingStore.from_dict(emb)
    cohort, mean = speaker_cohort(EmbeddingStore.from_dict(train), speaker)
    got = score_trials(trials, store, cohort, top_n, mean, return_details=True)
    columns = [
        "raw",
        "scores",
        "enrol_norm",
        "test_norm",
        "enrol_cohort_mean",
        "test_cohort_mean",
    ]
    for k, name in enumerate(columns):
        np.testing.assert_allclose(
            got[name].double().numpy(),
            expected[:, k],
            rtol=1e-5,
            atol=1e-5,
            err_msg=name,
        )
    # The test can tell: ddof 1 would be off by far more than 1e-5.
    if top_n < 8:
        ddof1 = got["scores"].double().numpy() * np.sqrt((top_n - 1) / top_n)
        assert np.abs(ddof1 - expected[:, 1]).max() > 1e-3


def test_plots_are_written(tmp_path):
    from speechbrain_unipet.evaluation.plotting import (
        plot_det,
        plot_score_histogram,
    )

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 300), rng.normal(-1, 1, 3000)
    plot_det(pos, neg, tmp_path / "det.png")
    plot_score_histogram(pos, neg, tmp_path / "hist.png")
    for name in ("det.png", "hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_gives_install_hint(monkeypatch, tmp_path):
    from speechbrain_unipet import plotting

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"speechbrain-unipet\[plot\]"):
        plotting.plot_det([1.0, 2.0], [0.0, 0.5], tmp_path / "x.png")


def test_repeated_trials_are_refused(tmp_path):
    from speechbrain_unipet.data.trials import TrialListError, read_trials

    trials = tmp_path / "t.txt"
    trials.write_text(
        "1 a/x/1.wav a/y/2.wav\n0 a/x/1.wav b/z/3.wav\n\n1 a/x/1.wav a/y/2.wav\n"
    )
    with pytest.raises(TrialListError, match=r"t.txt:4: .* already on line 1"):
        read_trials(trials)


# ---------------------------------------------------- stores and scale
def brute_force_as_norm(trials, emb, cohort, top_n, mean):
    """AS-norm of each trial alone, by the textbook formula."""
    out = []
    for tr in trials:
        e = torch.nn.functional.normalize(emb[tr.enrol].double() - mean, dim=0)
        t = torch.nn.functional.normalize(emb[tr.test].double() - mean, dim=0)
        s = float(e @ t)
        stats = []
        for side in (e, t):
            c = sorted((cohort.double() @ side).tolist(), reverse=True)[:top_n]
            c = torch.tensor(c, dtype=torch.float64)
            # Population std (np.std); one cohort score has no spread: the
            # 1e-6 floor of score_trials.
            stats.append((c.mean(), c.std(unbiased=False).clamp(min=1e-6)))
        (mu_e, sd_e), (mu_t, sd_t) = stats
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return torch.tensor(out)


@pytest.mark.parametrize("top_n", [1, 3, 50])
@pytest.mark.parametrize("as_store", [False, True])
def test_as_norm_equals_brute_force(top_n, as_store, monkeypatch):
    import speechbrain_unipet.scoring as scoring

    gen = torch.Generator().manual_seed(top_n)
    ids = [f"s{k % 4}/u{k}" for k in range(12)]
    emb = {i: torch.randn(6, generator=gen) for i in ids}
    train = {f"t{k % 5}/u{k}": torch.randn(6, generator=gen) for k in range(20)}
    cohort, mean = speaker_cohort(
        EmbeddingStore.from_dict(train) if as_store else train,
        lambda u: u.split("/")[0],
    )
    trials = [
        Trial(int(a[:2] == b[:2]), a, b)
        for k, a in enumerate(ids)
        for b in ids[k + 1 :: 3]
    ]
    embeddings = EmbeddingStore.from_dict(emb) if as_store else emb
    # Blocks of 5 rows: the blocked AS-norm must equal the whole one.
    monkeypatch.setattr(scoring, "COHORT_BLOCK", 5)
    got = score_trials(trials, embeddings, cohort, top_n, mean)
    reference = brute_force_as_norm(trials, emb, cohort, top_n, mean.double())
    torch.testing.assert_close(got.double(), reference, atol=1e-5, rtol=1e-5)
    details = score_trials(
        trials, embeddings, cohort, top_n, mean, return_details=True
    )
    assert set(details) == {
        "scores",
        "raw",
        "enrol_norm",
        "test_norm",
        "enrol_cohort_mean",
        "test_cohort_mean",
    }


def test_store_round_trip_and_replacement(tmp_path):
    rng = np.random.default_rng(0)
    store = EmbeddingStore(
        ["a", "b/c"], rng.standard_normal((2, 4)), [1.5, 2.0], {"model": "x"}
    )
    store.save(tmp_path / "s")
    back = EmbeddingStore.load(tmp_path / "s")
    assert back.ids == ["a", "b/c"] and back.meta == {"model": "x"}
    np.testing.assert_array_equal(back.embeddings, store.embeddings)
    np.testing.assert_array_equal(back.durations, [1.5, 2.0])
    # A save over a store replaces it whole (no rows of the old one left).
    EmbeddingStore(["z"], np.ones((1, 4))).save(tmp_path / "s")
    assert EmbeddingStore.load(tmp_path / "s").ids == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_store_errors_name_the_problem(tmp_path):
    with pytest.raises(EmbeddingStoreError, match="No embedding store at"):
        EmbeddingStore.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbeddingStoreError, match="not an embedding store"):
        EmbeddingStore.load(tmp_path / "empty")
    with pytest.raises(EmbeddingStoreError, match="holds no embeddings"):
        EmbeddingStore([], np.zeros((0, 3)))
    with pytest.raises(EmbeddingStoreError, match="2 ids but 3 embedding rows"):
        EmbeddingStore(["a", "b"], np.zeros((3, 3)))
    with pytest.raises(EmbeddingStoreError, match="'a' is in the store"):
        EmbeddingStore(["a", "a"], np.zeros((2, 3)))
    with pytest.raises(EmbeddingStoreError, match=r"NaN or inf, e.g. \['b'\]"):
        EmbeddingStore(["a", "b"], [[0.0, 1.0], [np.nan, 1.0]])
    store = EmbeddingStore(["a", "b"], np.eye(2))
    store.save(tmp_path / "s")
    store = EmbeddingStore.load(tmp_path / "s")
    with pytest.raises(EmbeddingStoreError, match=r"\['zz'\].*embed them"):
        score_trials([Trial(0, "a", "zz")], store)
    cohort = torch.ones(3, 5)
    with pytest.raises(
        EmbeddingStoreError, match="dimension 5 but the embeddings 2"
    ):
        score_trials([Trial(0, "a", "b")], store, cohort=cohort)
    with pytest.raises(EmbeddingStoreError, match="has 2, store has 3"):
        EmbeddingStore.concat([store, EmbeddingStore(["c"], np.ones((1, 3)))])


def test_cnceleb_and_kaldi_lists_and_enrolment(tmp_path):
    cn = tmp_path / "trials.lst"
    cn.write_text("m1 test/a.wav 1\nm1 test/b.wav 0\n")
    kaldi = tmp_path / "trials.kaldi"
    kaldi.write_text("m1 test/a target\nm1 test/b nontarget\n")
    as_tuples = [(t.label, t.enrol, t.test) for t in read_trials(cn)]
    assert as_tuples == [(1, "m1", "test/a"), (0, "m1", "test/b")]
    assert as_tuples == [(t.label, t.enrol, t.test) for t in read_trials(kaldi)]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("m1 test/a.wav 1\n1 m1 test/b.wav\n")
    with pytest.raises(
        ValueError, match=r"mixed.txt:2: .*as on the first line"
    ):
        read_trials(mixed)

    enrol = tmp_path / "enroll.map"
    enrol.write_text("m1 e/1.wav e/2.wav\n")
    store = EmbeddingStore(
        ["e/1", "e/2", "test/a", "test/b"],
        [[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [1.0, -1.0]],
        [1.0, 2.0, 3.0, 4.0],
    )
    # WeSpeaker's (vector_mean.py on enroll.map): the plain mean.
    models = enrol_models(store, read_enrolment(enrol))
    np.testing.assert_allclose(models.embeddings, [[1.0, 1.5]], rtol=1e-6)
    assert models.durations.tolist() == [3.0]
    # The named option: mean direction of the normalised utterances, at
    # their mean norm 2.5.
    models = enrol_models(store, read_enrolment(enrol), average="normalised")
    np.testing.assert_allclose(
        models.embeddings, [[2.5 / 2**0.5, 2.5 / 2**0.5]], rtol=1e-6
    )
    both = EmbeddingStore.concat([store, models])
    scores = score_trials(read_trials(cn), both)
    np.testing.assert_allclose(scores.numpy(), [1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="average must be one of raw"):
        enrol_models(store, read_enrolment(enrol), average="median")
    with pytest.raises(EmbeddingStoreError, match="also utterance ids"):
        enrol_models(store, {"e/1": ["e/2"]})


def test_enrolment_models_score_consistently_with_mean_and_cohort():
    """A one-utterance model scores exactly as its utterance under mean
    subtraction and AS-norm, for both averages; a two-utterance model
    scores as the plain mean of its raw utterances (WeSpeaker) or, with
    ``average="normalised"``, as the mean of its normalised,
    mean-subtracted utterances (brute force)."""
    gen = torch.Generator().manual_seed(3)
    ids = ["e/1", "e/2", "t/1", "t/2", "t/3"]
    x = torch.randn(len(ids), 4, generator=gen) + 2.0
    store = EmbeddingStore(ids, x.numpy())
    train = EmbeddingStore(
        [f"s{k % 4}/u{k}" for k in range(12)],
        (torch.randn(12, 4, generator=gen) + 1.0).numpy(),
    )
    cohort, mean = speaker_cohort(train, lambda u: u.split("/")[0])
    unit = torch.nn.functional.normalize(x.double() - mean.double(), dim=-1)
    for average in ("raw", "normalised"):
        models = enrol_models(
            store, {"one": ["e/1"], "two": ["e/1", "e/2"]}, mean, average
        )
        np.testing.assert_allclose(
            models.embeddings[0], store.embeddings[0], rtol=1e-6
        )
        both = EmbeddingStore.concat([store, models])
        trials = [
            Trial(1, m, t) for m in ("one", "e/1", "two") for t in ids[2:]
        ]
        for kwargs in ({"mean": mean}, {"mean": mean, "cohort": cohort}):
            got = score_trials(trials, both, top_n=3, **kwargs)
            np.testing.assert_allclose(got[:3], got[3:6], rtol=1e-6)
        if average == "raw":
            model = x[:2].double().mean(0) - mean.double()
        else:
            model = unit[:2].mean(0)
        expected = (unit[2:] @ model) / model.norm()
        got = score_trials(trials, both, mean=mean)[6:]
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)
