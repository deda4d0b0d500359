"""Writes the recipe yamls and the published-system tables of the recipe
README (from the repository root, ``python tools/make_recipe_hparams.py``;
``--check`` lists what is stale and writes nothing):

* ``recipes/VoxCeleb/SpeakerRec/hparams/<method>.yaml`` for every method of
  the PET registry (``speechbrain_unipet.pet.PET_METHODS``), copies of
  ``unipet.yaml`` with that method's sections;
* ``hparams/w2v_bert/<method>.yaml``: a method yaml with the keys of
  ``BACKBONE_RECIPES`` (W2V-BERT 2.0 as WeSpeaker trains it);
* ``hparams/published/<stage>.yaml``: one yaml per training stage of a
  published system (``SYSTEMS``): its base yaml (one of the above) with the
  published values, a comment above each key citing its source, and a
  header naming the system, the stage and the sources;
* the tables of those systems in the recipe README (section "Published
  systems", between two markers), from the same ``SYSTEMS`` rows, so the
  documentation and the yamls cannot disagree;
* ``recipes/CNCeleb/SpeakerRec/hparams/<name>.yaml`` (``CNCELEB``): a
  VoxCeleb method yaml with CN-Celeb's data settings (and, for
  ``transfer``, a start from a VoxCeleb run or export), and its
  ``verification.yaml``: the VoxCeleb one scoring CN-Celeb's protocols.

Each method yaml is a full, self-contained SpeechBrain recipe, as in
SpeechBrain's own recipe folders. The files differ only in their header,
their ``PET method`` section (method, ``lr_pet``, the method's options with
the registry defaults) and the ``options:`` of ``ssl_encoder``. To change
the shared part, edit ``unipet.yaml`` and run this script: every derived
yaml follows. ``tests/test_recipe_yamls.py`` fails while a written file
differs from what this script writes, and checks the method yamls against
the registry on its own.

Authors
 * speechbrain-unipet contributors 2026
"""

import dataclasses
import pathlib
import re
import sys
import textwrap

from speechbrain_unipet.pet import OPTIONS, PET_METHODS, get_method

HPARAMS = (
    pathlib.Path(__file__).resolve().parents[1]
    / "recipes"
    / "VoxCeleb"
    / "SpeakerRec"
    / "hparams"
)
TEMPLATE = "unipet.yaml"

# Method -> (header title, lr_pet, why that rate when it was not carried
# over from an earlier recipe). Rates of the recipes that existed before
# are kept as they were; none was tuned on VoxCeleb here.
METHODS = {
    "finetune": (
        "Full fine-tuning of the Transformer (CNN frozen)",
        "0.00005",
        "",
    ),
    "frozen": (
        "Frozen SSL encoder, learnable layer-weighted sum (SUPERB)",
        "0.01",
        "",
    ),
    "inner_adapter": (
        "Inner (parallel) adapters in every layer (Sang & Hansen 2024)",
        "0.005",
        "Set like the other adapter recipes (0.005), not tuned.",
    ),
    "inter_adapter": (
        "Inter adapters on every hidden state (Sang & Hansen 2024)",
        "0.005",
        "Set like the other adapter recipes (0.005), not tuned.",
    ),
    "inner_inter_adapter": (
        "Inner + Inter adapters (Sang & Hansen 2024)",
        "0.005",
        "",
    ),
    "deep_prompt": ("Deep Speaker Prompting (Sang & Hansen 2025)", "0.005", ""),
    "unipet": (
        "UniPET-SPK (Sang & Hansen 2025): gated adapters and deep prompts",
        "0.005",
        "",
    ),
    "houlsby": ("Houlsby (sequential) adapter baseline", "0.001", ""),
    "adapterbias": (
        "AdapterBias baseline (token-dependent shift on every FFN)",
        "0.001",
        "Set like bitfit (0.001): also few, bias-like tensors; not tuned.",
    ),
    "lora": ("LoRA baseline on attention projections", "0.001", ""),
    "bitfit": ("BitFit baseline (Transformer biases only)", "0.001", ""),
    "shallow_prompt": (
        "Shallow prompt baseline (prompt tokens at the encoder input)",
        "0.005",
        "Set like deep_prompt (0.005), not tuned.",
    ),
    "ipet": (
        "IPET: deep prompts + parallel FFN adapter (Kim et al. 2022)",
        "0.001",
        "",
    ),
}

RULE = "# " + "#" * 76
PET_BANNER = "# " + "#" * 30 + " PET method " + "#" * 35
NOTES = {"pet_layers": "; null: all layers"}


def yaml_value(value):
    """An option default as YAML text (tuples become flow lists)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def defaults(name):
    """The method's options and their registry defaults."""
    method = get_method(name)
    resolved = method.resolve({})
    # In the order of OPTIONS (adapters, prompts, LoRA, gates, layers).
    return {k: resolved[k] for k in OPTIONS if k in method.options()}


def header(name):
    """The header comment block of method ``name``'s yaml."""
    title = METHODS[name][0]
    return "\n".join(
        [
            RULE,
            f"# Model: {title}",
            f"# SSL encoder (ssl_hub) tuned with PET method '{name}' -> "
            "layer-weighted sum",
            "# -> ECAPA-TDNN -> AAM-softmax speaker classifier.",
            "#",
            f"# > python train_speaker_embeddings.py hparams/{name}.yaml \\",
            "#       --data_folder=/data/voxceleb1 \\",
            "#       --verification_file=/data/voxceleb1/meta/veri_test2.txt",
            "#",
            "# Every key is a command-line override (--key=value). The",
            "# hparams/<method>.yaml files differ only in this header, the PET",
            "# method section and the options of ssl_encoder",
            "# (tools/make_recipe_hparams.py writes them from unipet.yaml).",
            "#",
            "# Authors",
            "#  * speechbrain-unipet contributors 2026",
            RULE,
        ]
    )


