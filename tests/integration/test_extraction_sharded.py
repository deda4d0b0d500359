"""Sharded extraction: two gloo processes (torchrun) give the store that
one-by-one extraction gives (the engine's other guarantees:
``tests/unit/test_extraction.py``)."""

import os
import subprocess
import sys

import numpy as np
from helpers import LENGTHS, TESTS, build_modules, one_by_one

from speechbrain_unipet.evaluation.utterances import utterances_from_folder
from speechbrain_unipet.scoring.store import EmbeddingStore

SHARD_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import build_modules
from speechbrain_unipet.evaluation.extraction import extract
from speechbrain_unipet.evaluation.utterances import utterances_from_folder
torch.distributed.init_process_group("gloo")
modules = build_modules({ssl!r}, {state!r})
store = extract(modules, utterances_from_folder({audio!r}), {out!r},
                batch_size=2, progress=False)
assert len(store) == {n}
"""


def test_sharded_extraction_equals_one_by_one(extraction_setup, tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(
        SHARD_SCRIPT.format(
            tests=str(TESTS),
            ssl=str(extraction_setup["ssl"]),
            state=str(extraction_setup["state"]),
            audio=str(extraction_setup["audio"]),
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
    modules = build_modules(extraction_setup["ssl"], extraction_setup["state"])
    utts = utterances_from_folder(extraction_setup["audio"])
    reference = one_by_one(modules, utts)
    assert store.ids == [u.id for u in utts]
    for uid, row in zip(store.ids, store.embeddings, strict=True):
        np.testing.assert_allclose(row, reference[uid], atol=1e-4)
