"""Multi-node training as documented (docs/scale.md): two ``torchrun``
launches, one per "node", meeting at one c10d rendezvous, here both on
this machine (gloo, one process each), sharing the output folder."""

import os
import re
import subprocess
import sys

from helpers import RECIPE, epochs_logged, free_port, merged_args


def test_two_nodes_one_rendezvous_agree_on_weights(recipe_env, tmp_path):
    out = tmp_path / "two_nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    args = merged_args(recipe_env["args"], ["--number_of_epochs=2"])
    launches = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={endpoint}",
                "--rdzv_id=unipet-test",
                "train_speaker_embeddings.py",
                "hparams/unipet.yaml",
                *args,
                f"--output_folder={out}",
                "--distributed_backend=gloo",
            ],
            cwd=RECIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        for _ in range(2)
    ]
    logs = [launch.communicate(timeout=400)[0] for launch in launches]
    for launch, log in zip(launches, logs, strict=True):
        assert launch.returncode == 0, log[-5000:]
    assert epochs_logged(out) == [1, 2]
    text = (out / "log.txt").read_text()
    # Both epochs: two processes, the same trainable weights.
    drifts = re.findall(
        r"Epoch (\d+): the trainable weights of the 2 processes differ by "
        r"at most (\S+) \(relative\)",
        text,
    )
    assert [epoch for epoch, _ in drifts] == ["1", "2"], text[-3000:]
    assert all(float(drift) == 0.0 for _, drift in drifts)