def method_section(name):
    """The ``PET method`` section of ``name``'s yaml: method, ``lr_pet``
    and the method's options with their registry defaults."""
    method = get_method(name)
    _, lr_pet, lr_note = METHODS[name]
    about = f"{method.summary[0].upper()}{method.summary[1:]}."
    lines = [
        PET_BANNER,
        *textwrap.wrap(
            about,
            78,
            initial_indent="# ",
            subsequent_indent="# ",
            break_on_hyphens=False,
        ),
        *textwrap.wrap(
            f"Reference: {method.reference}.",
            78,
            initial_indent="# ",
            subsequent_indent="# ",
            break_on_hyphens=False,
        ),
        f"pet_method: {name}",
        "# Learning rate of the PET tensors and the layer weights (back-end: "
        "lr)." + (f"\n# {lr_note}" if lr_note else ""),
        f"lr_pet: {lr_pet}",
    ]
    opts = defaults(name)
    if not opts:
        lines.append(f"# '{name}' has no options.")
        return "\n".join(lines)
    lines += [
        "# The method's options (registry defaults). They reach the encoder",
        "# only through the options: of ssl_encoder below.",
    ]
    rows = [
        (f"{k}: {yaml_value(v)}", OPTIONS[k][1] + NOTES.get(k, ""))
        for k, v in opts.items()
    ]
    # Comments aligned, except after a long value (gated_branches).
    width = max((len(t) for t, _ in rows if len(t) < 30), default=0) + 2
    lines += [f"{text.ljust(width - 2)}  # {doc}" for text, doc in rows]
    return "\n".join(lines)


def options_mapping(name):
    """The ``options:`` mapping of ``ssl_encoder`` for method ``name``."""
    opts = defaults(name)
    if not opts:
        return "    options: {}"
    return "\n".join(
        ["    options:"] + [f"        {k}: !ref <{k}>" for k in opts]
    )


HEADER_RE = re.compile(r"\A# #+\n(?:#.*\n)*?# #+\n")
SECTION_RE = re.compile(r"^# #+ PET method #+\n(?:.*\n)*?(?=# #+ )", re.M)
MAPPING_RE = re.compile(r"^    options:.*\n(?:        .*\n)*", re.M)


def render(template, name):
    """The template's text with ``name``'s header and sections."""
    text, n1 = HEADER_RE.subn(header(name) + "\n", template, count=1)
    text, n2 = SECTION_RE.subn(method_section(name) + "\n\n", text, count=1)
    text, n3 = MAPPING_RE.subn(options_mapping(name) + "\n", text, count=1)
    if (n1, n2, n3) != (1, 1, 1):
        raise ValueError(
            f"{TEMPLATE} lacks its header, PET method section or options: "
            f"of ssl_encoder (found {n1}, {n2}, {n3})"
        )
    return text


#: Recipes for other backbones: folder -> (title, hub id, methods, key ->
#: value replacing the method yaml's, why). W2V-BERT 2.0 follows WeSpeaker's
#: w2v-BERT recipe (conf/w2vbert_s1_lora.yaml: layer-adapter MFA back-end
#: reading the whole layer stack, 256-d embeddings; LoRA r=64, alpha=128 on
#: q/v; 15 epochs of WarmupLR_withStepDecay, 5 warm-up epochs (its
#: warmup_step is multiplied by epoch_iter) then x0.1 every 5 epochs, the
#: yaml's defaults for lr_decay_epochs and lr_decay_gamma; fixed margin 0.2
#: at scale 32, the defaults too).
BACKBONE_RECIPES = {
    "w2v_bert": (
        "W2V-BERT 2.0 (580 M, Conformer)",
        "facebook/w2v-bert-2.0",
        ("unipet", "lora"),
        {
            "ssl_hub": "facebook/w2v-bert-2.0",
            "backend": "mfa",
            "lora_rank": "64",
            "lora_alpha": "128.0",
            "number_of_epochs": "15",
            "lr_schedule": "warmup_step",
            "lr_warmup_epochs": "5",
        },
        "As WeSpeaker's w2v-BERT recipe (w2vbert_s1_lora.yaml): MFA "
        "adapters of 128, 256-d embeddings, LoRA r=64, alpha=128 on q/v, 15 "
        "epochs, 5 warm-up epochs then the rates x0.1 every 5 epochs.",
    ),
}


def render_backbone(text, folder, name):
    """A method yaml for another backbone: its header names the backbone
    and the keys of ``BACKBONE_RECIPES`` take their values."""
    title, hub, _, values, why = BACKBONE_RECIPES[folder]
    for key, value in values.items():
        pattern = re.compile(rf"^{key}: [^#\n]*?(\s*(#.*)?)$", re.M)
        text, n = pattern.subn(
            lambda m, k=key, v=value: f"{k}: {v}{m.group(1)}", text
        )
        if n > 1:
            raise ValueError(f"{key} is set twice in {name}.yaml")
    lines = text.split("\n")
    lines[1:4] = [
        f"# Model: {title} ({hub})",
        f"# tuned with PET method '{name}' -> all hidden states -> layer-adapter",
        "# MFA -> AAM-softmax speaker classifier.",
        *textwrap.wrap(why, 78, initial_indent="# ", subsequent_indent="# "),
    ]
    text = "\n".join(lines)
    return text.replace(f"hparams/{name}.yaml", f"hparams/{folder}/{name}.yaml")


# --------------------------------------------------------------------------
# Published systems: hparams/published/<stage>.yaml and their tables in the
# recipe README (section "Published systems", between the two markers).
# --------------------------------------------------------------------------
PUBLISHED = HPARAMS / "published"
README = HPARAMS.parent / "README.md"
TABLES_BEGIN = (
    "<!-- Tables written by tools/make_recipe_hparams.py from its SYSTEMS: "
    "edit them there and run it. -->"
)
TABLES_END = (
    "<!-- End of the tables written by tools/make_recipe_hparams.py. -->"
)

#: A cell whose value the paper does not give: the base yaml's value stays.
UNKNOWN = "unknown"


@dataclasses.dataclass
class Stage:
    """One training stage of a published system: one yaml."""

    name: str  # hparams/published/<name>.yaml
    base: str  # the yaml it is written from, relative to hparams/
    title: str
    #: Where the published system starts this stage from the previous one
    #: (sources, in the system's abbreviations); empty for the first stage.
    init_source: str = ""


@dataclasses.dataclass
class Row:
    """A key of a system and its value in each stage."""

    key: str
    #: What the published configuration calls it, and why this value.
    how: str
    #: Per stage: (value as YAML text, source), UNKNOWN, or None (the key
    #: keeps its base value and is not part of that stage).
    cells: tuple


