"""The PET component contract: options, attachment, and the stages a
component may take part in during the encoder's forward pass.

A *component* (an Inner adapter set, deep prompts, LoRA, UniPET's gates...)
is one ``PETComponent`` subclass registered with ``register_component``. It
owns:

* its options, a frozen dataclass (``Options``) whose fields have defaults
  and are validated in one place (``ComponentOptions.__post_init__``);
* how it attaches to a backbone: its constructor creates its tensors for
  the backbone's sizes (and may parametrise backbone weights, as LoRA);
* the stages it takes part in, all optional (the base class does nothing):

  - ``input_tokens``: tokens prepended once to the encoder input;
  - ``before_layer``: per-layer values, e.g. gates, put in the context;
  - ``prefix_kv``: attention key/value prefixes of a layer;
  - ``layer_hooks``: functions around a layer's attention / FFN;
  - ``hidden_gates`` / ``process_hiddens``: the hidden-state stack;
  - ``merge``: folding the component into the backbone weights.

Per-layer state reaches the hooks through a ``LayerContext`` argument (the
layer index, the frame mask, the gates), never through module attributes.
A component keeps its tensors in child modules, which the encoder registers
flat as ``pet.<child name>``, so state-dict names do not depend on how
modules are grouped into components.

Authors
 * speechbrain-unipet contributors 2026
"""

import math
from dataclasses import dataclass, field, fields

from torch import nn

#: Registered component classes by name (``register_component``).
PET_COMPONENTS = {}


def option(default, help, kind, choices=None, minimum=None, maximum=None):
    """Declares one field of a component's ``Options`` dataclass.

    Arguments
    ---------
    default : object
        The default value (lists are stored as tuples).
    help : str
        One line for tables, YAML comments and errors.
    kind : str
        ``int``, ``float``, ``str``, ``str_list`` or ``layers`` (None, or
        a non-empty list of 0-based layer indices).
    choices : sequence or callable or None
        Allowed values for ``str`` / ``str_list`` (a callable is asked at
        validation time, for choices that depend on the registry).
    minimum, maximum : float or None
        Inclusive bounds for numbers; for ``str_list`` ``minimum`` is the
        minimum number of items.

    Returns
    -------
    dataclasses.Field

    Example
    -------
    >>> @dataclass(frozen=True)
    ... class Opts(ComponentOptions):
    ...     size: int = option(4, "a size", "int", minimum=1)
    >>> Opts(size=8).size
    8
    >>> Opts(size=2.5)
    Traceback (most recent call last):
    ...
    ValueError: PET option size=2.5 must be an integer >= 1 (a size).
    """
    if isinstance(default, list):
        default = tuple(default)
    meta = {
        "help": help,
        "kind": kind,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
    }
    return field(default=default, metadata=meta)


def pet_layers_option():
    """The ``pet_layers`` option, shared by every component acting on a
    subset of layers (one definition, so its default and meaning agree).

    Returns
    -------
    dataclasses.Field
    """
    return option(
        None, "0-based Transformer layers that get PET modules", "layers"
    )


