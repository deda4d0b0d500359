"""Backbone-agnostic PET modules (pure torch) and the method registry."""

from .adapters import AdapterBias, BottleneckAdapter
from .gates import BranchGate, masked_time_mean
from .lora import LoRAParametrization, add_lora, merge_lora
from .methods import OPTIONS, PET_METHODS, PETMethod, get_method
from .prompts import DeepPrompts, ShallowPrompt

__all__ = [
    "OPTIONS",
    "PET_METHODS",
    "AdapterBias",
    "BottleneckAdapter",
    "BranchGate",
    "DeepPrompts",
    "LoRAParametrization",
    "PETMethod",
    "ShallowPrompt",
    "add_lora",
    "get_method",
    "masked_time_mean",
    "merge_lora",
]
