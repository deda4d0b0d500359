"""Trial reading, cosine scoring, AS-norm and plots."""

import builtins

import numpy as np
import pytest
import torch

from speechbrain_unipet.scoring import (
    Trial,
    read_trials,
    score_trials,
    speaker_cohort,
)


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
    with pytest.raises(KeyError, match="id1/v/2"):
        score_trials(
            [Trial(1, "id1/v/1", "id1/v/2")], {"id1/v/1": torch.ones(3)}
        )


def test_cosine_and_as_norm_match_a_per_trial_reference():
    gen = torch.Generator().manual_seed(0)
    emb = {f"u{i}": torch.randn(8, generator=gen) for i in range(12)}
    trials = [
        Trial(i % 2, f"u{i % 12}", f"u{(i * 5 + 1) % 12}") for i in range(20)
    ]
    train = {f"t{i}": torch.randn(8, generator=gen) for i in range(40)}
    spk = {f"t{i}": f"s{i % 7}" for i in range(40)}
    cohort, mean = speaker_cohort(train, spk, subtract_mean=True)
    assert cohort.shape == (7, 8)
    torch.testing.assert_close(cohort.norm(dim=1), torch.ones(7))
    # per-speaker mean of the mean-subtracted, normalised embeddings
    ref_mean = torch.stack(list(train.values())).mean(0)
    s0 = torch.stack(
        [
            torch.nn.functional.normalize(train[k] - ref_mean, dim=0)
            for k in train
            if spk[k] == "s0"
        ]
    ).mean(0)
    torch.testing.assert_close(cohort[0], s0 / s0.norm())

    raw = score_trials(trials, emb)
    normed = score_trials(trials, emb, cohort=cohort, top_n=4, mean=mean)
    cos = torch.nn.functional.cosine_similarity
    for k, t in enumerate(trials):
        e, x = emb[t.enrol], emb[t.test]
        assert raw[k] == pytest.approx(float(cos(e, x, dim=0)), abs=1e-6)
        e, x = e - mean, x - mean
        s = float(cos(e, x, dim=0))
        ce = torch.sort(cohort @ (e / e.norm()), descending=True).values[:4]
        ct = torch.sort(cohort @ (x / x.norm()), descending=True).values[:4]
        ref = 0.5 * ((s - ce.mean()) / ce.std() + (s - ct.mean()) / ct.std())
        assert normed[k] == pytest.approx(float(ref), abs=1e-5)


def test_plots_are_written(tmp_path):
    from speechbrain_unipet.plotting import plot_det, plot_score_histogram

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
    from speechbrain_unipet.scoring import TrialListError, read_trials

    trials = tmp_path / "t.txt"
    trials.write_text(
        "1 a/x/1.wav a/y/2.wav\n0 a/x/1.wav b/z/3.wav\n\n1 a/x/1.wav a/y/2.wav\n"
    )
    with pytest.raises(TrialListError, match=r"t.txt:4: .* already on line 1"):
        read_trials(trials)
