"""The recipe trained from shards (``data_format: shards``): make-shards of
the generated speakers, two gloo processes with two DataLoader workers
each, EER validation, the replicas equal, then verification."""

import re

from helpers import (
    epochs_logged,
    kill_after_intra_epoch_checkpoint,
    merged_args,
    run_ddp,
    run_script,
    verify,
)

from speechbrain_unipet.data.shards import make_shards


def shard_args(recipe_env, tmp_path, extra):
    """The recipe's arguments training from shards of the generated
    speakers (16 utterances: 4 shards, one per process and DataLoader
    worker), with ``extra``."""
    shards = tmp_path / "shards"
    make_shards(recipe_env["data"], shards, max_count=4, num_workers=1)
    return merged_args(
        recipe_env["args"],
        [f"--data_folder={shards}", "--data_format=shards", *extra],
    )


def test_two_processes_train_from_shards_and_verify(recipe_env, tmp_path):
    out = tmp_path / "from_shards"
    args = shard_args(
        recipe_env,
        tmp_path,
        [
            "--number_of_epochs=2",
            "--num_workers=2",
        ],
    )
    run_ddp(args, out)
    assert epochs_logged(out) == [1, 2]
    log = (out / "log.txt").read_text()
    train_log = (out / "train_log.txt").read_text()
    assert "valid EER" in train_log
    drifts = re.findall(
        r"the trainable weights of the 2 processes differ by at most (\S+)",
        log,
    )
    assert len(drifts) == 2 and all(float(d) == 0.0 for d in drifts)
    result = verify(out)
    assert result["num_trials"] == 6 and 0 <= result["eer"] <= 1


def test_a_killed_run_resumes_its_epoch_from_the_shards(recipe_env, tmp_path):
    """SIGKILL after an intra-epoch checkpoint; the same command again
    resumes the epoch, its shard reader told how many batches to skip
    (that the skip is exact: tests/unit/test_shard_training.py)."""
    out = tmp_path / "killed"
    args = shard_args(
        recipe_env,
        tmp_path,
        [
            f"--output_folder={out}",
            "--batch_size=2",
            "--number_of_epochs=1",
            "--ckpt_interval_minutes=0",
            "--ckpt_interval_steps=2",
        ],
    )
    kill_after_intra_epoch_checkpoint("hparams/unipet.yaml", args, out)
    done = run_script(
        "train_speaker_embeddings.py", "hparams/unipet.yaml", *args
    )
    log = done.stdout + done.stderr
    resumed = re.search(
        r"Epoch 1 resumes after (\d+) of its (\d+) batches", log
    )
    assert resumed, log[-3000:]
    skipped, total = map(int, resumed.groups())
    assert 2 <= skipped < total and skipped % 2 == 0
    assert epochs_logged(out) == [1]