@dataclasses.dataclass
class System:
    """A published system: its stages, one row per key they set."""

    title: str
    #: Repository @ commit and folder of the sources.
    origin: str
    #: Abbreviation in the sources -> file (relative to ``origin``).
    files: dict
    stages: list
    rows: list
    #: Published settings no key expresses: (what, source).
    gaps: list = dataclasses.field(default_factory=list)
    gaps_title: str = "Not expressible here:"
    gpus: int = 1
    data_folder: str = "/data/voxceleb2,/data/voxceleb1"
    verification_file: str = "/data/voxceleb1/meta/list_test_all2.txt"


def row(key, how, *cells):
    """A ``Row``; a cell given as a value alone has no source of its own
    (``how`` gives it)."""
    return Row(
        key,
        how,
        tuple(
            (c, "") if isinstance(c, str) and c != UNKNOWN else c for c in cells
        ),
    )


def every(value, *sources):
    """The same value in every stage, from each stage's source."""
    return tuple((value, s) for s in sources)


def data_rows(run_lines, select, keep):
    """The trials, validation and checkpoint rows of a 3-stage system."""
    # fmt: off
    return [
        row("verification_file", "Vox1-O/E/H (cleaned) trials, training on VoxCeleb2-dev: give `list_test_all2.txt` and both corpora (see above)",
            *every("!PLACEHOLDER", *[run_lines] * 3)),
        row("num_valid_speakers", "every VoxCeleb2-dev speaker trains", *every("0", *[run_lines] * 3)),
        row("ckpt_select", "no validation: the published model is the mean of the last `num_avg` epochs (`ckpt_keep_last`); needed with `num_valid_speakers: 0`",
            *every("ErrorRate", *select)),
        row("ckpt_keep_last", "`num_avg`: score with `--average_last=<num_avg>`", *keep),
        row("amp_th", "WeSpeaker drops no quiet audio (`dataset.py` filters by length only)", "0.0", "0.0", "0.0"),
    ]
    # fmt: on


# fmt: off
MHFA = System(
    title="MHFA on WavLM Base+ (BUT; Peng et al., SLT 2022)",
    origin="BUTSpeechFIT/wespeaker_ssl_public @ 34e1343d, examples/voxceleb/v4/",
    files={
        "s1": "conf/MHFA/MHFA_Base_Frozen.yaml",
        "s2": "conf/MHFA/MHFA_Base_Frozen_FT.yaml",
        "s3": "conf/MHFA/MHFA_Base_Frozen_FT_LMFT.yaml",
        "run": "run_MHFA_Base.sh",
    },
    gpus=4,
    stages=[
        Stage("mhfa_wavlm_base_plus_s1_frozen", "frozen.yaml", "frozen WavLM"),
        Stage("mhfa_wavlm_base_plus_s2_joint_ft", "finetune.yaml", "joint fine-tuning", "run:151,159"),
        Stage("mhfa_wavlm_base_plus_s3_lmft", "finetune.yaml", "large-margin fine-tuning",
              "BUT README.md:22; run:169 copies stage 1's model instead"),
    ],
    rows=[
        row("seed", "", *every("716", "s1:7", "s2:7", "s3:7")),
        row("pet_method", "`feature_grad_mult` 0: WavLM under `no_grad`; 0.1: WavLM trains (`Transformer_WavLM.py:37-41,50-52`)",
            ("frozen", "s1:61"), ("finetune", "s2:60"), ("finetune", "s3:60")),
        row("ssl_hub", "`WavLM-Base+.pt`", *every("microsoft/wavlm-base-plus", "s1:54", "s2:53", "s3:53")),
        row("init_average_last", "the previous stage's averaged model (its `num_avg`)", None, ("2", "run:44,151"), ("1", "run:158")),
        *data_rows("run:47,90-91", ("run:44", "run:158", "run:176"), (("2", "run:44"), ("1", "run:158"), ("1", "run:176"))),
        row("sentence_len", "`num_frms` N: ((N - 1) x 10 + 25) ms (`dataset.py:214-215`)",
            ("3.015", "s1:32"), ("3.015", "s2:32"), ("5.015", "s3:32")),
        row("speed_perturb", "", *every("False", "s1:31", "s2:31", "s3:31")),
        row("number_of_epochs", "", ("10", "s1:8"), ("10", "s2:8"), ("3", "s3:8")),
        row("batch_size", "per GPU, 4 GPUs (run:15)", ("128", "s1:13"), ("128", "s2:13"), ("16", "s3:13")),
        row("lr", "`initial_lr` (0.1, 1e-4, 1e-5) x 4 GPUs x batch / 64: the rate `ExponentialDecrease` trains with (`train_hubert.py:215-216`)",
            ("0.8", "s1:88"), ("0.0008", "s2:87"), ("0.00001", "s3:85")),
        row("lr_pet", "one optimiser for all parameters (`train_hubert.py:202-205`)",
            ("0.8", "s1:88"), ("0.0008", "s2:87"), ("0.00001", "s3:85")),
        row("lr_final_ratio", "`final_lr` / `initial_lr`: 5e-3 / 0.1, 1e-6 / 1e-4, 1e-7 / 1e-5",
            ("0.05", "s1:89"), ("0.01", "s2:88"), ("0.01", "s3:86")),
        row("weight_decay", "", *every("1.0e-7", "s1:84", "s2:83", "s3:81")),
        row("opt_class", "one optimiser for all parameters: `opt_class` and `pet_opt_class` both",
            ("!name:torch.optim.SGD", "s1:80"), ("!name:torch.optim.AdamW", "s2:79"), ("!name:torch.optim.AdamW", "s3:79")),
        row("momentum", "SGD", ("0.9", "s1:80,82"), None, None),
        row("nesterov", "SGD", ("True", "s1:83"), None, None),
        row("lr_schedule", "`ExponentialDecrease`", *every("warmup_exp", "s1:86", "s2:85", "s3:83")),
        row("lr_warmup_epochs", "`warm_up_epoch`", ("3", "s1:90"), ("2", "s2:89"), ("1", "s3:87")),
        row("lr_warmup_start", "`warm_from_zero: True`", *every("0.0", "s1:91", "s2:90", "s3:88")),
        row("backend", "`pooling: MHFA`", *every("mhfa", "s1:57", "s2:56", "s3:56")),
        row("mhfa_heads", "`head_nb`", *every("64", "s1:55", "s2:54", "s3:54")),
        row("mhfa_compression_dim", "the default `compression_dim` (`ssl_backend.py:7`; `Transformer_WavLM.py:32` passes none)",
            "128", "128", "128"),
        row("emb_dim", "`embed_dim`", *every("256", "s1:56", "s2:55", "s3:55")),
        row("sub_centers", "`arc_margin_intertopk_subcenter`, K = 3 (`projections.py:44`)", *every("3", "s1:64", "s2:63", "s3:63")),
        row("aam_scale", "", *every("32", "s1:65", "s2:64", "s3:64")),
        row("aam_fallback", "cos - (1 + cos(pi - m)) past the angle threshold (`projections.py:341`)", "wespeaker", "wespeaker", "wespeaker"),
        row("top_k", "the default `k_top` (`projections.py:46`); stage 3 has no `do_lm`, so it stays on (`projections.py:283-288`)",
            "5", "5", "5"),
        row("top_k_margin", "the default `mp`, x margin / 0.2 (`projections.py:45,318-321`)", "0.06", "0.06", "0.06"),
        row("margin", "`final_margin`", ("0.2", "s1:71"), ("0.2", "s2:70"), ("0.5", "s3:70")),
        row("margin_initial", "`initial_margin`", ("0.0", "s1:70"), ("0.2", "s2:69"), ("0.5", "s3:69")),
        row("margin_increase_start", "`increase_start_epoch`", ("2", "s1:72"), ("1", "s2:71"), ("1", "s3:71")),
        row("margin_fix_start", "`fix_start_epoch` (1-based; 1 and 1: fixed from the start)", ("5", "s1:73"), ("1", "s2:72"), ("1", "s3:72")),
        row("margin_increase_type", "", *every("exp", "s1:75", "s2:74", "s3:74")),
        row("noise_folder", "`aug_prob` 0.6, reverberation or MUSAN noise: give `--noise_folder` and `--rir_folder` (see below)",
            *every("null", "s1:33", "s2:33", "s3:33")),
        row("precision", "`enable_amp: False`", *every("fp32", "s1:5", "s2:5", "s3:5")),
        row("max_grad_norm", "`clip_grad_norm_` (`executor_hubert.py:71`)", "5.0", "5.0", "5.0"),
    ],
    gaps=[
        ("`layer_drop` 0.05", "s1:60, s2:59, s3:59; `Transformer_WavLM.py:20`"),
        ("`aug_prob` 0.6 per crop, reverberation or one MUSAN file", "s1:33, s2:33, s3:33"),
        ("utterances kept: 1-8 s", "s1:28-29, s2:28-29, s3:28-29"),
        ("stage 1: the frozen WavLM's dropout stays on (train mode under `no_grad`)", "`Transformer_WavLM.py:50-52`"),
        ("stages 2, 3: the CNN trains too (`cnn_scale` 1.0); ours keeps it frozen", "s2:58, s3:58; `Transformer_WavLM.py:21`"),
        ("stages 2, 3: gradient x 0.1 into the whole backbone (`GradMultiply`)", "s2:60, s3:60; `Transformer_WavLM.py:59`"),
        ("test utterances cut to their first 20 s", "`Transformer_WavLM.py:47-48`"),
    ],
)