def _bounds(meta):
    low, high = meta["minimum"], meta["maximum"]
    parts = []
    if low is not None:
        parts.append(f">= {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return " " + " and ".join(parts) if parts else ""


def _choices(meta):
    choices = meta["choices"]
    return tuple(choices() if callable(choices) else choices or ())


def check_option(name, value, meta, label="PET option"):
    """Validates and normalises one option value (see ``option``).

    Arguments
    ---------
    name : str
        The option name (for the error message).
    value : object
        The given value.
    meta : dict
        The field metadata written by ``option``.
    label : str
        What the value is, for the error message.

    Returns
    -------
    object
        The value in its canonical type (tuples for lists).

    Raises
    ------
    ValueError
        Naming the option, the value and what is expected.
    """
    kind = meta["kind"]
    what = f"{label} {name}={value!r} must be"
    hint = f" ({meta['help']})."
    low, high = meta["minimum"], meta["maximum"]
    if kind in ("int", "float"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "int" and not (
            number and float(value).is_integer() and math.isfinite(value)
        ):
            raise ValueError(f"{what} an integer{_bounds(meta)}{hint}")
        if kind == "float" and not (number and math.isfinite(value)):
            raise ValueError(f"{what} a finite number{_bounds(meta)}{hint}")
        value = int(value) if kind == "int" else float(value)
        if (low is not None and value < low) or (
            high is not None and value > high
        ):
            noun = "an integer" if kind == "int" else "a number"
            raise ValueError(f"{what} {noun}{_bounds(meta)}{hint}")
        return value
    if kind == "str":
        choices = _choices(meta)
        if not isinstance(value, str) or (choices and value not in choices):
            raise ValueError(f"{what} one of {list(choices)}{hint}")
        return value
    if kind == "str_list":
        choices = _choices(meta)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or any(
            not isinstance(v, str) or (choices and v not in choices)
            for v in items
        ):
            raise ValueError(f"{what} a list of {list(choices)}{hint}")
        if low is not None and len(items) < low:
            raise ValueError(f"{what} a list of at least {low} item(s){hint}")
        return tuple(items)
    if kind == "layers":
        if value is None:
            return None
        items = [value] if isinstance(value, int) else value
        if (
            not isinstance(items, (list, tuple))
            or not items
            or any(isinstance(i, bool) or not isinstance(i, int) for i in items)
            or any(i < 0 for i in items)
        ):
            raise ValueError(
                f"{what} null (all layers) or a non-empty list of 0-based "
                f"layer indices{hint}"
            )
        return tuple(sorted(set(items)))
    raise ValueError(f"unknown option kind '{kind}' for {name}")


@dataclass(frozen=True)
class ComponentOptions:
    """Base of every component's options: fields declared with ``option``
    are validated and normalised when the dataclass is built."""

    def __post_init__(self):
        for f in fields(self):
            value = check_option(f.name, getattr(self, f.name), f.metadata)
            object.__setattr__(self, f.name, value)

    @classmethod
    def describe(cls):
        """Field name -> (default, help) of these options."""
        return {f.name: (f.default, f.metadata["help"]) for f in fields(cls)}


def select_layers(pet_layers, num_layers):
    """The layers a component acts on: ``pet_layers`` or all of them.

    Arguments
    ---------
    pet_layers : tuple or None
        Validated ``pet_layers`` option.
    num_layers : int
        Transformer layers of the backbone.

    Returns
    -------
    list
        Sorted 0-based layer indices.

    Example
    -------
    >>> select_layers(None, 3), select_layers((2, 0), 3)
    ([0, 1, 2], [0, 2])
    >>> select_layers((5,), 3)
    Traceback (most recent call last):
    ...
    ValueError: pet_layers [5] must be 0-based layer indices below 3.
    """
    if pet_layers is None:
        return list(range(num_layers))
    layers = sorted(pet_layers)
    if layers[-1] >= num_layers:
        raise ValueError(
            f"pet_layers {layers} must be 0-based layer indices below "
            f"{num_layers}."
        )
    return layers


@dataclass
class LayerContext:
    """What the PET stages of one Transformer layer see in one forward pass.

    Arguments
    ---------
    index : int
        The layer (0-based).
    frame_mask : torch.Tensor or None
        Bool [B, T], True on valid frames (None: nothing is padded).
    gates : dict
        Branch name -> per-utterance gate [B], filled by ``before_layer``.
    """

    index: int
    frame_mask: object = None
    gates: dict = field(default_factory=dict)


class PETComponent(nn.Module):
    """Base class of PET components (see the module docstring).

    Subclasses set ``name`` (the registry key), ``Options`` (a
    ``ComponentOptions`` dataclass), optionally ``branch`` (the name a
    UniPET gate uses to scale their output) and ``gate_stage`` (``layer``
    for branches inside a layer, ``hiddens`` for the hidden-state stack),
    and override the stages they take part in.

    Arguments
    ---------
    backbone : speechbrain_unipet.backbones.SSLBackbone
        The backbone to attach to (sizes, modules to parametrise).
    options : ComponentOptions
        An instance of the subclass's ``Options``.
    built : sequence
        The components of the method built before this one.
    """

    name = None
    Options = ComponentOptions
    branch = None
    gate_stage = "layer"
    #: Prompt tokens this component puts in front of some layers' keys and
    #: values (the backbone sizes WavLM's position bias for them).
    prefix_length = 0

    def __init__(self, backbone, options, built=()):
        super().__init__()
        if not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} needs {self.Options.__name__}, got "
                f"{type(options).__name__}"
            )
        self.options = options

    @property
    def needs_backbone_grad(self):
        """Whether autograd must run through the Transformer stack."""
        return True

    def input_tokens(self, batch_size, dtype):
        """Tokens [B, P, D] to prepend to the encoder input, or None."""
        return None

    def before_layer(self, layer, x):
        """Called with the layer input ``x`` (frames only) before the layer
        runs; may fill ``layer.gates``."""

    def prefix_kv(self, layer, x, backbone):
        """Attention key/value prefix (keys, values) for ``layer``, or None."""
        return None

    def layer_hooks(self, layer):
        """``(place, fn(input, output) -> output)`` pairs for ``layer``
        (places: ``SSLBackbone.HOOK_PLACES``)."""
        return ()

    def hidden_gates(self, hiddens, frame_mask):
        """Gates on the hidden-state stack: branch -> [B, L+1]."""
        return {}

    def process_hiddens(self, hiddens, frame_mask, gates):
        """Returns the L+1 hidden states after this component."""
        return hiddens

    def merge(self):
        """Folds the component into the backbone weights; returns the number
        of modules merged (0: nothing to merge)."""
        return 0


def register_component(cls):
    """Adds a ``PETComponent`` subclass to the registry (a class decorator).

    An option name used by several components must mean the same thing in
    all of them: same kind and default, since users set options by name.

    Arguments
    ---------
    cls : type
        The component class.

    Returns
    -------
    type
        ``cls``.
    """
    if not (isinstance(cls, type) and issubclass(cls, PETComponent)):
        raise TypeError("register_component expects a PETComponent subclass")
    if not cls.name or cls.name in PET_COMPONENTS:
        raise ValueError(
            f"component name {cls.name!r} is empty or already registered"
        )
    for other in PET_COMPONENTS.values():
        mine, theirs = option_fields(cls), option_fields(other)
        for key in mine.keys() & theirs.keys():
            a, b = mine[key], theirs[key]
            if (a.default, a.metadata["kind"]) != (
                b.default,
                b.metadata["kind"],
            ):
                raise ValueError(
                    f"option '{key}' of component '{cls.name}' differs from "
                    f"the one of '{other.name}' (default or kind)"
                )
    PET_COMPONENTS[cls.name] = cls
    return cls


def option_fields(component_class):
    """Option name -> dataclass field of a component class."""
    return {f.name: f for f in fields(component_class.Options)}


def gate_branches():
    """Branch names of registered components (what gates can scale)."""
    return tuple(c.branch for c in PET_COMPONENTS.values() if c.branch)
