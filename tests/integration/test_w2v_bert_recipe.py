"""The recipe on W2V-BERT 2.0 (``hparams/w2v_bert/``, the layer-adapter MFA
back-end); the backbone's own guarantees: ``tests/unit/test_w2v_bert.py``."""

import torch
from helpers import (
    checkpoints,
    ckpt_state,
    load_in_fresh_process,
    recipe_embeddings,
    train,
    verify,
)

from speechbrain_unipet.export import export
from speechbrain_unipet.testing import tiny_ssl_folder


def test_w2v_bert_recipe_trains_verifies_and_exports(recipe_env, tmp_path):
    """``hparams/w2v_bert/lora.yaml`` (layer-adapter MFA back-end) trains
    one epoch, verifies, and exports to a folder that SpeechBrain's
    ``EncoderClassifier`` loads offline in a fresh process, giving the
    recipe's embeddings (padded batches too), LoRA merged or not. The MFA
    back-end reads every hidden state: the encoder's layer weights do not
    train, so the checkpoint holds none (the MHFA and CA-MHFA back-ends:
    ``tests/integration/test_training_stages.py``).

    ``hparams/w2v_bert/unipet.yaml`` is not trained here: it loads and
    builds (tests/unit/test_recipe_yamls.py), UniPET trains, verifies and
    exports through the recipe on WavLM (test_recipe.py, test_export.py),
    and on W2V-BERT its prompts, adapters and gates keep the padded-batch,
    literal-prompting, bf16 and PET-state guarantees
    (tests/unit/test_w2v_bert.py) and get gradients
    (tests/unit/test_gradient_health.py)."""
    out = tmp_path / "lora"
    train(
        recipe_env,
        "w2v_bert/lora",
        out,
        f"--ssl_hub={tiny_ssl_folder(tmp_path, 'wav2vec2-bert')}",
        "--mfa_adapter_dim=8",
        # One epoch: the yaml's 5 warm-up epochs would be refused.
        "--lr_warmup_epochs=0",
        "--lora_rank=4",
        "--lora_alpha=8.0",
    )
    (ckpt,) = checkpoints(out)
    assert "layer_weights" not in ckpt_state(ckpt, "ssl_encoder")
    result = verify(out)
    assert result["num_trials"] == 6 and 0.0 <= result["eer"] <= 1.0
    ref = recipe_embeddings(out, recipe_env["data"])
    kinds = {
        "copy": {"copy_backbone_files": True},
        "merged": {"merge_lora": True},
    }
    for name, options in kinds.items():
        hub = export(out, tmp_path / name, **options)
        got = load_in_fresh_process(hub, recipe_env["data"], tmp_path, tmp_path)
        torch.testing.assert_close(got["single"], ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            got["padded"], got["single"], atol=1e-4, rtol=0
        )
