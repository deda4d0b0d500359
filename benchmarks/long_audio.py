"""Peak memory and time of one speaker embedding against utterance length.

    python benchmarks/long_audio.py [--device cpu|cuda] [--seconds 10,60,600]
        [--whole-up-to 60] [--tiny]

WavLM Base+ architecture (random weights) with ``unipet`` and an ECAPA-TDNN
(C=512), in eval mode without autograd, as verification and the exported
model run it. Each (length, mode) runs in a fresh process: one warm-up
embedding of a 2 s utterance, then the measured one. Peak memory: CPU =
growth of the maximum resident set size during the measured embedding;
CUDA = ``torch.cuda.max_memory_allocated`` above what the model holds.

Modes: ``windowed`` is the default path (``MAX_CHUNK_SECONDS`` windows,
``CHUNK_OVERLAP_SECONDS`` overlap, embeddings averaged); ``whole`` embeds
the utterance at once (``max_chunk_seconds=None``), only up to
``--whole-up-to`` seconds: its attention memory grows with the square of
the length.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch


def measure(folder, seconds, windowed, device):
    """Peak memory (bytes) and time (s) of one embedding, in this process."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    from speechbrain_unipet.lobes import PETEncoder
    from speechbrain_unipet.lobes.embedding import speaker_embeddings

    torch.manual_seed(0)
    encoder = PETEncoder(folder, method="unipet")
    ecapa = ECAPA_TDNN(encoder.hidden_size, lin_neurons=192)
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    modules = torch.nn.ModuleList([encoder, ecapa, norm]).to(device).eval()
    chunk = {} if windowed else {"max_chunk_seconds": None}

    def embed(length):
        wav = torch.randn(1, int(length * 16000), device=device) * 0.1
        with (
            torch.no_grad(),
            torch.autocast(
                "cuda", torch.bfloat16, enabled=device.startswith("cuda")
            ),
        ):
            speaker_embeddings(encoder, norm, ecapa, wav, **chunk)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    embed(2.0)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    embed(seconds)
    elapsed = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = (rss1 - rss0) * 1024
    del modules
    return peak, elapsed


def main():
    """Prints the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", default="10,60,600")
    parser.add_argument("--whole-up-to", type=float, default=60.0)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny random WavLM instead of Base+ (checks this script only)",
    )
    args = parser.parse_args()
    from transformers import WavLMConfig, WavLMModel

    from speechbrain_unipet.lobes.embedding import (
        CHUNK_OVERLAP_SECONDS,
        MAX_CHUNK_SECONDS,
    )
    from speechbrain_unipet.testing import tiny_config

    lengths = [float(s) for s in args.seconds.split(",")]
    arch = "tiny WavLM" if args.tiny else "WavLM Base+ architecture"
    where = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else "CPU"
    )
    print(
        f"One embedding (unipet + ECAPA-TDNN), {arch}, {where}; windows of "
        f"{MAX_CHUNK_SECONDS:g} s overlapping by {CHUNK_OVERLAP_SECONDS:g} s:"
        "\n\n| length | mode | peak memory | time | time per s of audio |"
        "\n|---:|---|---:|---:|---:|"
    )
    config = tiny_config("wavlm") if args.tiny else WavLMConfig()
    with tempfile.TemporaryDirectory() as folder:
        WavLMModel(config).save_pretrained(folder)
        for seconds in lengths:
            modes = ["windowed"]
            if seconds <= args.whole_up_to:
                modes.append("whole")
            for mode in modes:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        folder,
                        str(seconds),
                        mode,
                        args.device,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                peak, elapsed = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"| {seconds:g} s | {mode} | {peak / 2**20:.0f} MiB | "
                    f"{elapsed:.2f} s | {1000 * elapsed / seconds:.1f} ms |"
                )
            if seconds > args.whole_up_to:
                print(f"| {seconds:g} s | whole | not run | | |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        folder, seconds, mode, device = sys.argv[2:6]
        peak, elapsed = measure(
            folder, float(seconds), mode == "windowed", device
        )
        print(json.dumps([peak, elapsed]))
    else:
        sys.exit(main())
