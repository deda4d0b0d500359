"""The CN-Celeb recipe (``recipes/CNCeleb/SpeakerRec``) end to end on
``samples/cnceleb_demo`` (12 demo speakers in CN-Celeb1's released layout):
preparation with short utterances combined, training, verification under
the Avg and the Concat protocols with a table per genre, the VoxCeleb
calibration beside the CN-dev one, the transfer from a VoxCeleb run, and
bad lists refused before training."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import (
    CN_RECIPE,
    FAST,
    REPO,
    checkpoints,
    ckpt_state,
    labels,
    merged_args,
    run_script,
    verify,
)

from speechbrain_unipet.data.trials import read_enrolment, read_trials
from speechbrain_unipet.evaluation.reports import read_scores
from speechbrain_unipet.scoring.calibration import ScoreCalibrator
from speechbrain_unipet.scoring.metrics import calibration_metrics
from speechbrain_unipet.scoring.store import EmbeddingStore

DEMO = REPO / "samples" / "cnceleb_demo"
EVAL_SPEAKERS = {"id00008", "id00009", "id00010", "id00011"}


def cn_train(recipe_env, yaml, out, *extra, check=True):
    """Trains the CN-Celeb recipe's ``yaml`` on the demo layout."""
    base = merged_args(
        [f"--ssl_hub={recipe_env['ssl']}", *FAST],
        [
            f"--data_folder={DEMO}",
            f"--output_folder={out}",
            # The demo's pieces are 1-3.5 s, 8 s per speaker.
            "--combine_min_seconds=2.5",
        ],
    )
    args = merged_args(base, extra)
    return run_script(
        "train_speaker_embeddings.py",
        f"hparams/{yaml}.yaml",
        *args,
        check=check,
        cwd=CN_RECIPE,
    )


def cn_verify(out, protocol, *extra):
    """Scores the run ``out`` under ``protocol``; its results and log."""
    done = run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        f"--protocol={protocol}",
        "--device=cpu",
        *extra,
        cwd=CN_RECIPE,
    )
    with open(out / f"results_{protocol}.json", encoding="utf-8") as f:
        return json.load(f), done.stdout + done.stderr


