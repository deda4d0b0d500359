"""PET components (pure torch modules + how they attach), the method
registry and the PET state format."""

from .adapters import (
    AdapterBias,
    AdapterBiasComponent,
    BottleneckAdapter,
    HoulsbyAdapterComponent,
    InnerAdapterComponent,
    InterAdapterComponent,
)
from .attached import AttachedComponents
from .component import (
    PET_COMPONENTS,
    ComponentOptions,
    LayerContext,
    PETComponent,
    option,
    register_component,
    select_layers,
)
from .gates import BranchGate, UniPETGateComponent, masked_time_mean
from .lora import LoRAComponent, LoRAParametrization, add_lora, merge_lora
from .methods import (
    OPTIONS,
    PET_METHODS,
    PETMethod,
    get_method,
    option_values,
    register_method,
)
from .prompts import (
    DeepPromptComponent,
    DeepPrompts,
    ShallowPrompt,
    ShallowPromptComponent,
)

__all__ = [
    "OPTIONS",
    "PET_COMPONENTS",
    "PET_METHODS",
    "AdapterBias",
    "AdapterBiasComponent",
    "AttachedComponents",
    "BottleneckAdapter",
    "BranchGate",
    "ComponentOptions",
    "DeepPromptComponent",
    "DeepPrompts",
    "HoulsbyAdapterComponent",
    "InnerAdapterComponent",
    "InterAdapterComponent",
    "LayerContext",
    "LoRAComponent",
    "LoRAParametrization",
    "PETComponent",
    "PETMethod",
    "ShallowPrompt",
    "ShallowPromptComponent",
    "UniPETGateComponent",
    "add_lora",
    "get_method",
    "masked_time_mean",
    "merge_lora",
    "option",
    "option_values",
    "register_component",
    "register_method",
    "select_layers",
]
