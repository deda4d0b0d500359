"""The published systems as recipe yamls (``hparams/published/``).

Each yaml loads through the recipe's own loading and value checks
(``load_recipe_hparams``) with a tiny model, passes SpeechBrain's yaml/script
rule, builds its back-end, and has exactly the values of its table in
``PUBLISHED.md``: every table row is checked against the yaml, and every key
the yaml changes from its base yaml must have a row, so the table and the
yamls cannot drift apart. Nothing is trained.
"""

import pathlib
import re

import pytest
import yaml
from ruamel.yaml import YAML
from speechbrain.utils.run_opts import RunOptions
from test_recipe_yamls import script_reads, yaml_variables

from speechbrain_unipet.recipe import (
    build_backend,
    load_recipe_hparams,
    verification_validator,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
HPARAMS = RECIPE / "hparams"
PUBLISHED = HPARAMS / "published"
TABLES = RECIPE / "PUBLISHED.md"
SCRIPT = RECIPE / "train_speaker_embeddings.py"
TINY = {
    "microsoft/wavlm-base-plus": REPO / "tests" / "data" / "tiny-wavlm-0",
    "facebook/w2v-bert-2.0": REPO / "tests" / "data" / "tiny-wav2vec2-bert-0",
}
#: Multi-stage systems: each stage starts from the previous one's output.
STAGES = [
    [
        "mhfa_wavlm_base_plus_s1_frozen",
        "mhfa_wavlm_base_plus_s2_joint_ft",
        "mhfa_wavlm_base_plus_s3_lmft",
    ],
    [
        "w2v_bert_lora_mfa_s1",
        "w2v_bert_lora_mfa_s2_joint_ft",
        "w2v_bert_lora_mfa_s3_lmft",
    ],
]
#: Embedding size the table's ``emb_dim: null`` stands for (PUBLISHED.md).
PUBLISHED_EMB_DIM = {"mhfa": 256, "mfa": 256, "ecapa": 192}


def published_tables():
    """``{yaml name: {"base": base yaml, "rows": {key: value text}}}``
    from the ``### `published/<name>.yaml``` sections of PUBLISHED.md: the
    rows whose key and value cells are code (``—`` rows are published values
    the recipe cannot express)."""
    tables, current = {}, None
    for line in TABLES.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#+ `published/(\w+)\.yaml`", line)
        if heading:
            current = tables.setdefault(heading.group(1), {"rows": {}})
            continue
        if line.startswith("#"):
            current = None
        if current is None:
            continue
        base = re.match(r"Base: `hparams/([\w/]+\.yaml)`", line)
        if base:
            current["base"] = base.group(1)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = re.fullmatch(r"`(\w+)`", cells[0])
        if line.startswith("|") and key:
            value = re.fullmatch(r"`(.*)`", cells[1])
            assert value, f"{line}: the value cell must be code"
            assert key.group(1) not in current["rows"], f"twice: {line}"
            current["rows"][key.group(1)] = value.group(1)
    return tables


TABLE = published_tables()
NAMES = sorted(p.stem for p in PUBLISHED.glob("*.yaml"))


def canon(value):
    """A ruamel value as plain data, tags included (a ``!name:`` map whose
    class changed must not compare equal)."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if hasattr(value, "items"):
        inner = {k: canon(v) for k, v in value.items()}
    elif isinstance(value, list):
        inner = [canon(v) for v in value]
    else:
        inner = getattr(value, "value", value) if tag else value
    return (tag, inner) if tag else inner


def table_value(text):
    """A table cell as ``canon`` gives the yaml value: ``!tag rest`` for
    tagged values, else the YAML literal."""
    tag = re.fullmatch(r"(![\w.:]+)\s*(.*)", text)
    if tag:
        return tag.groups()
    return yaml.safe_load(text)


def raw(name):
    return YAML().load(PUBLISHED / f"{name}.yaml")


def yaml_base(name):
    """The base yaml named in the yaml's header (``# Base: hparams/...``)."""
    text = (PUBLISHED / f"{name}.yaml").read_text(encoding="utf-8")
    return re.search(r"^# Base: hparams/([\w/]+\.yaml)", text, re.M).group(1)


def load(name, tmp_path):
    """Loaded like the training script does, with a tiny model."""
    overrides = {
        "data_folder": str(tmp_path / "data"),
        "verification_file": str(tmp_path / "trials.txt"),
        "output_folder": str(tmp_path / "out"),
        "ssl_hub": str(TINY[str(raw(name)["ssl_hub"])]),
    }
    hparams, _ = load_recipe_hparams(PUBLISHED / f"{name}.yaml", overrides)
    return hparams, overrides


def test_every_published_yaml_has_a_table_and_back():
    assert NAMES and set(NAMES) == set(TABLE)
    for name in NAMES:
        assert TABLE[name].get("base") == yaml_base(name), name
        assert (HPARAMS / yaml_base(name)).is_file()


@pytest.mark.parametrize("name", NAMES)
def test_yaml_values_are_the_table_values(name):
    data = raw(name)
    for key, text in TABLE[name]["rows"].items():
        assert key in data, f"{name}: table key {key} is not in the yaml"
        got = canon(data[key])
        if isinstance(got, tuple) and got[0].startswith("!name:"):
            got = (got[0], "")  # the class; its arguments are !refs
        assert got == table_value(text), f"{name}: {key}"


@pytest.mark.parametrize("name", NAMES)
def test_every_changed_key_is_in_the_table_with_a_comment(name):
    """What the yaml changes from its base (or adds) is in the table, and
    the yaml cites its source in a comment above it."""
    data, base = raw(name), YAML().load(HPARAMS / yaml_base(name))
    changed = {
        k for k in data if k not in base or canon(data[k]) != canon(base[k])
    }
    assert not set(base) - set(data), f"{name}: keys of the base dropped"
    assert changed <= set(TABLE[name]["rows"]), name
    if name.startswith("unipet"):
        return  # nothing is published: the recipe's own values, no source
    lines = (PUBLISHED / f"{name}.yaml").read_text(encoding="utf-8")
    lines = lines.splitlines()
    for key in changed - {"opt_class"}:  # one comment for both optimisers
        at = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}:"))
        assert lines[at - 1].startswith("#"), f"{name}: {key} has no source"


