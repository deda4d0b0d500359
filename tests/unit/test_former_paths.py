"""Former module paths keep every public name they had.

``tests/data/former_api.json`` lists the public names of each flat module
as the last release before the layered package defined them (generated
from that commit's source, 52f2b0a). Saved ``hyperparams.yaml`` files,
exported folders, copies of the recipe scripts in run folders and users'
scripts name them, so each must stay importable from its old path and be
the object the new module defines.
"""

import importlib
import json
import pathlib

import pytest

API = json.loads(
    (pathlib.Path(__file__).parents[1] / "data" / "former_api.json").read_text()
)


@pytest.mark.parametrize("module", sorted(API))
def test_former_path_keeps_its_names(module):
    mod = importlib.import_module(module)
    missing = [name for name in API[module] if not hasattr(mod, name)]
    assert missing == []


def test_former_names_are_the_new_objects():
    """A re-export, not a copy: the old and new paths give one class."""
    from speechbrain_unipet.recipe import load_recipe_hparams
    from speechbrain_unipet.schedules import MarginScheduler
    from speechbrain_unipet.training.hparams import (
        load_recipe_hparams as new_load,
    )
    from speechbrain_unipet.training.schedules import (
        MarginScheduler as NewMarginScheduler,
    )

    assert MarginScheduler is NewMarginScheduler
    assert load_recipe_hparams is new_load