W2V_BERT = System(
    title="W2V-BERT 2.0 + LoRA + layer-adapter MFA (WeSpeaker)",
    origin="wenet-e2e/wespeaker @ dfa74195, examples/voxceleb/v2/",
    files={
        "s1": "conf/w2vbert_s1_lora.yaml",
        "s2": "conf/w2vbert_s2_ft.yaml",
        "s3": "conf/w2vbert_s3_lmft.yaml",
        "run": "run_w2v.sh",
    },
    gpus=8,
    stages=[
        Stage("w2v_bert_lora_mfa_s1", "w2v_bert/lora.yaml", "LoRA"),
        Stage("w2v_bert_lora_mfa_s2_joint_ft", "finetune.yaml", "joint fine-tuning, LoRA merged", "run:127-150,166"),
        Stage("w2v_bert_lora_mfa_s3_lmft", "finetune.yaml", "large-margin fine-tuning", "run:209-218"),
    ],
    rows=[
        row("seed", "", ("24", "s1:9"), ("24", "s2:10"), ("24", "s3:10")),
        row("pet_method", "stage 1: frozen encoder + LoRA; then `frozen: False`, `use_lora: False` (LoRA merged, run:131-150)",
            ("lora", "s1:43-44"), ("finetune", "s2:43-44"), ("finetune", "s3:43-44")),
        row("lora_rank", "`r`", ("64", "s1:46"), None, None),
        row("lora_alpha", "", ("128.0", "s1:47"), None, None),
        row("lora_targets", "`linear_q`, `linear_v`", ("[q_proj, v_proj]", "s1:48"), None, None),
        row("pet_layers", "every layer", ("null", "s1:48"), None, None),
        row("ssl_hub", "", *every("facebook/w2v-bert-2.0", "s1:42", "s2:42", "s3:42")),
        row("init_average_last", "the previous stage's averaged model (its `num_avg`)", None, ("1", "run:90-95"), ("1", "run:173-178")),
        *data_rows("run:38,78-79", ("run:76", "run:160", "run:228"), (("1", "s1:7"), ("1", "s2:8"), ("1", "s3:8"))),
        row("sentence_len", "`num_frms` N: ((N - 1) x 10 + 25) ms (`dataset.py:238-241`)",
            ("3.015", "s1:38"), ("3.015", "s2:38"), ("6.015", "s3:38")),
        row("speed_perturb", "stages 1, 2: in `expanded` mode (see below); stage 3: `do_lm`",
            ("True", "s1:36"), ("True", "s2:36"), ("False", "s3:11,37")),
        row("number_of_epochs", "", ("15", "s1:12"), ("4", "s2:13"), ("2", "s3:14")),
        row("batch_size", "per GPU, 8 GPUs (run:33; the configs' `gpus` are overridden)", ("64", "s1:19"), ("64", "s2:20"), ("32", "s3:20")),
        row("lr", "not scaled by GPUs x batch / 64: these schedulers ignore `scale_ratio` (`schedulers.py:96-245`)",
            ("0.0001", "s1:97"), ("0.00001", "s2:97"), ("0.00001", "s3:97")),
        row("lr_pet", "one optimiser for all parameters (`train.py:191-193`)",
            ("0.0001", "s1:97"), ("0.00001", "s2:97"), ("0.00001", "s3:97")),
        row("weight_decay", "", ("0.0001", "s1:98"), ("0.0001", "s2:91"), ("0.0001", "s3:91")),
        row("opt_class", "`AdamW`, one optimiser: `opt_class` and `pet_opt_class` both",
            *every("!name:torch.optim.AdamW", "s1:95", "s2:88", "s3:88")),
        row("lr_schedule", "stage 1: `WarmupLR_withStepDecay`; then `WarmupCosineScheduler`, which has no equivalent here: "
            "exponential decay from `max_lr` to `min_lr` over the run instead (see below)",
            ("warmup_step", "s1:101"), ("warmup_exp", "s2:94-99"), ("warmup_exp", "s3:94-99")),
        row("lr_warmup_epochs", "stage 1: `warmup_step`, in epochs (`schedulers.py:114` multiplies it by `epoch_iter`); then `warmup_epoch`",
            ("5", "s1:103"), ("0", "s2:98"), ("0", "s3:98")),
        row("lr_decay_epochs", "`decay_step`, in epochs (`schedulers.py:122-124`)", ("5", "s1:104"), None, None),
        row("lr_decay_gamma", "`gamma`", ("0.1", "s1:105"), None, None),
        row("lr_final_ratio", "`min_lr` / `max_lr` = 5e-6 / 1e-5", None, ("0.5", "s2:96-97"), ("0.5", "s3:96-97")),
        row("backend", "`W2VBert_Adapter_MFA` (ASP pooling over every layer)", ("mfa", "s1:62"), ("mfa", "s2:56"), ("mfa", "s3:56")),
        row("mfa_adapter_dim", "`adapter_dim`", *every("128", "s1:69", "s2:63", "s3:63")),
        row("emb_dim", "`embed_dim`", *every("256", "s1:66", "s2:60", "s3:60")),
        row("sub_centers", "`arc_margin`: one centre per class", *every("1", "s1:75", "s2:69", "s3:69")),
        row("top_k", "`arc_margin`: no inter-top-k", *every("0", "s1:75", "s2:69", "s3:69")),
        row("aam_scale", "", *every("32", "s1:76", "s2:70", "s3:70")),
        row("aam_fallback", "cos - (1 + cos(pi - m)) past the angle threshold (`projections.py:231`, `ArcMarginProduct`)",
            "wespeaker", "wespeaker", "wespeaker"),
        row("margin", "", ("0.2", "s1:77,85"), ("0.2", "s2:71,78"), ("0.5", "s3:71,78")),
        row("margin_initial", "", ("0.2", "s1:84"), ("0.2", "s2:77"), ("0.5", "s3:77")),
        row("margin_increase_start", "", *every("1", "s1:86", "s2:79", "s3:79")),
        row("margin_fix_start", "fixed from the start (`update_margin: False`)", *every("1", "s1:87", "s2:80", "s3:80")),
        row("noise_folder", "`aug_prob` 0.6667 in stages 1, 2 (reverberation or MUSAN noise): give `--noise_folder` and "
            "`--rir_folder` (see below); 0 in stage 3", *every("null", "s1:39", "s2:39", "s3:39")),
        row("precision", "`enable_amp: True` (fp16 autocast)", ("fp16", "s1:8"), ("fp16", "s2:9"), ("fp16", "s3:9")),
        row("max_grad_norm", "WeSpeaker clips nothing (`executor.py:75-76`): a norm never reached (SpeechBrain 1.1.2 always "
            "clips, and a negative value flips the gradients)", "1.0e+9", "1.0e+9", "1.0e+9"),
    ],
    gaps=[
        ("stages 2, 3: `WarmupCosineScheduler`, cosine from `max_lr` to `min_lr` until `fix_epoch` (2, 1), then `min_lr`",
         "s2:94-99, s3:94-99; `schedulers.py:171-245`"),
        ("stages 1, 2: `expanded` speed perturbation, every utterance at the 3 speeds each epoch (3x the steps); "
         "ours: one random speed per crop", "s1:37, s2:37; `train.py:103-108`; `dataset.py:227-232`"),
        ("`aug_prob` 0.6667 per crop (stages 1, 2)", "s1:39, s2:39"),
        ("utterances: shorter than 2 s dropped, longer than 3 s cut (stages 1, 2); 5 s and 6 s in stage 3",
         "s1:33-34, s2:33-34, s3:34-35"),
        ("LoRA dropout 0.0 and bias `none`: as ours, with no key", "s1:49-50"),
    ],
)

