"""Tiny random-weight SSL models saved like hub checkpoints, for tests,
doctests and the offline demo (defined in the backbone package, the only
code that knows HuggingFace classes)."""

from speechbrain_unipet.backbones.testing import tiny_config, tiny_ssl_folder

__all__ = ["tiny_config", "tiny_ssl_folder"]
