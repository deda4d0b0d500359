"""Training-step time and peak memory per PET method vs full fine-tuning.

    python benchmarks/training_cost.py [--device cpu|cuda] [--steps 3] [--methods a,b]

WavLM Base+ architecture (random weights), batch of 4 x 2 s, one step =
forward + backward + Adam step on the encoder's trainable tensors and the
layer-weighted sum (no speaker back-end). Every method runs in its own
process so that peak memory is measured from the same starting point: CPU
peak = growth of the maximum resident set size during the steps; CUDA peak =
``torch.cuda.max_memory_allocated`` during the steps. On CUDA the step runs
under bf16 autocast. Also prints inference time per second of audio for the
frozen backbone, Inner+Inter adapters, unipet, and LoRA unmerged vs merged:
all five encoders live in one process and run in turn, round after round,
so that the overheads (median of the per-round ratios) compare runs made
under the same machine load.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

BATCH, SECONDS, RATE = 4, 2.0, 16000


def child(folder, method, device, steps):
    """Times ``steps`` training steps of one method; prints JSON."""
    from speechbrain_unipet.lobes import PETEncoder

    torch.manual_seed(0)
    enc = PETEncoder(folder, method=method).to(device).train()
    wavs = torch.randn(BATCH, int(SECONDS * RATE), device=device)
    lens = torch.ones(BATCH, device=device)
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    opt = torch.optim.Adam(
        [p for p in enc.parameters() if p.requires_grad], lr=1e-4
    )

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = enc(wavs, lens).float().pow(2).mean()
        loss.backward()
        opt.step()

    # Memory baselines before the first step: the peak then includes
    # gradients, optimiser state and activations, all of which PET saves.
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        ) * 1024
        # ru_maxrss only grows: report the first step's growth on top of the
        # warm-up, which already allocated the steady-state buffers once.
    trainable, total = enc.count_parameters()
    print(
        json.dumps(
            {
                "time": min(times),
                "peak": peak,
                "trainable": trainable,
                "total": total,
            }
        )
    )


def measure(folder, method, device, steps):
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            folder,
            method,
            device,
            str(steps),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--inference-only", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=10, help="inference rounds"
    )
    parser.add_argument(
        "--inference-seconds",
        type=float,
        default=SECONDS,
        help="utterance length for the inference table",
    )
    args = parser.parse_args()
    from transformers import WavLMConfig, WavLMModel

    from speechbrain_unipet.lobes import PET_METHODS

    methods = args.methods.split(",") if args.methods else list(PET_METHODS)
    if "finetune" not in methods:
        methods.insert(0, "finetune")
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else "CPU"
    )
    with tempfile.TemporaryDirectory() as folder:
        WavLMModel(WavLMConfig()).save_pretrained(folder)
        if not args.inference_only:
            training_table(folder, methods, args, name)
        inference_table(folder, args, name)
    return 0


def training_table(folder, methods, args, name):
    """Prints step time and peak memory per method vs finetune."""
    rows = {m: measure(folder, m, args.device, args.steps) for m in methods}
    ref = rows["finetune"]
    print(
        f"Training step, WavLM Base+ architecture, {BATCH} x {SECONDS:g} s, {name}"
        f"{' (bf16 autocast)' if args.device.startswith('cuda') else ''}:\n"
    )
    print(
        "| method | step time | vs finetune | peak memory | vs finetune | utt/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for m, r in rows.items():
        print(
            f"| `{m}` | {r['time']:.3f} s | {r['time'] / ref['time']:.2f}x | "
            f"{r['peak'] / 2**20:.0f} MiB | {r['peak'] / max(ref['peak'], 1):.2f}x | "
            f"{BATCH / r['time']:.1f} |"
        )


INFERENCE_RUNS = [
    ("frozen (no PET module)", "frozen", False),
    ("inner_inter_adapter", "inner_inter_adapter", False),
    ("unipet (48 prompt tokens per layer)", "unipet", False),
    ("lora, unmerged", "lora", False),
    ("lora, merged", "lora", True),
]


def inference_child(folder, device, rounds, seconds):
    """Times every encoder of ``INFERENCE_RUNS`` in turn, ``rounds`` times."""
    from speechbrain_unipet.lobes import PETEncoder

    torch.manual_seed(0)
    wavs = torch.randn(BATCH, int(seconds * RATE), device=device)
    lens = torch.ones(BATCH, device=device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    encoders = []
    for _, method, merged in INFERENCE_RUNS:
        enc = PETEncoder(folder, method=method).to(device).eval()
        if merged:
            enc.merge_lora()
        encoders.append(enc)
    times = [[] for _ in encoders]
    with (
        torch.no_grad(),
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda),
    ):
        for enc in encoders:
            enc(wavs, lens)  # warm-up
        for r in range(rounds):
            # Rotate the order so that no encoder always runs first.
            order = list(range(len(encoders)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for i in order:
                sync()
                start = time.perf_counter()
                encoders[i](wavs, lens)
                sync()
                times[i].append(time.perf_counter() - start)
    print(json.dumps(times))


def inference_table(folder, args, name):
    """Prints inference time per second of audio with and without PET."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--inference-child",
            folder,
            args.device,
            str(args.rounds),
            str(args.inference_seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    times = json.loads(out.stdout.strip().splitlines()[-1])
    audio = BATCH * args.inference_seconds
    base = times[0]
    print(
        f"\nInference (no autograd), {BATCH} x {args.inference_seconds:g} s, "
        f"{name}, median of {args.rounds} rounds:\n"
    )
    print("| encoder | time per s of audio | overhead vs backbone alone |")
    print("|---|---:|---:|")
    for (label, _, _), t in zip(INFERENCE_RUNS, times, strict=True):
        ratio = statistics.median(a / b for a, b in zip(t, base, strict=True))
        print(
            f"| {label} | {1000 * statistics.median(t) / audio:.1f} ms | "
            f"{100 * (ratio - 1):+.1f} % |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--inference-child":
        inference_child(
            sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        )
    else:
        sys.exit(main())