UNIPET = System(
    title="UniPET-SPK on WavLM Base+ (Sang & Hansen 2025)",
    origin="arXiv 2501.16542 (abstract only: no code or configuration)",
    files={},
    stages=[Stage("unipet_wavlm_base_plus", "unipet.yaml", "")],
    rows=[
        row("pet_method", "Inner + Inter adapters and Deep Speaker Prompting mixed by dynamic trainable gates",
            ("unipet", "abstract")),
        row("ssl_hub", "WavLM Base+ assumed", UNKNOWN),
        *(row(key, "", UNKNOWN) for key in (
            "adapter_dim", "adapter_scale", "inner_position", "inter_adapter_dim", "prompt_length",
            "gate_bias_init", "lr_pet", "lr", "number_of_epochs", "batch_size", "sentence_len", "backend",
            "emb_dim", "margin", "aam_scale", "lr_schedule",
        )),
    ],
    gaps_title="Also published:",
    gaps=[
        ("5.4 % of the parameters train", "third-party summaries of 2501.16542"),
        ("data: VoxCeleb, CN-Celeb (1), 1st48-UTD", "abstract"),
    ],
    data_folder="/data/voxceleb1",
    verification_file="/data/voxceleb1/meta/veri_test2.txt",
)
# fmt: on

SYSTEMS = [MHFA, W2V_BERT, UNIPET]

#: Keys the base yamls lack, each written after the key given here.
NEW_KEYS = {
    "momentum": "weight_decay",
    "nesterov": "momentum",
    "precision": "ckpt_interval_minutes",
    "max_grad_norm": "precision",
}
#: Optimiser arguments beyond lr, as !refs to the keys of the same name.
OPTIMISER_ARGS = {
    "SGD": ("momentum", "nesterov", "weight_decay"),
    "AdamW": ("weight_decay",),
}


