#!/usr/bin/env python3
"""Writes ``recipes/VoxCeleb/SpeakerRec/hparams/<method>.yaml`` for every
method of the PET registry (``speechbrain_unipet.pet.PET_METHODS``), and
``hparams/w2v_bert/<method>.yaml`` for the W2V-BERT 2.0 recipes.

Each method yaml is a full, self-contained SpeechBrain recipe, as in
SpeechBrain's own recipe folders. The files differ only in their header,
their ``PET method`` section (method, ``lr_pet``, the method's options with
the registry defaults) and the ``options:`` of ``ssl_encoder``. To change
the shared part, edit ``unipet.yaml`` and run (from the repository root)

> python tools/make_recipe_hparams.py

which copies it to every method file with that method's sections.
``tests/test_recipe_yamls.py`` checks the files against the registry on its
own (it does not run this script), so a hand edit that drifts from the
registry fails there.

Authors
 * speechbrain-unipet contributors 2026
"""

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


def main():
    if set(METHODS) != set(PET_METHODS):
        sys.exit(
            "ERROR: METHODS must list every registered method: "
            f"missing {sorted(set(PET_METHODS) - set(METHODS))}, "
            f"unknown {sorted(set(METHODS) - set(PET_METHODS))}"
        )
    template = (HPARAMS / TEMPLATE).read_text(encoding="utf-8")
    for name in PET_METHODS:
        (HPARAMS / f"{name}.yaml").write_text(
            render(template, name), encoding="utf-8"
        )
        print(f"wrote {HPARAMS / name}.yaml")
    for folder, (_, _, methods, _, _) in BACKBONE_RECIPES.items():
        (HPARAMS / folder).mkdir(exist_ok=True)
        for name in methods:
            text = render_backbone(render(template, name), folder, name)
            (HPARAMS / folder / f"{name}.yaml").write_text(
                text, encoding="utf-8"
            )
            print(f"wrote {HPARAMS / folder / name}.yaml")


if __name__ == "__main__":
    main()
