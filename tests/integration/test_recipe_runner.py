"""The recipe-test CSV's ``unipet`` row runs as SpeechBrain's recipe runner
runs it (the CSV's other checks: ``tests/unit/test_recipe_yamls.py``)."""

import csv
import os
import re
import subprocess
import sys

from helpers import REPO, TESTS

RECIPE_CSV = TESTS / "recipes" / "VoxCeleb.csv"


def csv_rows():
    with open(RECIPE_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, skipinitialspace=True))


def test_unipet_row_runs_like_speechbrains_recipe_runner(tmp_path):
    """As ``tests/utils/recipe_tests.py`` runs a row: from the repository
    root, with ``--output_folder`` and ``--debug --debug_persistently``
    appended, then the ``file_exists`` checks."""
    (row,) = [
        r
        for r in csv_rows()
        if r["Hparam_file"].endswith("hparams/unipet.yaml")
    ]
    out = tmp_path / "VoxCeleb_row_02"
    done = subprocess.run(
        [
            sys.executable,
            row["Script_file"],
            row["Hparam_file"],
            *row["test_debug_flags"].split(),
            "--device=cpu",
            f"--output_folder={out}",
            "--debug",
            "--debug_persistently",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    files = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"])
    for name in files.group(1).split(","):
        assert (out / name.strip()).is_file(), name
