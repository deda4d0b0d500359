"""Every ``speechbrain-unipet`` command end to end on a tiny trained run:
embed, score, calibrate, threshold, verify, plot, export; exit codes and
errors (a refused run writes nothing). ``--version`` and the help texts:
``tests/unit/test_cli_options.py``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechbrain_unipet.cli import main
from speechbrain_unipet.evaluation.reports import read_scores
from speechbrain_unipet.scoring.calibration import ScoreCalibrator
from speechbrain_unipet.scoring.store import EmbeddingStore


@pytest.fixture(scope="module")
def run(recipe_env, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    folder = trained("unipet")
    store = out / "store"
    assert (
        main(
            [
                "embed",
                str(folder),
                str(recipe_env["data"] / "wav"),
                str(store),
                "--num-workers=0",
                "--device=cpu",
            ]
        )
        == 0
    )
    return {"run": folder, "store": store, "out": out, **recipe_env}


def test_embed_writes_a_store_of_every_file(run):
    store = EmbeddingStore.load(run["store"])
    assert len(store) == 16 and store.ids[0] == "id0/vid0/00001"
    assert np.allclose(store.durations, 1.2, atol=1e-3)
    assert store.meta["gate_means"]  # unipet's gates were averaged


def test_module_entry_point_and_usage_errors():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechbrain_unipet",
            "threshold",
            "--p-target",
            "0.01",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "threshold 4.595120" in done.stdout  # log(99)
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_unipet", "nonsense"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_score_calibrate_threshold(run, capsys):
    trials = run["data"] / "trials.txt"
    out = run["out"] / "scored"
    assert (
        main(["score", str(trials), str(run["store"]), "--output", str(out)])
        == 0
    )
    result = json.loads((out / "results.json").read_text())
    for key in ("eer", "min_dcf", "cllr", "min_cllr", "act_dcf"):
        assert np.isfinite(result[key]), key
    assert result["min_cllr"] <= result["cllr"] + 1e-9

    # AS-norm with the store itself as cohort (speakers = first folder).
    normed = run["out"] / "asnorm"
    args = ["score", str(trials), str(run["store"]), "--output", str(normed)]
    assert main([*args, "--cohort", str(run["store"]), "--top-n", "3"]) == 0
    assert (
        json.loads((normed / "results.json").read_text())["score_norm"]
        == "as-norm"
    )

    calibration = run["out"] / "calibration.json"
    code = main(
        [
            "calibrate",
            str(trials),
            str(run["store"]),
            "--output",
            str(calibration),
            "--quality",
            "duration,norm",
        ]
    )
    assert code == 0
    calibrator = ScoreCalibrator.load(calibration)
    assert list(calibrator.names)[0] == "score"
    calibrated = run["out"] / "calibrated"
    code = main(
        [
            "score",
            str(trials),
            str(run["store"]),
            "--output",
            str(calibrated),
            "--calibration",
            str(calibration),
        ]
    )
    assert code == 0
    result = json.loads((calibrated / "results.json").read_text())
    # Fitted on these very trials: calibrated Cllr is no worse than raw.
    assert result["calibrated"]["cllr"] <= result["cllr"] + 1e-6
    assert result["calibrated"]["eer"] == pytest.approx(result["eer"])

    # --p-target with a score file: the Bayes threshold (which the scores
    # do not change) and that decision's error rates on the given LLRs.
    llr_file = calibrated / "calibrated_scores.txt"
    capsys.readouterr()
    assert main(["threshold", str(llr_file), "--p-target", "0.5"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("threshold 0.000000: the Bayes decision")
    scored, llrs = read_scores(llr_file)
    labels = np.array([t.label for t in scored], dtype=bool)
    fa = 100 * (llrs[~labels] >= 0).mean()
    miss = 100 * (llrs[labels] < 0).mean()
    assert f"false-accept rate {fa:.3f} % on {(~labels).sum()} non" in second
    assert f"miss rate {miss:.3f} % on {labels.sum()} target" in second
    assert "actual DCF" in second
    # Two different thresholds asked for at once: refused, both named.
    code = main(
        ["threshold", str(llr_file), "--p-target", "0.5", "--far", ".1"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "--far and --p-target" in err

    assert main(["threshold", str(out / "scores.txt"), "--far", "0.25"]) == 0
    line = capsys.readouterr().out
    threshold = float(line.split()[1].rstrip(":"))
    scored, scores = read_scores(out / "scores.txt")
    labels = np.array([t.label for t in scored], dtype=bool)
    assert (scores[~labels] >= threshold).mean() <= 0.25


def test_verify_and_calibrated_export(run, capsys, tmp_path):
    wav = run["data"] / "wav"
    a, b = wav / "id4/vid0/00001.wav", wav / "id4/vid1/00001.wav"
    capsys.readouterr()
    assert (
        main(["verify", str(run["run"]), str(a), str(b), "--device=cpu"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    store = EmbeddingStore.load(run["store"])
    ea, eb = store.vectors(["id4/vid0/00001", "id4/vid1/00001"])
    cosine = float(torch.nn.functional.cosine_similarity(ea, eb, dim=0))
    assert result["score"] == pytest.approx(cosine, abs=1e-4)
    assert result["same_speaker"] is None and not result["calibrated"]

    # speechbrain-unipet export: python -m speechbrain_unipet.export's
    # arguments and behaviour (a non-empty destination is refused, exit 1).
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(run["run"]), str(tmp_path / "mine")]) == 1
    assert "not empty. Give --overwrite" in capsys.readouterr().err
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    hub = tmp_path / "hub"
    assert main(["export", str(run["run"]), str(hub), "--average-last=0"]) == 0
    assert capsys.readouterr().out == f"Exported to {hub.resolve()}\n"
    assert (hub / "ssl_encoder.ckpt").is_file()
    calibration = tmp_path / "calibration.json"
    args = ["calibrate", str(run["data"] / "trials.txt"), str(run["store"])]
    code = main(
        [
            *args,
            "--output",
            str(calibration),
            "--quality",
            "duration,norm",
            "--export-folder",
            str(hub),
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["verify", str(hub), str(a), str(b), "--device=cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    calibrator = ScoreCalibrator.load(calibration)
    norms = [float(ea.norm()), float(eb.norm())]
    from speechbrain_unipet.scoring.calibration import quality_features

    expected, names = quality_features(
        np.array([cosine]),
        enrol_durations=np.array([1.2]),
        test_durations=np.array([1.2]),
        enrol_norms=np.array([norms[0]]),
        test_norms=np.array([norms[1]]),
    )
    # Every file lasts 1.2 s: the constant durations were left out.
    assert calibrator.names == [
        "score",
        "norm_min",
        "norm_max",
        "norm_diff",
        "norm_ratio",
    ]
    columns = [names.index(n) for n in calibrator.names]
    assert result["calibrated"] and result["same_speaker"] is not None
    assert result["score"] == pytest.approx(
        float(calibrator(expected[:, columns])[0]), abs=1e-3
    )

    # AS-norm calibrations cannot travel with a model: refused, named.
    code = main(
        [
            *args,
            "--output",
            str(tmp_path / "c2.json"),
            "--cohort",
            str(run["store"]),
            "--top-n",
            "3",
            "--export-folder",
            str(hub),
        ]
    )
    assert code == 1
    assert "AS-norm" in capsys.readouterr().err
    assert not (tmp_path / "c2.json").exists()  # refused before it is saved


def test_plot_writes_layer_weights_and_gates(run):
    out = run["out"] / "plots"
    code = main(
        [
            "plot",
            str(run["run"]),
            "--store",
            str(run["store"]),
            "--output",
            str(out),
            "--device=cpu",
        ]
    )
    assert code == 0
    for name in ("layer_weights.png", "gates.png"):
        assert (out / name).stat().st_size > 1000, name


def test_bad_inputs_exit_1_with_the_reason(run, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text(
        "1 id4/vid0/00001.wav nobody/x/1.wav\n0 id4/vid0/00001.wav id5/vid0/00001.wav\n"
    )
    code = main(
        [
            "score",
            str(trials),
            str(run["store"]),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "nobody/x/1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "score",
            str(trials),
            str(tmp_path / "empty"),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "empty" in capsys.readouterr().err
    # plot: the store is read before any plot is written.
    plots = tmp_path / "plots"
    code = main(
        [
            "plot",
            str(run["run"]),
            "--store",
            str(tmp_path / "empty"),
            "--output",
            str(plots),
            "--device=cpu",
        ]
    )
    assert code == 1 and not plots.exists()
    code = main(
        ["embed", str(tmp_path), str(run["data"] / "wav"), str(tmp_path / "s")]
    )
    assert code == 1
    assert (
        "neither a training run nor an exported model"
        in capsys.readouterr().err
    )


def test_scoring_mismatches_and_unusable_audio_are_refused(
    run, tmp_path, capsys
):
    import soundfile as sf

    trials, store = str(run["data"] / "trials.txt"), str(run["store"])
    # A calibration fitted on mean-subtracted scores is not applied to raw.
    calibration = tmp_path / "mean.json"
    args = ["calibrate", trials, store, "--quality", "none"]
    code = main([*args, "--subtract-mean", store, "--output", str(calibration)])
    assert code == 0
    assert ScoreCalibrator.load(calibration).scoring["subtract_mean"] is True
    capsys.readouterr()
    code = main(
        [
            "score",
            trials,
            store,
            "--output",
            str(tmp_path / "o"),
            "--calibration",
            str(calibration),
        ]
    )
    assert code == 1
    assert "subtract_mean=True, these have subtract_mean=False" in (
        capsys.readouterr().err
    )
    # Refused before anything is written: no scores.txt, not even a folder.
    assert not (tmp_path / "o").exists()
    # Nor can it travel with an exported model (which scores raw cosine).
    from speechbrain_unipet.export import add_calibration, export

    hub = export(run["run"], tmp_path / "hub")
    with pytest.raises(ValueError, match="mean-subtracted"):
        add_calibration(hub, ScoreCalibrator.load(calibration))
    # AS-norm subtracts the cohort's mean: a second mean is refused.
    code = main(
        [*args, "--cohort", store, "--subtract-mean", store, "--output", "x"]
    )
    assert code == 1
    assert "drop --subtract-mean" in capsys.readouterr().err
    # A silent recording: exit 1 naming the file, no traceback.
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype="float32"), 16000)
    good = run["data"] / "wav" / "id4/vid0/00001.wav"
    for model in (run["run"], hub):
        code = main(["verify", str(model), str(good), str(silent)])
        assert code == 1
        err = capsys.readouterr().err
        assert "silent.wav" in err and "digital silence" in err, err
