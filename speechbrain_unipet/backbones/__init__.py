"""SSL speech encoder backbones: the only code that imports ``transformers``
or knows HuggingFace module names.

A backbone loads a model and runs it layer by layer; PET components reach
it only through its public methods (sizes, ``features``, ``encoder_input``,
``layer_context``, ``run_layer`` with hooks at named places, ``prefix_kv``,
``attention_projection``, ``set_trainable``, ``save_pretrained``).
"""

from .hf_ssl import (
    SUPPORTED_MODEL_TYPES,
    SSLBackbone,
    SSLBackboneError,
    conv_output_lengths,
    lengths_to_mask,
)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SSLBackbone",
    "SSLBackboneError",
    "conv_output_lengths",
    "lengths_to_mask",
]
