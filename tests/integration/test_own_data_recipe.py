"""Training and adapting on users' own speaker data through the recipe:
one recording per speaker, EER validation, verification of generated and
given trial lists, 2-process gloo, errors before training, init_from an
exported model (layouts, resampling, preparation: ``tests/unit/test_own_data.py``).

The runs use real speech: the embedded LibriSpeech excerpt
(``samples/voxceleb_demo``), rewritten as one recording per speaker at
22.05 kHz stereo, the shape most in-house data has.
"""

import json
import re

import pytest
import torch
from helpers import (
    FAST,
    RECIPE,
    epochs_logged,
    merged_args,
    run_ddp,
    run_script,
)

from speechbrain_unipet.data.trials import read_trials
from speechbrain_unipet.demo import write_own_speakers
from speechbrain_unipet.testing import tiny_ssl_folder
from speechbrain_unipet.utils.audio import load_audio

# --------------------------------------------------------------- recipe
OWN = [
    "--num_test_speakers=2",
    "--num_valid_speakers=2",
    "--test_segment_len=1.0",
    "--trial_utts_per_speaker=3",
]


@pytest.fixture(scope="module")
def own_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    data = write_own_speakers(root / "speakers", speakers=10, seconds=3.0)
    # A name with a space and a "$" (SpeechBrain's CSV loader expands those)
    first = sorted(data.iterdir())[0]
    first.rename(data / "Ke$ha Smith")
    ssl = tiny_ssl_folder(root / "models", "wavlm")
    return {
        "root": root,
        "data": data,
        "ssl": ssl,
        "args": merged_args(
            FAST, [f"--data_folder={data}", f"--ssl_hub={ssl}", *OWN]
        ),
    }


def train_own(env, method, out, *extra, check=True):
    return run_script(
        "train_speaker_embeddings.py",
        f"hparams/{method}.yaml",
        *merged_args(env["args"], [f"--output_folder={out}", *extra]),
        check=check,
    )


def logged_stats(out):
    """Per epoch: the valid stats of train_log.txt."""
    stats = []
    for line in (out / "train_log.txt").read_text().splitlines():
        found = dict(re.findall(r"valid (\w+): ([-+.\de]+)", line))
        stats.append({k: float(v) for k, v in found.items()})
    return stats


def test_one_recording_speakers_train_validate_and_verify(own_env):
    out = own_env["root"] / "run_unipet"
    done = train_own(own_env, "unipet", out, "--number_of_epochs=2")
    log = done.stdout + done.stderr
    assert "Resampling on the fly to 16000 Hz: 10 of 10 recordings" in log
    assert "10 of 10 recordings have several channels" in log
    stats = logged_stats(out)
    assert len(stats) == 2
    assert all(0 <= s["EER"] <= 1 and 0 <= s["minDCF"] for s in stats)
    assert (out / "save" / "trials.txt").is_file()
    # The verification script scores the generated trials.
    run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        "--device=cpu",
    )
    result = json.loads((out / "results.json").read_text())
    trials = read_trials(out / "save" / "trials.txt")
    assert result["num_trials"] == len(trials) == 12
    assert result["num_target"] == 6
    # Another trial list over the same data: its utterances are prepared.
    lines = (out / "save" / "trials.txt").read_text().splitlines()
    mine = own_env["root"] / "my_trials.txt"
    mine.write_text(f"{lines[0]}\n{lines[-1]}\n")
    run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        f"--verification_file={mine}",
        "--device=cpu",
    )
    result = json.loads((out / "results.json").read_text())
    assert result["num_trials"] == 2 and result["num_target"] == 1
    # The checkpoint verification loaded is the best-EER one.
    from speechbrain_unipet.training.runs import load_trained_model

    hparams, _ = load_trained_model(out)
    ckpts = hparams["checkpointer"].list_checkpoints()
    best = min(ckpts, key=lambda c: c.meta["EER"])
    assert best.meta["EER"] == pytest.approx(
        min(s["EER"] for s in stats), abs=5e-3
    )
    saved = torch.load(best.path / "ssl_encoder.ckpt", weights_only=True)
    loaded = hparams["ssl_encoder"].pet_state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in saved["state"].items())


def test_one_recording_speakers_two_process_gloo(own_env):
    out = own_env["root"] / "ddp"
    run_ddp(own_env["args"], out)
    assert epochs_logged(out) == [1]
    (stats,) = logged_stats(out)
    assert 0 <= stats["EER"] <= 1


def test_bad_data_fails_before_training(own_env, tmp_path):
    (tmp_path / "m.csv").write_text("path,talker\nx.wav,a\n")
    done = train_own(
        own_env,
        "frozen",
        tmp_path / "o",
        f"--data_folder={tmp_path / 'm.csv'}",
        check=False,
    )
    assert done.returncode != 0
    assert "no speaker column" in done.stderr and "talker" in done.stderr
    assert not (tmp_path / "o" / "train_log.txt").exists()


def test_init_from_an_exported_model(own_env, tmp_path):
    from speechbrain.inference.speaker import EncoderClassifier

    from speechbrain_unipet.export import export
    from speechbrain_unipet.training.backends import build_backend
    from speechbrain_unipet.training.hparams import (
        RecipeError,
        load_recipe_hparams,
    )
    from speechbrain_unipet.training.runs import compute_embedding
    from speechbrain_unipet.training.warm_start import init_from_export

    source = own_env["root"] / "run_unipet"
    if not (source / "hyperparams.yaml").is_file():
        train_own(own_env, "unipet", source)
    hub = export(source, tmp_path / "hub")
    # Before training: the new run embeds exactly as the exported model.
    hparams, _ = load_recipe_hparams(
        str(RECIPE / "hparams/unipet.yaml"),
        {
            "data_folder": str(own_env["data"]),
            "ssl_hub": str(own_env["ssl"]),
            "output_folder": str(tmp_path / "new"),
            "ecapa_channels": [16, 16, 16, 16, 48],
            "emb_dim": 8,
        },
    )
    build_backend(hparams, num_speakers=3)
    init_from_export(hparams, hub)
    modules = torch.nn.ModuleDict(hparams["modules"]).eval()
    wav = load_audio(next(own_env["data"].rglob("*.flac")))
    mine = compute_embedding(modules, wav[None])
    model = EncoderClassifier.from_hparams(
        source=str(hub), savedir=str(hub), run_opts={"device": "cpu"}
    )
    torch.testing.assert_close(
        mine, model.encode_batch(wav[None]), atol=1e-4, rtol=0
    )
    # Another method is an error naming both.
    other, _ = load_recipe_hparams(
        str(RECIPE / "hparams/lora.yaml"),
        {"data_folder": "x", "ssl_hub": str(own_env["ssl"])},
    )
    build_backend(other, num_speakers=3)
    with pytest.raises(RecipeError, match="method 'unipet'.*method 'lora'"):
        init_from_export(other, hub)
    # Adapting on other speakers: the PET weights start there and move.
    out = tmp_path / "adapted"
    train_own(own_env, "unipet", out, f"--init_from={hub}", "--seed=3")
    (ckpt,) = [
        c
        for c in (out / "save").glob("CKPT+*")
        if (c / "ssl_encoder.ckpt").is_file()
    ][-1:]
    adapted = torch.load(ckpt / "ssl_encoder.ckpt", weights_only=True)["state"]
    exported = torch.load(hub / "ssl_encoder.ckpt", weights_only=True)["state"]
    assert set(adapted) == set(exported)
    moved = [k for k in exported if not torch.equal(adapted[k], exported[k])]
    assert moved
