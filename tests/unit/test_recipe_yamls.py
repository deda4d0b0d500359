"""Consistency of the recipe yamls: with the tool that writes them, with
their scripts, with the PET registry, with the recipe-test CSV, and that each
one loads and builds.

The yaml/script rule is the one of SpeechBrain's recipe consistency test,
``tests/utils/check_yaml.py`` (``check_yaml_vs_script``, run by
``tests/consistency/test_yaml.py``) in github.com/speechbrain/speechbrain:
every top-level yaml key must be read by the script (``hparams["x"]``,
``hparams.x``, ``self.hparams.x``, ``modules.x``, ``hparams.get("x"``) or
``!ref``'d by a later yaml entry; run options (``--device`` ...) are exempt.
It is reimplemented here with whole-name matches (SpeechBrain's substring
matches accept e.g. ``lr`` because of ``hparams.lr_annealing``), so a file
that passes here passes there.
"""

import csv
import functools
import importlib.util
import pathlib
import re

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML
from speechbrain.utils.run_opts import RunOptions

from speechbrain_unipet.pet import OPTIONS, PET_METHODS, get_method
from speechbrain_unipet.testing import tiny_ssl_folder
from speechbrain_unipet.training.backends import build_backend
from speechbrain_unipet.training.hparams import load_recipe_hparams, pet_options

REPO = pathlib.Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
HPARAMS = RECIPE / "hparams"
RECIPE_CSV = REPO / "tests" / "recipes" / "VoxCeleb.csv"
CN_HPARAMS = REPO / "recipes" / "CNCeleb" / "SpeakerRec" / "hparams"
#: Each recipe's test CSV and its hparams folder.
RECIPE_CSVS = {
    RECIPE_CSV: HPARAMS,
    REPO / "tests" / "recipes" / "CNCeleb.csv": CN_HPARAMS,
}
# The header of SpeechBrain's tests/recipes/<Dataset>.csv files.
CSV_HEADER = [
    "Task",
    "Dataset",
    "Script_file",
    "Hparam_file",
    "Data_prep_file",
    "Readme_file",
    "Result_url",
    "HF_repo",
    "test_debug_flags",
    "test_debug_checks",
    "performance",
]


def csv_rows(path=None):
    """The rows of one recipe-test CSV, or of all of them."""
    rows = []
    for csv_path in [path] if path else RECIPE_CSVS:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f, skipinitialspace=True))
    return rows


# ------------------------------------- the files the tool writes, current
@functools.cache
def make_recipe_hparams():
    """``tools/make_recipe_hparams.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        "make_recipe_hparams", REPO / "tools" / "make_recipe_hparams.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_written_files_are_what_the_tool_writes():
    """Every method yaml, the W2V-BERT and published yamls and the published
    tables of the recipe README: an edit of unipet.yaml, of the tool's
    tables or of one written file alone fails here until the tool runs."""
    files = make_recipe_hparams().generate()
    stale = sorted(
        str(path.relative_to(REPO))
        for path, text in files.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    )
    assert not stale, f"run python tools/make_recipe_hparams.py: {stale}"
    # No yaml outside the tool but the scoring one (none left behind).
    written = set(HPARAMS.rglob("*.yaml")) - set(files)
    assert written == {HPARAMS / "verification.yaml"}
    assert set(CN_HPARAMS.rglob("*.yaml")) <= set(files)


def test_published_yamls_follow_their_base_yaml():
    """A change of a base yaml reaches the published yamls written from it
    (only the keys of their tables are set)."""
    tool = make_recipe_hparams()
    system = tool.MHFA
    base = (HPARAMS / system.stages[0].base).read_text(encoding="utf-8")
    edited = base.replace("num_workers: 2\n", "num_workers: 7\n")
    assert edited != base
    text = tool.render_published(system, 0, edited)
    assert "\nnum_workers: 7\n" in text and "\nseed: 716\n" in text


# ------------------------------------------------ SpeechBrain's yaml rule
def yaml_variables(path):
    """Top-level keys that no later entry ``!ref``s (``get_yaml_var``)."""
    declared = []
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key = re.match(r"(\w+):", line)
        if key and "!apply" not in line and "!!" not in line:
            declared.append(key.group(1))
        if "!ref" in line:
            for ref in re.findall(r"<(\w+)[^<>]*>", line):
                if ref in declared:
                    declared.remove(ref)
    return declared


def script_reads(script_text, var):
    """Whether the script reads ``var`` in one of SpeechBrain's forms."""
    name = re.escape(var)
    return re.search(
        rf'\["{name}"\]|\b(hparams|modules)\.{name}\b'
        rf'|attr\(self\.hparams, "{name}"|hparams\.get\("{name}"',
        script_text,
    )


