"""The published systems as recipe yamls (``hparams/published/``).

``tools/make_recipe_hparams.py`` writes them, and their tables in the recipe
README (section "Published systems"), from one table of its own;
``tests/unit/test_recipe_yamls.py`` checks that the files are what it writes, and
runs SpeechBrain's yaml/script rule on every row of the recipe-test CSV,
these yamls included. Here, on the files themselves: every README table cell
is the yaml's value, and every key a yaml changes from its base yaml has a
row, so the documentation and the yamls cannot drift apart; each yaml loads
through the recipe's own loading and value checks with its CSV row's debug
flags and a tiny model, and builds its back-end; each stage starts from the
previous stage's output folder. Nothing is trained.
"""

import csv
import pathlib
import re

import pytest
import speechbrain as sb
import yaml
from ruamel.yaml import YAML

from speechbrain_unipet.training.backends import build_backend
from speechbrain_unipet.training.hparams import load_recipe_hparams
from speechbrain_unipet.training.validator import verification_validator

REPO = pathlib.Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
HPARAMS = RECIPE / "hparams"
PUBLISHED = HPARAMS / "published"
README = RECIPE / "README.md"
RECIPE_CSV = REPO / "tests" / "recipes" / "VoxCeleb.csv"
NAMES = sorted(p.stem for p in PUBLISHED.glob("*.yaml"))
#: Set by the tool on every stage, not rows of the tables (the stage chain
#: is checked below); pet_opt_class follows the row of opt_class.
PLUMBING = {"output_folder", "init_from", "pet_opt_class"}


def readme_tables():
    """The tables of the README's "Published systems" section.

    Returns
    -------
    values : dict
        ``{yaml name: {key: value text}}``: a table's column headers name
        the yamls (in code), the first column the key (in code), and a
        cell's first code span is the yaml's value (``unknown (ours: `X`)``:
        X). Cells without code (``—``, a stage not setting the key, or a
        description) are not values.
    chains : list
        The yaml names of each multi-stage table, in column order.
    """
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Published systems\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    values, chains, columns = {}, [], None
    for line in section.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if columns is None:  # the header of a table
            names = [re.fullmatch(r"`(\w+)`", c) for c in cells]
            columns = [m and m.group(1) in NAMES and m.group(1) for m in names]
            stages = [c for c in columns if c]
            if len(stages) > 1:
                chains.append(stages)
            continue
        key = re.fullmatch(r"`(\w+)`", cells[0])
        for name, cell in zip(columns, cells, strict=False):
            value = re.search(r"`([^`]*)`", cell)
            if key and name and value:
                rows = values.setdefault(name, {})
                assert key.group(1) not in rows, f"twice: {line}"
                rows[key.group(1)] = value.group(1)
    return values, chains


TABLES, CHAINS = readme_tables()


def csv_row(name):
    with open(RECIPE_CSV, newline="", encoding="utf-8") as f:
        (row,) = [
            r
            for r in csv.DictReader(f)
            if r["Hparam_file"].endswith(f"/published/{name}.yaml")
        ]
    return row


def canon(value):
    """A ruamel value as plain data, tags included (a ``!name:`` mapping
    whose class changed must not compare equal)."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if hasattr(value, "items"):
        inner = {k: canon(v) for k, v in value.items()}
    elif isinstance(value, list):
        inner = [canon(v) for v in value]
    else:
        inner = getattr(value, "value", value) if tag else value
    return (tag, inner) if tag else inner


def table_value(text):
    """A table cell as ``canon`` gives the yaml value: ``(tag, rest)`` for
    tagged values, else the YAML literal."""
    tag = re.fullmatch(r"(![\w.:]+)\s*(.*)", text)
    return tag.groups() if tag else yaml.safe_load(text)


def raw(name):
    return YAML().load(PUBLISHED / f"{name}.yaml")


def base_of(name):
    """The base yaml named in the yaml's header."""
    text = (PUBLISHED / f"{name}.yaml").read_text(encoding="utf-8")
    return re.search(r"from hparams/([\w/]+\.yaml)", text).group(1)


