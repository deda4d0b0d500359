"""Extraction throughput: the batched engine vs one utterance at a time.

    python benchmarks/extraction.py [--device cpu|cuda] [--utterances 48]
        [--min-seconds 2] [--max-seconds 8] [--batch-size 16]
        [--num-workers 2] [--method unipet] [--backend ecapa] [--tiny]

The WavLM Base+ architecture (random weights; ``--tiny``: a 2-layer, 32-dim
WavLM) under a PET method, with SpeechBrain's ECAPA-TDNN (C=512) or MHFA
behind it, embeds the same random-noise utterances (lengths spread evenly
between ``--min-seconds`` and ``--max-seconds``, written as 16 kHz wav
files, so decoding is part of the work) twice in one run, in turn:

* **one by one**: ``speechbrain_unipet.evaluation.extraction.extract`` with
  ``batch_size=1`` and no DataLoader workers, what verification did before
  the engine;
* **batched**: length-bucketed batches of ``--batch-size`` (at most 240 s
  of padded audio), ``--num-workers`` decoding processes.

It prints utterances per second, the real-time factor (processing time /
audio time; lower is faster), the speed-up, and the largest difference
between the two stores' embeddings (the engine is exact for padded
batches). On CUDA the model runs in float32 (what verification does).
"""

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from speechbrain_unipet.evaluation.extraction import extract
from speechbrain_unipet.evaluation.utterances import utterances_from_folder
from speechbrain_unipet.lobes import PETEncoder  # noqa: E402
from speechbrain_unipet.testing import tiny_ssl_folder  # noqa: E402


def build(folder, method, backend, device):
    """(encoder, normaliser, back-end) in eval mode on ``device``."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    from speechbrain_unipet.lobes.backends import MHFA

    torch.manual_seed(0)
    encoder = PETEncoder(
        str(folder), method, output_all_hiddens=backend != "ecapa"
    )
    size = encoder.hidden_size
    if backend == "ecapa":
        model = ECAPA_TDNN(size, lin_neurons=192)
    else:
        model = MHFA(size, num_layers=encoder.num_layers + 1)
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    return tuple(m.to(device).eval() for m in (encoder, norm, model))


def write_audio(folder, count, low, high, seed=0):
    """``count`` noise files of evenly spread lengths; their total seconds."""
    rng = np.random.default_rng(seed)
    seconds = np.linspace(low, high, count)
    rng.shuffle(seconds)
    for k, s in enumerate(seconds):
        samples = rng.standard_normal(int(s * 16000)).astype(np.float32)
        sf.write(folder / f"utt{k:04d}.wav", 0.1 * samples, 16000)
    return float(seconds.sum())


def main(argv=None):
    """Runs the comparison and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--method", default="unipet")
    parser.add_argument("--backend", default="ecapa", choices=["ecapa", "mhfa"])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if args.tiny:
            folder = tiny_ssl_folder(tmp, "wavlm", num_hidden_layers=2)
            arch = "tiny WavLM"
        else:
            from transformers import WavLMConfig, WavLMModel

            torch.manual_seed(0)
            folder = tmp / "wavlm-base-plus-arch"
            WavLMModel(WavLMConfig()).save_pretrained(folder)
            arch = "WavLM Base+ architecture"
        audio = tmp / "audio"
        audio.mkdir()
        total = write_audio(
            audio, args.utterances, args.min_seconds, args.max_seconds
        )
        modules = build(folder, args.method, args.backend, args.device)
        utts = utterances_from_folder(audio)
        runs = [
            ("one by one", {"batch_size": 1, "num_workers": 0}),
            (
                f"batched ({args.batch_size}, {args.num_workers} workers)",
                {
                    "batch_size": args.batch_size,
                    "num_workers": args.num_workers,
                },
            ),
        ]
        rows, stores = [], []
        for k, (name, options) in enumerate(runs):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            store = extract(
                modules,
                utts,
                tmp / f"store{k}",
                progress=False,
                **options,
            )
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            stores.append(store)
            rows.append((name, elapsed))
        diff = float(np.abs(stores[0].embeddings - stores[1].embeddings).max())
    device = "CUDA" if args.device.startswith("cuda") else "CPU"
    print(
        f"Extraction, {arch}, `{args.method}` + {args.backend}, {device}, "
        f"{args.utterances} utterances of {args.min_seconds:g}-"
        f"{args.max_seconds:g} s ({total:.0f} s of audio)\n"
    )
    print("| mode | time | utterances/s | real-time factor | speed-up |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0][1]
    for name, elapsed in rows:
        print(
            f"| {name} | {elapsed:.2f} s | {args.utterances / elapsed:.2f} | "
            f"{elapsed / total:.4f} | {base / elapsed:.2f}x |"
        )
    print(f"\nlargest embedding difference batched vs one by one: {diff:.2e}")


if __name__ == "__main__":
    main()