@pytest.mark.parametrize(
    "row",
    csv_rows(),
    ids=lambda r: "/".join(pathlib.Path(r["Hparam_file"]).parts[1::3]),
)
def test_every_yaml_variable_is_used_by_its_script(row):
    script = (REPO / row["Script_file"]).read_text(encoding="utf-8")
    run_opts = set(RunOptions().as_dict())
    unused = [
        var
        for var in yaml_variables(REPO / row["Hparam_file"])
        if var not in run_opts and not script_reads(script, var)
    ]
    assert not unused, f"{row['Hparam_file']}: not used by the script"


# ---------------------------------------------------------- the registry
def registry_defaults(method):
    resolved = get_method(method).resolve({})
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in resolved.items()
        if k in get_method(method).options()
    }


def test_one_yaml_per_registered_method():
    names = {p.stem for p in HPARAMS.glob("*.yaml")}
    assert names == set(PET_METHODS) | {"verification"}


@pytest.mark.parametrize("method", PET_METHODS)
def test_method_yaml_writes_out_the_registry_options(method):
    path = HPARAMS / f"{method}.yaml"
    assert "!include" not in path.read_text(encoding="utf-8")
    data = YAML().load(path)  # unresolved: tags kept
    assert data["pet_method"] == method and "recipe" not in data
    expected = registry_defaults(method)
    # Exactly the method's options, with the registry defaults.
    assert {k: data[k] for k in OPTIONS if k in data} == expected
    # They reach the encoder only through options:, each as !ref <key>.
    encoder = data["ssl_encoder"]
    assert not set(OPTIONS) & set(encoder)
    refs = {k: (v.tag.value, v.value) for k, v in encoder["options"].items()}
    assert refs == {k: ("!ref", f"<{k}>") for k in expected}


def test_method_yamls_share_every_other_key():
    keys = {
        m: set(YAML().load(HPARAMS / f"{m}.yaml")) - set(OPTIONS)
        for m in PET_METHODS
    }
    assert all(k == keys["unipet"] for k in keys.values())


# ------------------------------------------------------- load and build
@pytest.fixture(scope="module")
def tiny_ssl(tmp_path_factory):
    return tiny_ssl_folder(tmp_path_factory.mktemp("ssl"), "wavlm")


def base_overrides(tiny_ssl, tmp_path):
    return {
        "data_folder": str(tmp_path / "data"),
        "ssl_hub": str(tiny_ssl),
        "output_folder": str(tmp_path / "out"),
    }


