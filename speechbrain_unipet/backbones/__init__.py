"""SSL speech encoder backbones: the only code that imports ``transformers``
or knows HuggingFace module names.

A backbone loads a model and runs it layer by layer; PET components reach
it only through its public methods (sizes, ``features``, ``encoder_input``,
``layer_context``, ``run_layer`` with hooks at named places, ``prefix_kv``,
``attention_projection``, ``set_trainable``, ``save_pretrained``).
``load_backbone`` picks the class from the model's config: ``SSLBackbone``
for the Transformer encoders (WavLM, HuBERT, wav2vec 2.0, data2vec-audio),
``W2VBertBackbone`` for W2V-BERT 2.0 (a Conformer).
"""

import json
import pathlib

from .hf_ssl import (
    SUPPORTED_MODEL_TYPES,
    TRANSFORMER_MODEL_TYPES,
    SSLBackbone,
    SSLBackboneError,
    conv_output_lengths,
    exporting,
    lengths_to_mask,
)
from .w2v_bert import W2VBertBackbone

#: model_type -> backbone class (the Transformer encoders by default).
BACKBONE_CLASSES = {"wav2vec2-bert": W2VBertBackbone}


def _model_type(source, save_path):
    """The ``model_type`` of a local folder's or a hub id's config, or None
    when it cannot be read (the backbone then reports why)."""
    config = pathlib.Path(str(source)) / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text("utf-8")).get("model_type")
        except (OSError, ValueError):
            return None
    if pathlib.Path(str(source)).exists():
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(
            str(source), cache_dir=save_path or None
        ).model_type
    except Exception:  # noqa: BLE001 -- SSLBackbone gives the clear error
        return None


def load_backbone(source, save_path="", normalize_wav=None):
    """The backbone for ``source``, of the class its config's model type
    calls for.

    Arguments
    ---------
    source : str or pathlib.Path
        HuggingFace hub id or local folder.
    save_path : str
        Where hub downloads are cached.
    normalize_wav : bool or None
        Per-utterance waveform normalisation (None: the preprocessor's).

    Returns
    -------
    SSLBackbone

    Example
    -------
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> bb = load_backbone(
    ...     tiny_ssl_folder(getfixture("tmp_path"), "wav2vec2-bert")
    ... )
    >>> type(bb).__name__, bb.FFN_PLACES
    ('W2VBertBackbone', ('ffn1', 'ffn2'))
    """
    cls = BACKBONE_CLASSES.get(_model_type(source, save_path), SSLBackbone)
    return cls(str(source), save_path, normalize_wav)


__all__ = [
    "BACKBONE_CLASSES",
    "SUPPORTED_MODEL_TYPES",
    "TRANSFORMER_MODEL_TYPES",
    "SSLBackbone",
    "SSLBackboneError",
    "W2VBertBackbone",
    "conv_output_lengths",
    "exporting",
    "lengths_to_mask",
    "load_backbone",
]
