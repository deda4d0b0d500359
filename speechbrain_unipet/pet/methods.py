"""The PET method registry: a method is data, not a branch in the encoder.

Each method names the PET components it inserts, which backbone tensors it
unfreezes, and the defaults of its options. ``PETEncoder`` reads this table;
adding a method that combines existing components is one entry here plus
one YAML fragment.

Authors
 * speechbrain-unipet contributors 2026
"""

from dataclasses import dataclass, field

# Option name -> (global default, what it means). Per-method defaults below
# override the global ones. Every option is a PETEncoder keyword / YAML key.
OPTIONS = {
    "adapter_dim": (128, "bottleneck of Inner / Houlsby adapters"),
    "inter_adapter_dim": (128, "bottleneck of the Inter adapters"),
    "adapter_scale": (0.1, "output scale s of parallel adapters (IPET: 0.1)"),
    "adapter_dropout": (0.1, "dropout inside adapters (IPET: 0.1)"),
    "adapter_activation": ("relu", "relu | gelu | silu"),
    "inner_position": ("ffn", "Inner adapter parallel to: ffn | mhsa | both"),
    "prompt_length": (16, "prompt tokens per prompted layer (N_p)"),
    "prompt_init": ("xavier", "xavier | normal | zeros"),
    "lora_rank": (8, "LoRA rank r"),
    "lora_alpha": (8.0, "LoRA alpha; scaling = alpha / rank (PEFT)"),
    "lora_targets": (
        ("q_proj", "v_proj"),
        "attention projections: any of q_proj, k_proj, v_proj, out_proj",
    ),
    "gate_bias_init": (0.0, "initial gate bias (0 -> gates start at 0.5)"),
    "gated_branches": (
        ("inner_adapter", "prompt", "inter_adapter"),
        "UniPET branches multiplied by a gate",
    ),
    "pet_layers": (None, "0-based Transformer layers that get PET modules"),
}

# Which options each component reads (used to flag options a method ignores).
COMPONENT_OPTIONS = {
    "inner_adapter": (
        "adapter_dim",
        "adapter_scale",
        "adapter_dropout",
        "adapter_activation",
        "inner_position",
        "pet_layers",
    ),
    "inter_adapter": (
        "inter_adapter_dim",
        "adapter_scale",
        "adapter_dropout",
        "adapter_activation",
    ),
    "houlsby": (
        "adapter_dim",
        "adapter_dropout",
        "adapter_activation",
        "pet_layers",
    ),
    "adapterbias": ("pet_layers",),
    "lora": ("lora_rank", "lora_alpha", "lora_targets", "pet_layers"),
    "deep_prompt": ("prompt_length", "prompt_init", "pet_layers"),
    "shallow_prompt": ("prompt_length", "prompt_init"),
    "gates": ("gate_bias_init", "gated_branches"),
}


@dataclass(frozen=True)
class PETMethod:
    """One row of the registry.

    Arguments
    ---------
    name : str
        Method name used in YAML (``method: unipet``).
    summary : str
        One line for tables and error messages.
    components : tuple
        PET components to insert (keys of ``COMPONENT_OPTIONS``).
    unfreeze : str
        Backbone tensors that train: ``none``, ``biases`` (BitFit) or
        ``transformer`` (full fine-tuning; the CNN stays frozen).
    defaults : dict
        Option defaults that differ from ``OPTIONS`` for this method.
    reference : str
        Where the design comes from.
    """

    name: str
    summary: str
    components: tuple = ()
    unfreeze: str = "none"
    defaults: dict = field(default_factory=dict)
    reference: str = ""

    def options(self):
        """Names of the options this method reads."""
        names = set()
        for comp in self.components:
            names.update(COMPONENT_OPTIONS[comp])
        return names

    def resolve(self, given):
        """Merged option values: global default < method default < given.

        Arguments
        ---------
        given : dict
            Options set by the user (``None`` means "use the default").

        Returns
        -------
        dict
            Every option in ``OPTIONS`` with its value.
        """
        values = {k: v for k, (v, _) in OPTIONS.items()}
        values.update(self.defaults)
        values.update({k: v for k, v in given.items() if v is not None})
        return values


