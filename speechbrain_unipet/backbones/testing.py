"""Tiny random-weight SSL models saved like hub checkpoints.

Used by the tests, the doctests and the offline demo: no weights can be
downloaded there, so a small config is saved with ``save_pretrained`` and
loaded back through exactly the code path a hub id or user folder takes.

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import pathlib

import torch

TINY_COMMON = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16),
    "conv_stride": (5, 4, 4),
    "conv_kernel": (10, 4, 4),
    "num_conv_pos_embedding_groups": 4,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "feat_proj_dropout": 0.1,
    "layerdrop": 0.1,
    "mask_time_prob": 0.05,
}


def tiny_config(model_type="wavlm", pre_ln=False, **overrides):
    """A small random-initialisable HF config of ``model_type``.

    Arguments
    ---------
    model_type : str
        ``wavlm``, ``hubert``, ``wav2vec2``, ``data2vec-audio`` or
        ``wav2vec2-bert`` (W2V-BERT 2.0).
    pre_ln : bool
        "Stable layer norm" (pre-LN, large-model) layout; the CNN then uses
        LayerNorm in every layer, as the large checkpoints do.
    **overrides
        Any other config field.

    Returns
    -------
    transformers.PretrainedConfig
    """
    from transformers import (
        Data2VecAudioConfig,
        HubertConfig,
        Wav2Vec2Config,
        WavLMConfig,
    )

    classes = {
        "wavlm": WavLMConfig,
        "hubert": HubertConfig,
        "wav2vec2": Wav2Vec2Config,
        "data2vec-audio": Data2VecAudioConfig,
    }
    if model_type not in classes and model_type != "wav2vec2-bert":
        raise ValueError(
            f"model_type must be one of {[*classes, 'wav2vec2-bert']}"
        )
    if model_type == "wav2vec2-bert":
        return _tiny_w2v_bert_config(pre_ln, **overrides)
    kwargs = dict(TINY_COMMON)
    if model_type == "data2vec-audio":
        if pre_ln:
            raise ValueError("data2vec-audio has no pre-LN variant in HF")
        kwargs.update(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)
    else:
        kwargs.update(num_conv_pos_embeddings=8)
        kwargs["do_stable_layer_norm"] = pre_ln
        kwargs["feat_extract_norm"] = "layer" if pre_ln else "group"
    kwargs.update(overrides)
    return classes[model_type](**kwargs)


def _tiny_w2v_bert_config(pre_ln=False, **overrides):
    """A small W2V-BERT 2.0 config: 80 mel bins stacked to 160, a kernel-5
    depthwise convolution, relative-key positions clamped to [-8, 4] (so
    that the tests' utterances reach the clamp)."""
    from transformers import Wav2Vec2BertConfig

    if pre_ln:
        raise ValueError("W2V-BERT has one layout (pre-LN Conformer)")
    kwargs = {
        key: TINY_COMMON[key]
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_dropout",
            "attention_dropout",
            "activation_dropout",
            "feat_proj_dropout",
            "layerdrop",
            "mask_time_prob",
        )
    }
    kwargs.update(
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=8,
        right_max_position_embeddings=4,
        conformer_conv_dropout=0.1,
    )
    kwargs.update(overrides)
    return Wav2Vec2BertConfig(**kwargs)


def tiny_ssl_folder(
    root,
    model_type="wavlm",
    pre_ln=False,
    seed=0,
    do_normalize=False,
    **overrides,
):
    """Saves a tiny random SSL model as a local HF folder and returns it.

    The folder holds ``config.json``, ``model.safetensors`` and
    ``preprocessor_config.json``, as a downloaded hub snapshot does.

    Arguments
    ---------
    root : str or pathlib.Path
        Folder the model folder is created in. An existing one with the
        same name is reused.
    model_type : str
        ``wavlm``, ``hubert``, ``wav2vec2``, ``data2vec-audio`` or
        ``wav2vec2-bert``.
    pre_ln : bool
        "Stable layer norm" (pre-LN, large-model) layout, as in
        ``tiny_config``.
    seed : int
        Seed of the random weights.
    do_normalize : bool
        Whether the feature extractor normalises waveforms.
    **overrides
        Config fields replacing the tiny defaults of ``tiny_config``.

    Returns
    -------
    pathlib.Path
        The model folder, usable as ``source`` of ``PETEncoder``.

    Example
    -------
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "hubert")
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    name = f"tiny-{model_type}{'-preln' if pre_ln else ''}-{seed}"
    folder = pathlib.Path(root) / name
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    config = tiny_config(model_type, pre_ln, **overrides)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    if model_type == "wav2vec2-bert":
        from transformers import SeamlessM4TFeatureExtractor

        # What facebook/w2v-bert-2.0 ships (no waveform normalisation).
        SeamlessM4TFeatureExtractor().save_pretrained(folder)
    else:
        Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=True,
        ).save_pretrained(folder)
    with open(folder / "preprocessor_config.json", encoding="utf-8") as f:
        json.load(f)  # fail early if HF wrote something unreadable
    return folder