def test_every_published_yaml_has_a_table_column():
    assert NAMES and set(TABLES) == set(NAMES)
    assert sorted(n for chain in CHAINS for n in chain) == sorted(
        n for n in NAMES if not n.startswith("unipet")
    )


@pytest.mark.parametrize("name", NAMES)
def test_readme_table_is_the_yaml(name):
    data, base = raw(name), YAML().load(HPARAMS / base_of(name))
    rows = TABLES[name]
    for key, text in rows.items():
        assert key in data, f"{name}: table key {key} is not in the yaml"
        got = canon(data[key])
        if isinstance(got, tuple) and got[0].startswith("!name:"):
            got = (got[0], "")  # the class; its arguments are !refs
        assert got == table_value(text), f"{name}: {key}"
    if "opt_class" in rows:  # one optimiser for all parameters
        assert canon(data["pet_opt_class"])[0] == rows["opt_class"]
    assert not set(base) - set(data), f"{name}: keys of the base dropped"
    changed = {
        k for k in data if k not in base or canon(data[k]) != canon(base[k])
    }
    assert changed - PLUMBING <= set(rows), f"{name}: changes without a row"


@pytest.mark.parametrize("name", NAMES)
def test_published_yaml_loads_with_its_csv_flags_and_builds(name, tmp_path):
    """As the training script loads it, with the recipe-test CSV row's flags
    (tiny model, demo data, one epoch): the recipe's value checks pass."""
    flags = csv_row(name)["test_debug_flags"].split()
    # From any working directory: the repository's paths made absolute.
    flags = [
        re.sub(r"=((?:samples|tests)/.*)", lambda m: f"={REPO / m[1]}", f)
        for f in flags
    ]
    path, run_opts, overrides = sb.parse_arguments(
        [
            str(PUBLISHED / f"{name}.yaml"),
            *flags,
            f"--output_folder={tmp_path / 'out'}",
        ]
    )
    hparams, overrides = load_recipe_hparams(path, overrides)
    data = raw(name)
    # The CSV row runs alone on a CPU: no earlier stage, no fp16.
    if canon(data["init_from"]) is not None:
        assert overrides["init_from"] is None
    if data.get("precision") == "fp16":
        assert run_opts["precision"] == "fp32"
    for key, text in TABLES[name].items():  # plain values, as loaded
        value = table_value(text)
        if key not in overrides and not isinstance(value, tuple):
            assert hparams[key] == value, f"{name}: {key}"
    if hparams["num_valid_speakers"] == 0:  # ckpt_select must allow it
        assert verification_validator(hparams) is None
    build_backend(hparams, num_speakers=4)
    for key in ("opt_class", "pet_opt_class"):
        optimiser = hparams[key]
        if "opt_class" in TABLES[name]:
            assert TABLES[name]["opt_class"].endswith(
                f".{optimiser.func.__name__}"
            )
            assert optimiser.keywords["weight_decay"] == hparams["weight_decay"]


@pytest.mark.parametrize("stages", CHAINS, ids=lambda s: s[0])
def test_each_stage_starts_from_the_previous_one(stages):
    yamls = [raw(name) for name in stages]
    for name, data in zip(stages, yamls, strict=True):
        folder = f"results/published/{name}/<seed>"
        assert canon(data["output_folder"]) == ("!ref", folder)
    assert canon(yamls[0]["init_from"]) is None
    for earlier, later in zip(yamls, yamls[1:], strict=False):
        assert canon(later["init_from"]) == canon(earlier["output_folder"])
        assert later["seed"] == earlier["seed"]  # the same <seed> folder
        # The checkpoints it averages are kept by the earlier stage.
        assert 0 < later["init_average_last"] <= earlier["ckpt_keep_last"]
