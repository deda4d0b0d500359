"""Session fixtures of the integration tier: the tiny VoxCeleb-like data and
backbone, and the recipe runs that many tests only read.

A run is trained once per session and shared: a test that only needs *a*
trained run of a method (to verify, export, embed, load) takes
``trained(method)``. Such a test must leave the run usable by the others:
it writes into the run only what verification writes there (results,
scores, embeddings), and copies the run where it needs to change it.
"""

import pytest
from helpers import FAST, train, write_speaker_data

from speechbrain_unipet.testing import tiny_ssl_folder


@pytest.fixture(scope="session")
def recipe_env(tmp_path_factory):
    """8 speakers of generated tones, 6 trials, a tiny WavLM; ``args``: the
    recipe's command-line options for them (``helpers.FAST`` sizes)."""
    root = tmp_path_factory.mktemp("recipe")
    data = write_speaker_data(root / "data")
    ssl = tiny_ssl_folder(root / "models", "wavlm")
    return {
        "root": root,
        "data": data,
        "ssl": ssl,
        "args": [
            f"--data_folder={data}",
            f"--verification_file={data / 'trials.txt'}",
            f"--ssl_hub={ssl}",
            *FAST,
        ],
    }


@pytest.fixture(scope="session")
def trained(recipe_env):
    """``trained(method)``: the folder of a one-epoch recipe run of
    ``hparams/<method>.yaml`` on ``recipe_env``, trained on first use."""
    runs = {}

    def get(method):
        if method not in runs:
            out = recipe_env["root"] / f"run_{method}"
            train(recipe_env, method, out)
            runs[method] = out
        return runs[method]

    return get


@pytest.fixture(scope="session")
def frozen_two_epochs(recipe_env):
    """A two-epoch ``frozen`` run with TensorBoard logging, the learning rate
    on the yaml's linear schedule and the margin rising linearly from the
    start of epoch 1 to that of epoch 3 (read by the tests of the logged
    rates, of TensorBoard and of the margin schedule)."""
    out = recipe_env["root"] / "frozen_two_epochs"
    train(
        recipe_env,
        "frozen",
        out,
        "--number_of_epochs=2",
        "--use_tensorboard=True",
        "--margin_increase_start=1",
        "--margin_fix_start=3",
        "--margin_increase_type=linear",
    )
    return out