def plain(text):
    """Markdown text as a yaml comment: no backticks."""
    return text.replace("`", "")


def expand(system, source):
    """A source with the system's abbreviations (``s1:7``) as file names
    (``MHFA_Base_Frozen.yaml:7``)."""
    if not system.files:
        return source
    names = "|".join(map(re.escape, system.files))
    return re.sub(
        rf"\b({names}):",
        lambda m: f"{pathlib.PurePath(system.files[m.group(1)]).name}:",
        source,
    )


def comment(text):
    """``text`` as yaml comment lines (with the final newline)."""
    lines = textwrap.wrap(
        text,
        78,
        initial_indent="# ",
        subsequent_indent="# ",
        break_on_hyphens=False,
    )
    return "".join(f"{line}\n" for line in lines)


def key_line(text, key):
    """The match of the line ``key: <value>`` (exactly one), or None."""
    found = list(re.finditer(rf"^{key}:(.*)$", text, re.M))
    if len(found) > 1:
        raise ValueError(f"{key} is set twice")
    return found[0] if found else None


def base_value(text, key):
    """The value of ``key`` in a yaml text, as written (no comment)."""
    found = key_line(text, key)
    if found is None:
        raise ValueError(f"no key {key}")
    return found.group(1).split(" #")[0].strip()


def set_key(text, key, value, note):
    """``key: value`` with ``note`` as comment lines above it: the line of
    the key replaced (its inline comment kept), or a line added after the
    ``NEW_KEYS`` anchor."""
    found = key_line(text, key)
    if found is None:
        if key not in NEW_KEYS:
            raise ValueError(f"no key {key}, and no place for it in NEW_KEYS")
        anchor = key_line(text, NEW_KEYS[key])
        if anchor is None:
            raise ValueError(f"no key {NEW_KEYS[key]} to put {key} after")
        at = anchor.end() + 1
        return text[:at] + comment(note) + f"{key}: {value}\n" + text[at:]
    line = f"{key}: {value}"
    old = found.group(0)
    if " #" in old:  # an option's inline comment, at its column if it fits
        column = old.index(" #") + 1
        inline = old[column:]
        line = (line.ljust(column) if len(line) < column else line + "  ") + (
            inline
        )
    return text[: found.start()] + comment(note) + line + text[found.end() :]


def set_optimiser(text, value, note):
    """Both optimisers of the recipe as ``value`` (one class for all
    parameters, as published) with its arguments as !refs."""
    cls = value.rsplit(".", 1)[1]
    for key, lr in (("pet_opt_class", "lr_pet"), ("opt_class", "lr")):
        block = re.compile(rf"^{key}: !name:\S+\n(?:    .*\n)*", re.M)
        args = "".join(f"    {a}: !ref <{a}>\n" for a in OPTIMISER_ARGS[cls])
        new = f"{key}: {value}\n    lr: !ref <{lr}>\n{args}"
        if key == "pet_opt_class":
            new = comment(note) + new
        text, n = block.subn(lambda m, new=new: new, text, count=1)
        if n != 1:
            raise ValueError(f"no {key} block")
    return text


def stage_note(system, row_, source):
    """The comment above a key: its source and how it was published."""
    parts = [expand(system, source), plain(expand(system, row_.how))]
    return ": ".join(p for p in parts if p)


def published_header(system, index):
    """The header of a stage's yaml: system, stage, sources, command."""
    stage = system.stages[index]
    count = len(system.stages)
    what = f"{system.title}"
    if count > 1:
        what += f", stage {index + 1} of {count}: {stage.title}"
    lines = [RULE, *comment(f"Published system: {what}.").splitlines()]
    if system.files:
        files = ", ".join(
            pathlib.PurePath(system.files[k]).name
            for k in (f"s{index + 1}", "run")
        )
        lines += comment(
            f"Sources: {files} in {system.origin} (code files: under "
            "wespeaker/ there)."
        ).splitlines()
    else:
        lines += comment(
            f"Source: {system.origin}. No value is published: every key is "
            f"hparams/{stage.base}'s."
        ).splitlines()
    lines += comment(
        f"Written by tools/make_recipe_hparams.py from hparams/{stage.base}: "
        "a comment above each key set here cites its source, every other key "
        "is the base's. Values and sources: README.md, Published systems."
    ).splitlines()
    if index:
        before = system.stages[index - 1].name
        lines += comment(
            f"Starts from stage {index}'s output folder (init_from): run "
            f"hparams/published/{before}.yaml first."
        ).splitlines()
    run = "python"
    if system.gpus > 1:
        lines += comment(
            f"Trained on {system.gpus} GPUs: batch_size is per GPU."
        ).splitlines()
        run = f"torchrun --nproc_per_node={system.gpus}"
    lines += [
        "#",
        f"# > {run} train_speaker_embeddings.py \\",
        f"#       hparams/published/{stage.name}.yaml \\",
        f"#       --data_folder={system.data_folder} \\",
        f"#       --verification_file={system.verification_file}",
        "#",
        "# Authors",
        "#  * speechbrain-unipet contributors 2026",
        RULE,
    ]
    return "\n".join(lines)


def render_published(system, index, base_text):
    """A stage's yaml: its base yaml's text with the system's values."""
    stage = system.stages[index]
    text, n = HEADER_RE.subn(
        published_header(system, index) + "\n", base_text, count=1
    )
    if n != 1:
        raise ValueError(f"{stage.base} has no header")
    after = index + 1 < len(system.stages)
    text = set_key(
        text,
        "output_folder",
        f"!ref results/published/{stage.name}/<seed>",
        f"Stage {index + 2} starts from this folder (its init_from)."
        if after
        else "",
    )
    if index:
        before = system.stages[index - 1].name
        text = set_key(
            text,
            "init_from",
            f"!ref results/published/{before}/<seed>",
            f"Stage {index}'s output folder "
            f"({expand(system, stage.init_source)}).",
        )
    for row_ in system.rows:
        cell = row_.cells[index]
        if cell is None or cell == UNKNOWN:
            continue
        value, source = cell
        note = stage_note(system, row_, source)
        try:
            if row_.key == "opt_class":
                text = set_optimiser(text, value, note)
            else:
                text = set_key(text, row_.key, value, note)
        except ValueError as err:
            raise ValueError(f"{stage.name}: {err}") from None
    return text