@pytest.mark.parametrize("name", NAMES)
def test_published_yaml_loads_checks_and_builds(name, tmp_path):
    hparams, overrides = load(name, tmp_path)
    # Plain values as loaded (checked by the recipe's value rules).
    for key, text in TABLE[name]["rows"].items():
        value = table_value(text)
        if key not in overrides and not isinstance(value, tuple):
            assert hparams[key] == value, f"{name}: {key}"
    if not hparams["num_valid_speakers"]:  # ckpt_select must allow it
        assert verification_validator(hparams) is None
    build_backend(hparams, num_speakers=4)
    assert hparams["emb_dim"] == PUBLISHED_EMB_DIM[hparams["backend"]]
    optimiser = TABLE[name]["rows"].get("opt_class")
    if optimiser:  # both optimisers: that class, the yaml's weight decay
        for key in ("opt_class", "pet_opt_class"):
            assert optimiser.endswith(f".{hparams[key].func.__name__}")
            decay = hparams[key].keywords["weight_decay"]
            assert decay == hparams["weight_decay"], f"{name}: {key}"


@pytest.mark.parametrize("name", NAMES)
def test_published_yaml_variables_are_used_by_the_script(name):
    """SpeechBrain's ``check_yaml_vs_script`` rule (see
    test_recipe_yamls.py), run options exempt."""
    script = SCRIPT.read_text(encoding="utf-8")
    run_opts = set(RunOptions().as_dict())
    unused = [
        var
        for var in yaml_variables(PUBLISHED / f"{name}.yaml")
        if var not in run_opts and not script_reads(script, var)
    ]
    assert not unused, f"{name}: not used by the script"


@pytest.mark.parametrize("stages", STAGES, ids=lambda s: s[0])
def test_each_stage_starts_from_the_previous_one(stages):
    first = raw(stages[0])
    assert canon(first["init_from"]) is None
    for before, after in zip(stages, stages[1:], strict=False):
        earlier, later = raw(before), raw(after)
        assert canon(later["init_from"]) == canon(earlier["output_folder"])
        assert later["seed"] == earlier["seed"]  # the same <seed> folder
        # The averaged checkpoints it starts from are kept.
        assert 0 < later["init_average_last"] <= earlier["ckpt_keep_last"]
