"""Export to an offline pretrained folder and loading it with SpeechBrain's
inference interfaces in a fresh process (the runs: the session's shared
``trained`` runs; folders exported by earlier code:
``tests/unit/test_legacy_exports.py``)."""

import os

import pytest
import torch
from helpers import FILES, load_in_fresh_process, recipe_embeddings

from speechbrain_unipet.export import export
from speechbrain_unipet.utils.audio import load_audio


@pytest.mark.parametrize(
    "copy", [True, False], ids=["copy-backbone", "reference"]
)
def test_export_loads_offline_and_matches_recipe(
    recipe_env, trained, tmp_path, copy
):
    run = trained("unipet")
    hub = export(run, tmp_path / "hub", copy_backbone_files=copy)
    names = {p.name for p in hub.iterdir()}
    assert {
        "hyperparams.yaml",
        "ssl_encoder.ckpt",
        "embedding_model.ckpt",
        "classifier.ckpt",
        "label_encoder.ckpt",
        "README.md",
    } <= names
    assert ("backbone" in names) == copy
    text = (hub / "hyperparams.yaml").read_text()
    assert (
        str(recipe_env["root"]) not in text or not copy
    )  # no machine path when copied
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    got = load_in_fresh_process(hub, recipe_env["data"], tmp_path, elsewhere)
    ref = recipe_embeddings(run, recipe_env["data"])
    torch.testing.assert_close(got["single"], ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(got["padded"], got["single"], atol=1e-4, rtol=0)
    assert got["labels"][0].startswith("id")
    cos = torch.nn.functional.cosine_similarity(ref[0], ref[1], dim=-1)
    assert float(got["score"]) == pytest.approx(float(cos), abs=1e-4)
    assert float(got["verify_batch"]) == pytest.approx(float(cos), abs=1e-4)


def test_pet_file_is_a_small_part_of_the_export(trained, tmp_path):
    hub = export(trained("lora"), tmp_path / "hub", copy_backbone_files=True)
    pet = (hub / "ssl_encoder.ckpt").stat().st_size
    backbone = sum(p.stat().st_size for p in (hub / "backbone").iterdir())
    assert pet < 0.2 * backbone


def test_merge_lora_export_gives_same_embeddings(recipe_env, trained, tmp_path):
    run = trained("lora")
    merged = export(run, tmp_path / "merged", merge_lora=True)
    state = torch.load(merged / "ssl_encoder.ckpt", weights_only=True)
    assert set(state["state"]) == {"layer_weights"}
    assert "method: frozen" in (merged / "hyperparams.yaml").read_text()
    got = load_in_fresh_process(merged, recipe_env["data"], tmp_path, tmp_path)
    ref = recipe_embeddings(run, recipe_env["data"])
    torch.testing.assert_close(got["single"], ref, atol=1e-4, rtol=0)


def test_merge_lora_needs_lora(trained, tmp_path):
    with pytest.raises(ValueError, match="has no LoRA"):
        export(trained("unipet"), tmp_path / "x", merge_lora=True)


def test_export_never_damages_the_run_or_a_folder(
    trained, tmp_path, monkeypatch
):
    """Exporting into the run (or a folder inside it, or one that contains
    it) is refused; a non-empty destination needs ``--overwrite``; a failed
    export leaves nothing behind."""
    from speechbrain_unipet.export import ExportError, main

    run = trained("unipet")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for dest in (run, run / "hub", run.parent):
        with pytest.raises(ExportError, match="would overwrite the run"):
            export(run, dest)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty. Give --overwrite"):
        main([str(run), str(mine)])
    with pytest.raises(SystemExit, match="not an exported model folder"):
        main([str(run), str(mine), "--overwrite"])
    assert (mine / "notes.txt").read_text() == "mine"
    mine.joinpath("notes.txt").unlink()
    mine.rmdir()
    hub = tmp_path / "hub"
    assert main([str(run), str(hub)]) == 0
    (hub / "notes.txt").write_text("stale")
    with pytest.raises(SystemExit, match="not empty. Give --overwrite"):
        main([str(run), str(hub)])
    assert main([str(run), str(hub), "--overwrite"]) == 0
    assert not (hub / "notes.txt").exists()
    assert (hub / "ssl_encoder.ckpt").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert hub.stat().st_mode & 0o777 == 0o777 & ~umask
    import speechbrain_unipet.export as exporter

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(exporter, "write_card", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export(run, tmp_path / "failed")
    with pytest.raises(OSError, match="No space left"):
        export(run, hub, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]
    assert (hub / "ssl_encoder.ckpt").is_file()  # the old export is intact


def test_adapters_swap_on_one_backbone(recipe_env, trained, tmp_path):
    from speechbrain_unipet.lobes import PETEncoder

    hubs = {}
    for method in ("unipet", "lora"):
        hubs[method] = export(
            trained(method),
            tmp_path / method,
            copy_backbone_files=True,
        )
    backbone = str(hubs["unipet"] / "backbone")
    wav = load_audio(recipe_env["data"] / "wav" / FILES[0])[None]
    shared = PETEncoder(backbone, method="unipet").eval()
    alone = PETEncoder(backbone, method="unipet").eval()
    alone.load_pet_file(hubs["unipet"] / "ssl_encoder.ckpt")
    with torch.no_grad():
        base = shared(wav)
        shared.load_pet_file(hubs["unipet"] / "ssl_encoder.ckpt")
        torch.testing.assert_close(shared(wav), alone(wav))
        assert not torch.allclose(shared(wav), base)
    with pytest.raises(ValueError, match="method saved='lora' here='unipet'"):
        shared.load_pet_file(hubs["lora"] / "ssl_encoder.ckpt")


def test_broken_hub_folders_give_clear_errors(trained, tmp_path, model_root):
    from speechbrain.inference.speaker import EncoderClassifier

    from speechbrain_unipet.lobes import PETEncoder
    from speechbrain_unipet.testing import tiny_ssl_folder

    hub = export(
        trained("unipet"),
        tmp_path / "hub",
        copy_backbone_files=True,
    )
    (hub / "classifier.ckpt").unlink()
    with pytest.raises(Exception, match="classifier.ckpt"):
        EncoderClassifier.from_hparams(source=str(hub), savedir=str(hub))
    # PET weights of another backbone size
    other = tiny_ssl_folder(model_root, "wavlm", seed=5, hidden_size=48)
    PETEncoder(str(other), method="unipet").save_pet_file(
        tmp_path / "other.ckpt"
    )
    enc = PETEncoder(str(hub / "backbone"), method="unipet")
    with pytest.raises(ValueError, match="hidden_size saved=48 here=32"):
        enc.load_pet_file(tmp_path / "other.ckpt")
    # no backbone anywhere
    with pytest.raises(ValueError, match="no backbone folder next to"):
        PETEncoder(None, method="unipet").load_pet_file(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="must be the output_folder"):
        export(tmp_path / "hub", tmp_path / "x")
