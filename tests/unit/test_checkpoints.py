"""Checkpoints that explain themselves: damaged or missing files are named,
recovery falls back to the next complete checkpoint, and folders of saves
that never completed are removed and logged."""

import logging

import pytest
import torch

from speechbrain_unipet.training.checkpoints import (
    AtomicCheckpointer,
    CheckpointError,
)


def three_checkpoints(folder):
    model = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(folder, {"model": model})
    saved = []
    for value in (1.0, 2.0, 3.0):  # EER: the first is the best
        with torch.no_grad():
            model.weight.fill_(value)
        saved.append(checkpointer.save_checkpoint(meta={"EER": value}))
    return model, checkpointer, saved


def test_damaged_best_checkpoint_falls_back_to_the_next(tmp_path, caplog):
    model, checkpointer, saved = three_checkpoints(tmp_path)
    best = saved[0].path / "model.ckpt"
    best.write_bytes(best.read_bytes()[:100])  # a save killed half-way
    (saved[1].path / "model.ckpt").unlink()  # a deleted file
    with caplog.at_level(logging.WARNING):
        loaded = checkpointer.recover_if_possible(min_key="EER")
    assert loaded.path == saved[2].path
    assert float(model.weight.detach()[0, 0]) == 3.0
    assert str(saved[0].path) in caplog.text
    assert "truncated file(s) ['model.ckpt']" in caplog.text
    assert "the file model.ckpt is missing" in caplog.text
    (saved[2].path / "model.ckpt").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(CheckpointError) as err:
        checkpointer.recover_if_possible(min_key="EER")
    for checkpoint in saved:
        assert str(checkpoint.path) in str(err.value)


def test_incomplete_saves_are_removed_and_logged(tmp_path, caplog):
    _, _, saved = three_checkpoints(tmp_path)
    (saved[1].path / "CKPT.yaml").rename(saved[1].path / "CKPT.yaml.pending")
    checkpointer = AtomicCheckpointer(tmp_path, {"m": torch.nn.Linear(2, 2)})
    assert saved[1].path.exists()  # opening the folder removes nothing
    with caplog.at_level(logging.WARNING):
        checkpointer.remove_incomplete()
    assert not saved[1].path.exists() and saved[0].path.exists()
    assert f"Removed {saved[1].path}" in caplog.text
    assert len(checkpointer.list_checkpoints()) == 2


def test_a_checkpoint_of_other_options_is_not_called_damaged(tmp_path):
    """Only damage falls back to older checkpoints; a mismatch (another
    size, here) is raised as it is, so good checkpoints are never blamed."""
    _, _, saved = three_checkpoints(tmp_path)
    wider = AtomicCheckpointer(tmp_path, {"model": torch.nn.Linear(3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        wider.recover_if_possible(min_key="EER")


def test_averaged_weights_are_the_mean_of_the_last_checkpoints(tmp_path):
    from speechbrain_unipet.training.checkpoints import average_last_checkpoints

    model = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path, {"embedding_model": model})
    weights = []
    for value in (1.0, 2.0, 4.0, 8.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        weights.append(model.weight.detach().clone())
        checkpointer.save_checkpoint(end_of_epoch=True)
    chosen = average_last_checkpoints(checkpointer, 3)
    assert len(chosen) == 3
    torch.testing.assert_close(
        model.weight.detach(), torch.stack(weights[1:]).mean(0)
    )
    torch.testing.assert_close(model.bias.detach(), torch.full((2,), -14 / 3))
    with pytest.raises(ValueError, match="keeps 4 end-of-epoch"):
        average_last_checkpoints(checkpointer, 5)