@pytest.fixture(scope="module")
def cn_run(recipe_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnceleb") / "unipet"
    cn_train(recipe_env, "unipet", out)
    return out


def test_preparation_combines_and_writes_the_protocol(cn_run):
    with open(cn_run / "save" / "prepare_options.json", encoding="utf-8") as f:
        stats = json.load(f)["stats"]
    assert stats["format"] == "cnceleb"
    assert stats["combined_files"] > 0
    assert stats["protocol"]["models"] == 4
    lines = (DEMO / "eval" / "lists" / "trials.lst").read_text().split("\n")
    trials_lst = [line for line in lines if line.strip()]
    assert stats["protocol"]["trials"] == len(trials_lst)
    # Training: no evaluation speaker, combined files among the audio.
    assert not set(labels(cn_run)) & EVAL_SPEAKERS
    train = (cn_run / "save" / "train.csv").read_text()
    assert "/save/combined/" in train
    # The protocol, as the CN-Celeb lists give it.
    trials = read_trials(cn_run / "save" / "trials.txt")
    assert [(t.enrol, t.test, t.label) for t in trials] == [
        (m, f"test/{t.split('/')[1][: -len('.wav')]}", int(lab))
        for m, t, lab in (line.split() for line in trials_lst)
    ]
    avg = read_enrolment(cn_run / "save" / "cnceleb" / "enroll_avg.map")
    concat = read_enrolment(cn_run / "save" / "cnceleb" / "enroll_concat.map")
    assert set(avg) == set(concat) == {f"{s}-enroll" for s in EVAL_SPEAKERS}
    assert all(len(u) >= 2 for u in avg.values())
    assert concat["id00008-enroll"] == ["enroll/id00008-enroll"]


def test_avg_and_concat_scores_and_genres(cn_run):
    avg, _ = cn_verify(cn_run, "avg")
    concat, log = cn_verify(cn_run, "concat")
    # Both protocols embed the utterances of one prepared store, once.
    assert "Reusing the embeddings of" in log and "test" in log
    for result in (avg, concat):
        assert result["num_trials"] == 28 and result["num_target"] == 7
        groups = {g["group"]: g for g in result["groups"]}
        assert groups["all"]["eer"] == pytest.approx(result["eer"])
        assert (
            sum(g["num_trials"] for name, g in groups.items() if name != "all")
            == result["num_trials"]
        )
    genres = dict(
        line.split()
        for line in (cn_run / "save" / "cnceleb" / "test_genres.txt")
        .read_text()
        .splitlines()
    )
    assert {g["group"] for g in avg["groups"]} == {*genres.values(), "all"}
    assert (cn_run / "genres_avg.md").read_text().startswith("| group |")
    # An Avg score is the cosine of the mean of the enrolment utterances'
    # raw embeddings with the test embedding (WeSpeaker's vector_mean.py).
    store = EmbeddingStore.load(cn_run / "embeddings" / "test")
    avg_map = read_enrolment(cn_run / "save" / "cnceleb" / "enroll_avg.map")
    concat_map = read_enrolment(
        cn_run / "save" / "cnceleb" / "enroll_concat.map"
    )
    for protocol, models in (("avg", avg_map), ("concat", concat_map)):
        for trial, score in zip(
            *read_scores(cn_run / f"scores_{protocol}.txt"), strict=True
        ):
            model = store.vectors(models[trial.enrol]).double().mean(0)
            test = store.vectors([trial.test]).double()[0]
            expected = torch.nn.functional.cosine_similarity(model, test, dim=0)
            assert score == pytest.approx(float(expected), abs=1e-5)
    assert avg["enrolment_map"].endswith("enroll_avg.map")
    assert concat["eer"] != avg["eer"] or concat["min_dcf"] != avg["min_dcf"]


def test_voxceleb_calibration_beside_the_cn_dev_one(cn_run, trained):
    vox = trained("unipet")
    if not (vox / "calibration.json").is_file():
        verify(vox)
    vox_cal = vox / "calibration.json"
    result, log = cn_verify(
        cn_run, "concat", f"--compare_calibration=[{vox_cal}]"
    )
    mine, theirs = result["calibration_comparison"]
    assert mine["calibration"] == "this run's"
    assert mine["fitted_on"].endswith("valid_trials.txt")
    assert theirs["calibration"] == str(vox_cal)
    # Fitted on the VoxCeleb run's own scores: another model, said so.
    assert mine["same_model"] and not theirs["same_model"]
    assert theirs["model"].startswith(str(vox.resolve()))
    assert "was fitted on the scores of another model" in log
    # Same scores: the same EER; the VoxCeleb map's Cllr and actual DCF,
    # recomputed from its file and the raw scores.
    assert mine["eer"] == theirs["eer"] == pytest.approx(result["eer"])
    trials, scores = read_scores(cn_run / "scores_concat.txt")
    llrs = ScoreCalibrator.load(vox_cal)(np.asarray(scores)[:, None])
    target = np.array([t.label == 1 for t in trials])
    expected = calibration_metrics(
        torch.as_tensor(llrs[target]), torch.as_tensor(llrs[~target])
    )
    assert theirs["cllr"] == pytest.approx(expected["cllr"], rel=1e-6)
    assert theirs["act_dcf"] == pytest.approx(expected["act_dcf"], rel=1e-6)


def test_transfer_starts_from_the_voxceleb_run(recipe_env, trained, tmp_path):
    """transfer.yaml carries the VoxCeleb run's PET weights, layer weights
    and back-end (learning rates 0: they must come out unchanged) and
    starts a fresh classifier for CN-Celeb's speakers."""
    vox = trained("unipet")
    out = tmp_path / "transfer"
    done = cn_train(
        recipe_env,
        "transfer",
        out,
        f"--init_from={vox}",
        "--lr=0",
        "--lr_pet=0",
    )
    assert "fresh classifier: init_classifier is False" in done.stdout
    theirs, mine = checkpoints(vox)[-1], checkpoints(out)[-1]
    for name in ("ssl_encoder", "embedding_model"):
        a, b = ckpt_state(theirs, name), ckpt_state(mine, name)
        assert a.keys() == b.keys()
        for key in a:
            if "running_" in key or "num_batches" in key:
                continue  # BatchNorm statistics follow the new data
            assert torch.equal(a[key], b[key]), (name, key)
    assert ckpt_state(mine, "classifier")["weight"].shape[0] != ckpt_state(
        theirs, "classifier"
    )["weight"].shape[0] or not torch.equal(
        ckpt_state(mine, "classifier")["weight"],
        ckpt_state(theirs, "classifier")["weight"],
    )


def test_prepare_only_then_a_bad_list_fails_before_training(
    recipe_env, tmp_path
):
    out = tmp_path / "prepared"
    cn_train(recipe_env, "unipet", out, "--prepare_only=True")
    assert (out / "save" / "cnceleb" / "enroll_avg.map").is_file()
    assert not checkpoints(out)
    broken = tmp_path / "CN-Celeb_flac"
    shutil.copytree(DEMO, broken)
    lists = broken / "eval" / "lists" / "trials.lst"
    lines = lists.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # its label gone
    lists.write_text("\n".join(lines) + "\n")
    done = cn_train(
        recipe_env,
        "unipet",
        tmp_path / "bad",
        f"--data_folder={broken}",
        check=False,
    )
    assert done.returncode != 0
    assert "trials.lst:3" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bad" / "save" / "train.csv").exists()