def table_cell(system, cell, base_text, key):
    """A README cell: the value (in code) and its source."""
    if cell is None:
        return "—"
    if cell == UNKNOWN:
        return f"unknown (ours: `{base_value(base_text, key)}`)"
    value, source = cell
    return f"`{value}` ({source})" if source else f"`{value}`"


def render_table(system, base_texts):
    """A system's README block: sources, the table, the gaps."""
    names = [s.name for s in system.stages]
    chain = " → ".join(f"`{s.name}` (`{s.base}`)" for s in system.stages)
    out = [f"#### {system.title}", f"Yamls (and their base yamls): {chain}."]
    if system.files:
        files = ", ".join(f"{k} = `{v}`" for k, v in system.files.items())
        out.append(
            f"Sources: `{system.origin}`: {files}. Trained on {system.gpus} "
            "GPUs."
        )
    else:
        out.append(f"Source: {system.origin}.")
    header = ["key", *(f"`{n}`" for n in names), "as published"]
    out += ["", "| " + " | ".join(header) + " |"]
    out.append("|" + "---|" * len(header))
    if len(names) > 1:  # the stage chain, checked by the tests
        cells = ["`null`"] + [
            f"stage {i}'s output ({s.init_source})"
            for i, s in enumerate(system.stages[1:], 1)
        ]
        out.append(
            "| `init_from` | "
            + " | ".join(cells)
            + " | the previous stage's model |"
        )
    for row_ in system.rows:
        cells, how = row_.cells, row_.how
        sources = {c[1] for c in cells if isinstance(c, tuple)}
        if len(sources) == 1 and len(cells) > 1 and None not in cells:
            # One source for every stage: given once.
            (source,) = sources
            how = ": ".join(t for t in (source, how) if t)
            cells = tuple((c[0], "") for c in cells)
        text = [
            table_cell(system, c, base_texts[s.name], row_.key)
            for c, s in zip(cells, system.stages, strict=True)
        ]
        out.append(f"| `{row_.key}` | " + " | ".join(text) + f" | {how} |")
    if system.gaps:
        out += ["", system.gaps_title]
        out += [f"* {what} ({source})" for what, source in system.gaps]
    return "\n".join(out) + "\n"