_METHODS = [
    PETMethod(
        "finetune",
        "all Transformer weights and the feature projection train (CNN frozen)",
        unfreeze="transformer",
        reference="standard fine-tuning",
    ),
    PETMethod(
        "frozen",
        "backbone frozen; only the layer weights train (SUPERB weighted sum)",
        reference="SUPERB; Chen et al. 2022",
    ),
    PETMethod(
        "inner_adapter",
        "parallel bottleneck adapters inside every layer (FFN by default)",
        components=("inner_adapter",),
        reference="Sang & Hansen 2024; He et al. 2021; IPET code",
    ),
    PETMethod(
        "inter_adapter",
        "an adapter on every hidden state before the weighted sum",
        components=("inter_adapter",),
        reference="Sang & Hansen 2024",
    ),
    PETMethod(
        "inner_inter_adapter",
        "Inner + Inter adapters (the 2024 adapter paper)",
        components=("inner_adapter", "inter_adapter"),
        reference="Sang & Hansen 2024 (arXiv 2403.00293)",
    ),
    PETMethod(
        "deep_prompt",
        "Deep Speaker Prompting: fresh prompt tokens before every layer",
        components=("deep_prompt",),
        defaults={"prompt_length": 64},
        reference="Sang & Hansen 2025; IPET embedding prompts",
    ),
    PETMethod(
        "unipet",
        "UniPET-SPK: Inner+Inter adapters and deep prompts, mixed by "
        "learnable per-layer gates",
        components=("inner_adapter", "inter_adapter", "deep_prompt", "gates"),
        defaults={"prompt_length": 48},
        reference="Sang & Hansen 2025 (arXiv 2501.16542); UniPELT gates",
    ),
    PETMethod(
        "houlsby",
        "sequential bottleneck adapter after the FFN",
        components=("houlsby",),
        defaults={
            "adapter_dim": 32,
            "adapter_dropout": 0.0,
            "adapter_activation": "gelu",
        },
        reference="Houlsby et al. 2019; Chen et al. 2022 (s3adapter code)",
    ),
    PETMethod(
        "adapterbias",
        "token-dependent shift v * alpha(h) on every FFN",
        components=("adapterbias",),
        reference="Fu et al. 2022; Chen et al. 2022",
    ),
    PETMethod(
        "lora",
        "low-rank updates of attention projections (parametrisation)",
        components=("lora",),
        reference="Hu et al. 2021; PEFT conventions",
    ),
    PETMethod(
        "bitfit",
        "only the bias terms of the Transformer train",
        unfreeze="biases",
        reference="Ben Zaken et al. 2022; Chen et al. 2022",
    ),
    PETMethod(
        "shallow_prompt",
        "prompt tokens prepended once at the encoder input",
        components=("shallow_prompt",),
        defaults={"prompt_length": 10},
        reference="Chen et al. 2022 ('preinput')",
    ),
    PETMethod(
        "ipet",
        "deep prompts + parallel FFN adapter, no gate",
        components=("deep_prompt", "inner_adapter"),
        defaults={"prompt_length": 64, "inner_position": "ffn"},
        reference="Kim et al. 2022 (IPET code, wav2vec2 SV setting)",
    ),
]

PET_METHODS = {m.name: m for m in _METHODS}


def get_method(name):
    """Returns the registry entry for ``name`` or raises a clear error.

    Example
    -------
    >>> get_method("unipet").components
    ('inner_adapter', 'inter_adapter', 'deep_prompt', 'gates')
    >>> get_method("adapter")
    Traceback (most recent call last):
    ...
    ValueError: Unknown PET method 'adapter'. Valid methods: ...
    """
    try:
        return PET_METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown PET method {name!r}. Valid methods: "
            f"{', '.join(PET_METHODS)}"
        ) from None
