"""The PET method registry: a method is data, not a branch in the encoder.

Each method names the PET components it inserts (see ``component.py``),
which backbone tensors it unfreezes, and the defaults of its options that
differ from the components' own. ``PETEncoder`` reads this table; adding a
method that combines registered components is one ``register_method`` call,
and a new kind of component is one ``register_component`` class. Option
tables (``OPTIONS``, docs/methods.md's, the recipe YAMLs' checks) derive from the
component option dataclasses.

Authors
 * speechbrain-unipet contributors 2026
"""

from dataclasses import dataclass, field

from speechbrain.utils.logger import get_logger

# Importing the modules registers the built-in components.
from . import adapters, gates, lora, prompts  # noqa: F401
from .component import PET_COMPONENTS, option_fields

logger = get_logger(__name__)

UNFREEZE_MODES = ("none", "biases", "transformer")


def option_table():
    """Option name -> (default, help) over every registered component."""
    table = {}
    for component in PET_COMPONENTS.values():
        for name, f in option_fields(component).items():
            table.setdefault(name, (f.default, f.metadata["help"]))
    return table


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
        Names of registered components, built in this order (gates last:
        they scale the branches built before them).
    unfreeze : str
        Backbone tensors that train: ``none``, ``biases`` (BitFit) or
        ``transformer`` (full fine-tuning; the CNN stays frozen).
    defaults : dict
        Option defaults that differ from the components' for this method.
    reference : str
        Where the design comes from.
    """

    name: str
    summary: str
    components: tuple = ()
    unfreeze: str = "none"
    defaults: dict = field(default_factory=dict)
    reference: str = ""

    def __post_init__(self):
        unknown = [c for c in self.components if c not in PET_COMPONENTS]
        if unknown:
            raise ValueError(
                f"method '{self.name}': unknown component(s) {unknown}; "
                f"registered: {sorted(PET_COMPONENTS)}"
            )
        if "gates" in self.components[:-1]:
            raise ValueError(
                f"method '{self.name}': 'gates' must come last in components "
                "(it gates the branches built before it)"
            )
        if self.unfreeze not in UNFREEZE_MODES:
            raise ValueError(
                f"method '{self.name}': unfreeze must be one of "
                f"{list(UNFREEZE_MODES)}"
            )
        extra = sorted(set(self.defaults) - self.options())
        if extra:
            raise ValueError(
                f"method '{self.name}' sets defaults for options its "
                f"components do not have: {extra}"
            )

    def options(self):
        """Names of the options this method reads."""
        names = set()
        for comp in self.components:
            names.update(option_fields(PET_COMPONENTS[comp]))
        return names

    def resolve(self, given=None):
        """Option values of this method: component default < method
        default < given (``None`` in ``given`` means "the default").

        Arguments
        ---------
        given : dict or None
            Options set by the user.

        Returns
        -------
        dict
            Every option this method reads, with its (unvalidated) value.
        """
        values = {}
        for comp in self.components:
            for name, f in option_fields(PET_COMPONENTS[comp]).items():
                values.setdefault(name, f.default)
        values.update(self.defaults)
        values.update(
            {
                k: v
                for k, v in (given or {}).items()
                if v is not None and k in values
            }
        )
        return values

    def component_options(self, given=None):
        """Validated options of each component, in build order.

        Arguments
        ---------
        given : dict or None
            Options set by the user. A name no component has is an error; a
            name this method's components do not read is logged.

        Returns
        -------
        list
            ``(component class, its Options instance)`` pairs.
        """
        given = dict(given or {})
        known = option_table()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown PET option(s) {unknown}. Valid options: "
                f"{sorted(known)}"
            )
        ignored = sorted(
            k
            for k, v in given.items()
            if v is not None and k not in self.options()
        )
        if ignored:
            logger.warning(
                "PET method '%s' ignores the options %s (it reads: %s).",
                self.name,
                ignored,
                sorted(self.options()) or "none",
            )
        values = self.resolve(given)
        out = []
        for comp in self.components:
            cls = PET_COMPONENTS[comp]
            kwargs = {k: values[k] for k in option_fields(cls)}
            out.append((cls, cls.Options(**kwargs)))
        return out


def option_values(component_options):
    """Option name -> value over the components' validated options: the
    flat view in which users set options.

    Arguments
    ---------
    component_options : list
        ``(component class, its Options instance)`` pairs, as
        ``PETMethod.component_options`` returns them.

    Returns
    -------
    dict

    Example
    -------
    >>> pairs = PET_METHODS["lora"].component_options({"lora_rank": 2})
    >>> option_values(pairs)["lora_rank"]
    2
    """
    return {
        name: value
        for _, opts in component_options
        for name, value in vars(opts).items()
    }


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
        components=("inner_adapter", "deep_prompt", "inter_adapter", "gates"),
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
        components=("inner_adapter", "deep_prompt"),
        defaults={"prompt_length": 64, "inner_position": "ffn"},
        reference="Kim et al. 2022 (IPET code, wav2vec2 SV setting)",
    ),
]

PET_METHODS = {m.name: m for m in _METHODS}


def register_method(method):
    """Adds a ``PETMethod`` to the registry (for methods defined outside the
    package: after this, ``PETEncoder(..., method=method.name)`` works).

    Arguments
    ---------
    method : PETMethod
        The new method; its name must be new.

    Returns
    -------
    PETMethod
        ``method``.
    """
    if method.name in PET_METHODS:
        raise ValueError(f"PET method '{method.name}' is already registered")
    PET_METHODS[method.name] = method
    return method


def _cell(value):
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`" if value is not None else "all layers"


def method_tables():
    """The method and option tables of docs/methods.md, derived from the registry.

    Returns
    -------
    str
        Two Markdown tables: each method's components, what it unfreezes
        and its own option defaults; each option's default, the components
        that read it and what it means.

    Example
    -------
    >>> "| `unipet` |" in method_tables()
    True
    """
    rows = [
        "| method | components | backbone trains | method defaults |",
        "|---|---|---|---|",
    ]
    for m in PET_METHODS.values():
        comps = ", ".join(f"`{c}`" for c in m.components) or "none"
        own = ", ".join(f"`{k}={v}`" for k, v in m.defaults.items()) or "-"
        unfreeze = {"none": "nothing"}.get(m.unfreeze, m.unfreeze)
        rows.append(f"| `{m.name}` | {comps} | {unfreeze} | {own} |")
    rows += [
        "",
        "| option | default | read by | meaning |",
        "|---|---|---|---|",
    ]
    for name, (default, meaning) in sorted(option_table().items()):
        readers = ", ".join(
            f"`{c.name}`"
            for c in PET_COMPONENTS.values()
            if name in option_fields(c)
        )
        meaning = meaning.replace("|", "\\|")
        rows.append(f"| `{name}` | {_cell(default)} | {readers} | {meaning} |")
    return "\n".join(rows) + "\n"


def __getattr__(name):
    # OPTIONS is computed on access, so that components registered later
    # (outside the package) appear in it too.
    if name == "OPTIONS":
        return option_table()
    raise AttributeError(name)


def get_method(name):
    """Returns the registry entry for ``name`` or raises a clear error.

    Arguments
    ---------
    name : str
        A method name.

    Returns
    -------
    PETMethod

    Example
    -------
    >>> get_method("unipet").components
    ('inner_adapter', 'deep_prompt', 'inter_adapter', 'gates')
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