def render_readme(readme, tables):
    """The README with the tables between its markers."""
    begin, end = readme.find(TABLES_BEGIN), readme.find(TABLES_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{README} lacks the markers of the tables")
    body = "\n".join(tables)
    return readme[: begin + len(TABLES_BEGIN)] + "\n" + body + readme[end:]


def generate():
    """Every file this script writes: path -> text."""
    if set(METHODS) != set(PET_METHODS):
        raise ValueError(
            "METHODS must list every registered method: "
            f"missing {sorted(set(PET_METHODS) - set(METHODS))}, "
            f"unknown {sorted(set(METHODS) - set(PET_METHODS))}"
        )
    template = (HPARAMS / TEMPLATE).read_text(encoding="utf-8")
    files = {}
    for name in PET_METHODS:
        files[HPARAMS / f"{name}.yaml"] = render(template, name)
    for folder, (_, _, methods, _, _) in BACKBONE_RECIPES.items():
        for name in methods:
            text = render_backbone(render(template, name), folder, name)
            files[HPARAMS / folder / f"{name}.yaml"] = text
    tables = []
    for system in SYSTEMS:
        bases = {}
        if {len(r.cells) for r in system.rows} != {len(system.stages)}:
            raise ValueError(f"{system.title}: a row lacks a stage")
        keys = [r.key for r in system.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{system.title}: a key has two rows")
        for index, stage in enumerate(system.stages):
            bases[stage.name] = files[HPARAMS / stage.base]
            files[PUBLISHED / f"{stage.name}.yaml"] = render_published(
                system, index, bases[stage.name]
            )
        tables.append(render_table(system, bases))
    readme = README.read_text(encoding="utf-8")
    files[README] = render_readme(readme, tables)
    for name, (base, _, _) in CNCELEB.items():
        files[CN_HPARAMS / f"{name}.yaml"] = render_cnceleb(
            name, files[HPARAMS / base]
        )
    files[CN_HPARAMS / "verification.yaml"] = render_cn_verification(
        (HPARAMS / "verification.yaml").read_text(encoding="utf-8")
    )
    return files


# --------------------------------------------------------------------------
# The CN-Celeb recipe: recipes/CNCeleb/SpeakerRec/hparams.
# --------------------------------------------------------------------------
CN_HPARAMS = HPARAMS.parents[2] / "CNCeleb" / "SpeakerRec" / "hparams"

#: CN-Celeb's data settings, in every CN-Celeb training yaml: key -> (value,
#: why).
CN_DATA = {
    "data_format": (
        "cnceleb",
        "CN-Celeb's released folders: data_folder is CN-Celeb_flac, or "
        "CN-Celeb_flac,CN-Celeb2_flac (CN-Celeb2 is training-only). Training "
        "speakers: dev/dev.lst (and spk.lst); the evaluation protocol "
        "(eval/lists) is written to <save_folder>/cnceleb.",
    ),
    "combine_min_seconds": (
        "5.0",
        "CN-Celeb's many short utterances, combined per speaker and genre to "
        "at least 5 s, as WeSpeaker's CN-Celeb preparation "
        "(local/comb_cn1_cn2.sh --min_duration 5).",
    ),
    "num_test_speakers": (
        "0",
        "The test speakers are CN-Celeb's evaluation speakers (eval/lists): "
        "none is held out of training.",
    ),
}

#: CN-Celeb training yamls: name -> (VoxCeleb base yaml, title, key ->
#: (value, why) beyond CN_DATA).
CNCELEB = {
    "unipet": ("unipet.yaml", "UniPET-SPK trained on CN-Celeb", {}),
    "frozen": (
        "frozen.yaml",
        "Frozen SSL encoder + layer-weighted sum on CN-Celeb (the paper's "
        "lower baseline)",
        {},
    ),
    "finetune": (
        "finetune.yaml",
        "Full fine-tuning on CN-Celeb (the paper's comparison: 14.49 % EER "
        "against 13.12 % with PET)",
        {},
    ),
    "transfer": (
        "unipet.yaml",
        "VoxCeleb -> CN-Celeb PET transfer: a VoxCeleb UniPET run or export "
        "adapted on CN-Celeb (BUT's fromVox_Adapter setting)",
        {
            "init_from": (
                "!PLACEHOLDER",
                "The VoxCeleb run (its output_folder) or exported folder to "
                "start from: its PET modules, layer weights and speaker "
                "back-end; same method, backbone and back-end.",
            ),
            "init_classifier": (
                "False",
                "A fresh classifier for CN-Celeb's speakers (True copies the "
                "classes of speakers both runs share: none across corpora).",
            ),
        },
    ),
}


def cn_header(name, title):
    """The header comment block of a CN-Celeb training yaml."""
    start = "--init_from=results/unipet/1986" if name == "transfer" else ""
    lines = [
        RULE,
        *comment(f"Model: {title}.").splitlines(),
        "#",
        f"# > python train_speaker_embeddings.py hparams/{name}.yaml \\",
        "#       --data_folder=/data/CN-Celeb_flac,/data/CN-Celeb2_flac \\",
        "#       --ssl_hub=microsoft/wavlm-base-plus"
        + (" \\" if start else ""),
    ]
    if start:
        lines.append(f"#       {start}")
    lines += [
        "#",
        "# Every key is a command-line override (--key=value). Written by",
        "# tools/make_recipe_hparams.py from the VoxCeleb recipe's",
        f"# hparams/{CNCELEB[name][0]} with CN-Celeb's data settings.",
        "#",
        "# Authors",
        "#  * speechbrain-unipet contributors 2026",
        RULE,
    ]
    return "\n".join(lines)


def render_cnceleb(name, base_text):
    """The CN-Celeb yaml ``name`` from its VoxCeleb base yaml's text."""
    _, title, extra = CNCELEB[name]
    text, n = HEADER_RE.subn(cn_header(name, title) + "\n", base_text, count=1)
    if n != 1:
        raise ValueError(f"{CNCELEB[name][0]} lacks its header")
    for key, (value, why) in {**CN_DATA, **extra}.items():
        text = set_key(text, key, value, why)
    folder = "<pet_method>-from-vox" if name == "transfer" else "<pet_method>"
    return set_key(
        text,
        "output_folder",
        f"!ref results/cnceleb/{folder}/<seed>",
        "CN-Celeb runs apart from VoxCeleb's.",
    )


#: The CN-Celeb verification yaml: key -> (value, why), set in the VoxCeleb
#: one; ``protocol`` is added before ``enrolment_map``.
CN_VERIFICATION = {
    "enrolment_map": (
        "!ref <output_folder>/save/cnceleb/enroll_<protocol>.map",
        "The protocol's enrolment map, written by the data preparation: Avg, "
        "each model the mean of its enrolment utterances' embeddings "
        "(enroll.map); Concat, each model its one concatenated enrolment file "
        "(enroll.lst).",
    ),
    "trial_groups": (
        "!ref <output_folder>/save/cnceleb/test_genres.txt",
        "The genre of each test file: an EER/minDCF table per genre.",
    ),
    "groups_file": (
        "!ref <output_folder>/genres_<protocol>.md",
        "The per-genre table.",
    ),
    "results_file": ("!ref <output_folder>/results_<protocol>.json", ""),
    "scores_file": ("!ref <output_folder>/scores_<protocol>.txt", ""),
    "det_plot": ("!ref <output_folder>/det_<protocol>.png", ""),
    "score_histogram": (
        "!ref <output_folder>/score_histogram_<protocol>.png",
        "",
    ),
}


def render_cn_verification(text):
    """The CN-Celeb verification yaml from the VoxCeleb one's text."""
    lines = [
        RULE,
        "# Scoring of a CN-Celeb run (train_speaker_embeddings.py with",
        "# hparams/<name>.yaml): CN-Celeb's evaluation trials under the Avg or",
        "# the Concat protocol (--protocol), EER/minDCF per genre, calibration",
        "# fitted on the run's dev speakers (held out of training) and, with",
        "# --compare_calibration=[<VoxCeleb run>/calibration.json], the",
        "# VoxCeleb-fitted one beside it.",
        "#",
        "# > python speaker_verification_cosine.py hparams/verification.yaml \\",
        "#       --output_folder=results/cnceleb/unipet/1986 --protocol=avg",
        "#",
        "# Written by tools/make_recipe_hparams.py from the VoxCeleb recipe's",
        "# hparams/verification.yaml.",
        RULE,
    ]
    text, n = HEADER_RE.subn("\n".join(lines) + "\n", text, count=1)
    if n != 1:
        raise ValueError("verification.yaml lacks its header")
    for key, (value, why) in CN_VERIFICATION.items():
        if why:  # the note replaces the VoxCeleb comment above the key
            start = key_line(text, key).start()
            above = start
            while text[text.rfind("\n", 0, above - 1) + 1] == "#":
                above = text.rfind("\n", 0, above - 1) + 1
            text = text[:above] + text[start:]
        text = set_key(text, key, value, why)
    # Before enrolment_map's comment block (the comment lines above it).
    block = key_line(text, "enrolment_map").start() - 1
    while text[text.rfind("\n", 0, block) + 1] == "#":
        block = text.rfind("\n", 0, block)
    protocol = (
        comment(
            "avg or concat: CN-Celeb's two ways to enrol a speaker (the trials "
            "are the same); each writes its own results_<protocol>.json, "
            "scores and per-genre table, and shares the embeddings."
        )
        + "protocol: avg\n"
    )
    return text[: block + 1] + protocol + text[block + 1 :]


def main():
    """Writes the stale files (``--check``: lists them, exit status 1)."""
    check = "--check" in sys.argv[1:]
    try:
        files = generate()
    except ValueError as err:
        sys.exit(f"ERROR: {err}")
    stale = [
        p
        for p, t in files.items()
        if not p.is_file() or p.read_text(encoding="utf-8") != t
    ]
    extra = sorted(set(PUBLISHED.glob("*.yaml")) - set(files))
    if check:
        for path in [*stale, *extra]:
            print(f"stale: {path}")
        sys.exit(1 if stale or extra else 0)
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}")
    for path in extra:  # a published stage no longer in SYSTEMS
        path.unlink()
        print(f"removed {path}")


if __name__ == "__main__":
    main()