@pytest.mark.parametrize("method", PET_METHODS)
def test_method_yaml_loads_and_builds(method, tiny_ssl, tmp_path):
    with open(HPARAMS / f"{method}.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, base_overrides(tiny_ssl, tmp_path))
    assert pet_options(hparams) == registry_defaults(method)
    trainable, total = hparams["ssl_encoder"].count_parameters()
    assert 0 < trainable < total
    build_backend(hparams, num_speakers=4)
    assert set(hparams["modules"]) == {
        "ssl_encoder",
        "mean_var_norm",
        "embedding_model",
        "classifier",
    }


def test_command_line_option_override(tiny_ssl, tmp_path):
    trainable = {}
    for dim in (64, 128):
        path, _, overrides = sb.parse_arguments(
            [
                str(HPARAMS / "inner_adapter.yaml"),
                f"--adapter_dim={dim}",
                *(
                    f"--{k}={v}"
                    for k, v in base_overrides(tiny_ssl, tmp_path).items()
                ),
            ]
        )
        hparams, _ = load_recipe_hparams(path, overrides)
        assert hparams["adapter_dim"] == dim
        trainable[dim] = hparams["ssl_encoder"].count_parameters()[0]
    assert trainable[64] < trainable[128]


def test_unknown_override_suggests_the_key():
    with pytest.raises(ValueError) as err:
        load_recipe_hparams(HPARAMS / "unipet.yaml", {"adapter_dimm": 64})
    message = str(err.value)
    assert "--adapter_dimm: did you mean --adapter_dim" in message
    assert "Settable keys" not in message  # no list of 60 keys
    with pytest.raises(ValueError) as err:
        load_recipe_hparams(HPARAMS / "unipet.yaml", {"zzz": 1})
    message = str(err.value)
    assert "--zzz is not a key of this yaml. Settable keys" in message
    assert "'data_folder'" in message and "'adapter_dim'" in message
    assert "'ssl_encoder'" not in message  # objects are not settable


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("batch_size", "abc", "--batch_size='abc' must be an integer >= 2"),
        ("number_of_epochs", -1, "--number_of_epochs=-1 must be an integer"),
        ("sentence_len", 0, "--sentence_len=0 must be a number >= 0.1"),
        ("lr", float("nan"), "--lr=nan must be a finite number"),
        ("adapter_dim", 2.5, "PET option adapter_dim=2.5 must be an integer"),
        ("adapter_scale", float("nan"), "PET option adapter_scale=nan"),
        ("aam_fallback", "arcface", "--aam_fallback='arcface' must be one of"),
        ("aam_scale", 0, "--aam_scale=0 must be a number > 0"),
        ("lr_final_ratio", 0, "--lr_final_ratio=0 must be a number > 0"),
        ("lr_decay_gamma", 0.0, "--lr_decay_gamma=0.0 must be a number > 0"),
        ("lr_warmup_start", 1.5, "--lr_warmup_start=1.5 must be a number"),
        ("lr_decay_epochs", -1, "--lr_decay_epochs=-1 must be a number >= 0"),
        ("margin_fix_start", -1, "--margin_fix_start=-1 must be a number"),
        ("emb_dim", 0, "--emb_dim=0 must be an integer >= 1"),
    ],
)
def test_bad_override_values_name_the_key(key, value, expected, tmp_path):
    """Checked before anything is built or prepared."""
    folder = tiny_ssl_folder(tmp_path, "wavlm")
    overrides = {"data_folder": str(tmp_path), "ssl_hub": str(folder)}
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_recipe_hparams(HPARAMS / "unipet.yaml", {**overrides, key: value})


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"margin_increase_start": 3, "margin_fix_start": 2},
            "--margin_fix_start=2 comes before --margin_increase_start=3",
        ),
        (  # the yaml's number_of_epochs (10) with the overrides
            {"lr_schedule": "warmup_exp", "lr_warmup_epochs": 10},
            "--lr_warmup_epochs=10 must be less than --number_of_epochs=10",
        ),
    ],
)
def test_schedule_keys_are_checked_together_before_building(
    overrides, expected, tmp_path
):
    overrides = {"data_folder": str(tmp_path), **overrides}
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_recipe_hparams(HPARAMS / "unipet.yaml", overrides)


#: Published embedding sizes: ECAPA as WeSpeaker's ECAPA on WavLM (192);
#: MHFA, CA-MHFA (Peng et al.) and WeSpeaker's W2V-BERT MFA recipe: 256.
PUBLISHED_EMB_DIM = {"ecapa": 192, "mhfa": 256, "ca_mhfa": 256, "mfa": 256}


