"""Long utterances are embedded in windows, the same way in the recipe's
verification and in the exported model, so memory does not grow with the
length (the figures are in ``benchmarks/long_audio.py``)."""

import torch
from helpers import small_model

from speechbrain_unipet.inference import SpeakerEmbeddingModel
from speechbrain_unipet.lobes.embedding import speaker_embeddings, window_starts
from speechbrain_unipet.training.runs import compute_embedding


def test_long_utterance_is_the_mean_of_its_windows(ssl_folder):
    modules = small_model(ssl_folder("wavlm"))
    torch.manual_seed(1)
    wav = torch.randn(1, 13000)
    seen = []
    modules["ssl_encoder"].register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[1])
    )
    chunk = {"max_chunk_seconds": 0.25, "chunk_overlap_seconds": 0.0625}
    with torch.no_grad():
        emb, gates = speaker_embeddings(
            modules["ssl_encoder"],
            modules["mean_var_norm"],
            modules["embedding_model"],
            wav,
            **chunk,
        )
        starts = window_starts(13000, 4000, 3000)
        assert starts == [0, 3000, 6000, 9000]
        seen.clear()
        windows = [
            compute_embedding(
                modules, wav[:, s : s + 4000], max_chunk_seconds=None
            )
            for s in starts
        ]
    assert max(seen) == 4000  # the encoder never sees more than a window
    torch.testing.assert_close(
        emb, torch.cat(windows).mean(0, keepdim=True), atol=1e-5, rtol=0
    )
    assert gates["inner_adapter"].shape == (1, 2)
    with torch.no_grad():
        whole = compute_embedding(modules, wav, max_chunk_seconds=None)
    assert not torch.allclose(emb, whole, atol=1e-4)


def test_padded_batch_with_a_long_row_gives_each_rows_embedding(ssl_folder):
    modules = small_model(ssl_folder("wavlm"))
    torch.manual_seed(2)
    batch = torch.randn(2, 9000)
    batch[1, 3000:] = 0
    lens = torch.tensor([1.0, 3000 / 9000])
    chunk = {"max_chunk_seconds": 0.25, "chunk_overlap_seconds": 0.0}
    with torch.no_grad():
        both = compute_embedding(modules, batch, lens, **chunk)
        first = compute_embedding(modules, batch[:1], **chunk)
        second = compute_embedding(modules, batch[1:, :3000], **chunk)
    torch.testing.assert_close(both[0], first[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1], second[0], atol=1e-5, rtol=0)


def test_exported_model_and_recipe_cut_alike(ssl_folder):
    modules = small_model(ssl_folder("wavlm"))
    exported = SpeakerEmbeddingModel(
        modules["ssl_encoder"],
        modules["embedding_model"],
        max_chunk_seconds=0.25,
        chunk_overlap_seconds=0.05,
    ).eval()
    torch.manual_seed(3)
    wav = torch.randn(1, 11000)
    with torch.no_grad():
        torch.testing.assert_close(
            exported(wav, torch.ones(1)),
            compute_embedding(
                modules,
                wav,
                max_chunk_seconds=0.25,
                chunk_overlap_seconds=0.05,
            ),
        )


def test_training_mode_never_cuts(ssl_folder):
    modules = small_model(ssl_folder("wavlm")).train()
    seen = []
    modules["ssl_encoder"].register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[1])
    )
    speaker_embeddings(
        modules["ssl_encoder"],
        modules["mean_var_norm"],
        modules["embedding_model"],
        torch.randn(2, 9000),
        max_chunk_seconds=0.25,
    )
    assert seen == [9000]