@pytest.mark.parametrize("backend", sorted(PUBLISHED_EMB_DIM))
def test_null_emb_dim_is_the_backends_published_size(
    backend, tiny_ssl, tmp_path
):
    sizes = {"backend": backend, "mhfa_heads": 2, "mhfa_compression_dim": 4}
    for emb_dim, expected in ((None, PUBLISHED_EMB_DIM[backend]), (12, 12)):
        overrides = {**base_overrides(tiny_ssl, tmp_path), **sizes}
        if emb_dim is not None:
            overrides["emb_dim"] = emb_dim
        hparams, _ = load_recipe_hparams(HPARAMS / "unipet.yaml", overrides)
        assert hparams["emb_dim"] == emb_dim
        embedding_model, classifier = build_backend(hparams, num_speakers=4)
        encoder = hparams["ssl_encoder"]
        frames = torch.randn(2, 20, encoder.hidden_size)
        if backend != "ecapa":  # the layer stack [L+1, B, T, D]
            frames = frames.expand(encoder.num_layers + 1, -1, -1, -1)
        with torch.no_grad():
            emb = embedding_model.eval()(frames)
        assert emb.shape == (2, 1, expected)
        assert classifier.weight.shape == (4, expected)
        # What export and evaluation rebuild from: the filled-in sizes.
        assert hparams["emb_dim"] == expected
        factory = hparams["backends"][backend]
        assert factory.keywords["lin_neurons"] == expected
        assert hparams["classifier"].keywords["input_size"] == expected


def test_hyperparams_of_runs_with_the_old_nested_layout_load(
    tiny_ssl, tmp_path
):
    """Runs saved before the recipes were self-contained kept the recipe
    under ``recipe:`` and the options as ``pet_options``."""
    with open(HPARAMS / "unipet.yaml", encoding="utf-8") as f:
        flat = resolve_references(f, base_overrides(tiny_ssl, tmp_path))
    body = "".join(f"    {line}\n" for line in flat.getvalue().splitlines())
    old = tmp_path / "hyperparams.yaml"
    old.write_text(
        "pet_method: unipet\npet_options:\n    adapter_dim: 64\nrecipe:\n"
        f"    pet_options:\n        adapter_dim: 64\n{body}",
        encoding="utf-8",
    )
    hparams, _ = load_recipe_hparams(old)
    assert hparams["pet_method"] == "unipet" and "ssl_encoder" in hparams
    assert pet_options(hparams) == {"adapter_dim": 64}


# ------------------------------------------------ W2V-BERT 2.0 recipes
W2V_BERT = HPARAMS / "w2v_bert"
#: What a W2V-BERT recipe changes in its method's yaml (WeSpeaker's sizes).
W2V_BERT_VALUES = {
    "ssl_hub": "facebook/w2v-bert-2.0",
    "backend": "mfa",
    "lora_rank": 64,
    "lora_alpha": 128.0,
    "number_of_epochs": 15,
    "lr_schedule": "warmup_step",
    "lr_warmup_epochs": 5,
}


@pytest.mark.parametrize("method", ["unipet", "lora"])
def test_w2v_bert_yaml_is_its_method_yaml_on_w2v_bert(method):
    ours = YAML().load(W2V_BERT / f"{method}.yaml")
    base = YAML().load(HPARAMS / f"{method}.yaml")
    assert set(ours) == set(base)
    changed = {k for k in base if repr(ours[k]) != repr(base[k])}
    assert changed == set(W2V_BERT_VALUES) & set(base)
    assert all(ours[k] == W2V_BERT_VALUES[k] for k in changed)


@pytest.mark.parametrize("method", ["unipet", "lora"])
def test_w2v_bert_yaml_loads_and_builds(method, tmp_path):
    from speechbrain_unipet.backbones import W2VBertBackbone

    overrides = {
        "data_folder": str(tmp_path / "data"),
        "ssl_hub": str(REPO / "tests/data/tiny-wav2vec2-bert-0"),
        "output_folder": str(tmp_path / "out"),
    }
    with open(W2V_BERT / f"{method}.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    assert isinstance(hparams["ssl_encoder"].backbone, W2VBertBackbone)
    assert hparams["backend"] == "mfa"


# ------------------------------------------------------- the CN-Celeb recipe
CN_SCRIPTS = ("train_speaker_embeddings.py", "speaker_verification_cosine.py")


def test_cnceleb_scripts_are_the_voxceleb_ones():
    """One script per task for both corpora: the CN-Celeb folder links to
    the VoxCeleb recipe's (the same text, so the same yaml rule)."""
    for name in CN_SCRIPTS:
        cn = CN_HPARAMS.parent / name
        assert cn.is_symlink(), name
        assert cn.resolve() == (HPARAMS.parent / name).resolve()


@pytest.mark.parametrize("name", ["unipet", "frozen", "finetune", "transfer"])
def test_cnceleb_yaml_is_its_voxceleb_yaml_with_cnceleb_data(name):
    """A CN-Celeb yaml differs from its VoxCeleb base only in the data
    settings of the tool (and the start of a transfer)."""
    base_name = make_recipe_hparams().CNCELEB[name][0]
    ours = YAML().load(CN_HPARAMS / f"{name}.yaml")
    base = YAML().load(HPARAMS / base_name)
    assert set(ours) == set(base)
    changed = {k for k in base if repr(ours[k]) != repr(base[k])}
    expected = {
        "data_format",
        "combine_min_seconds",
        "num_test_speakers",
        "output_folder",
    }
    if name == "transfer":
        expected |= {"init_from", "init_classifier"}
    assert changed == expected
    assert ours["data_format"] == "cnceleb"
    assert ours["combine_min_seconds"] == 5.0
    assert ours["num_test_speakers"] == 0


@pytest.mark.parametrize("name", ["unipet", "frozen", "finetune", "transfer"])
def test_cnceleb_yaml_loads_and_builds(name, tiny_ssl, tmp_path):
    overrides = base_overrides(tiny_ssl, tmp_path)
    overrides["init_from"] = str(tmp_path / "vox_run")
    path, _, cli = sb.parse_arguments(
        [str(CN_HPARAMS / f"{name}.yaml")]
        + [f"--{k}={v}" for k, v in overrides.items()]
    )
    hparams, _ = load_recipe_hparams(path, cli)
    assert hparams["data_format"] == "cnceleb"
    build_backend(hparams, num_speakers=4)


def test_cnceleb_verification_yaml_picks_the_protocol(tmp_path):
    with open(CN_HPARAMS / "verification.yaml", encoding="utf-8") as f:
        cfg = load_hyperpyyaml(
            f, {"output_folder": str(tmp_path), "protocol": "concat"}
        )
    save = tmp_path / "save" / "cnceleb"
    assert cfg["enrolment_map"] == str(save / "enroll_concat.map")
    assert cfg["trial_groups"] == str(save / "test_genres.txt")
    assert cfg["results_file"] == str(tmp_path / "results_concat.json")
    assert cfg["verification_file"] is None


# -------------------------------------------------- recipe-test CSV rows
@pytest.mark.parametrize("csv_path", RECIPE_CSVS, ids=lambda p: p.stem)
def test_recipe_csv_lists_every_yaml_and_existing_files(csv_path):
    with open(csv_path, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == CSV_HEADER
    rows = csv_rows(csv_path)
    for row in rows:
        for field in ("Script_file", "Hparam_file", "Data_prep_file"):
            assert (REPO / row[field]).is_file(), row[field]
        assert (REPO / row["Readme_file"]).is_file()
        for flag in row["test_debug_flags"].split():
            value = flag.partition("=")[2]
            if value.startswith(("samples/", "tests/data/")):
                assert (REPO / value).exists(), flag
    listed = {row["Hparam_file"] for row in rows}
    hparams = RECIPE_CSVS[csv_path]
    assert listed == {str(p.relative_to(REPO)) for p in hparams.rglob("*.yaml")}


def test_window_overlap_must_be_shorter_than_the_window():
    from speechbrain_unipet.training.hparams import check_recipe_values

    assert "max_chunk_seconds" in (HPARAMS / "verification.yaml").read_text()
    check_recipe_values(
        {"max_chunk_seconds": 20.0, "chunk_overlap_seconds": 2.0}
    )
    with pytest.raises(ValueError, match="--chunk_overlap_seconds=2.0 must be"):
        check_recipe_values(
            {"max_chunk_seconds": 1.0, "chunk_overlap_seconds": 2.0}
        )
