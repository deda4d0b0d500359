"""Training-step time and peak memory per PET method vs full fine-tuning.

    python benchmarks/training_cost.py [--device cpu|cuda] [--rounds 5]
        [--inference-rounds 20] [--methods a,b] [--inference-only]
        [--inference-seconds 2] [--tiny] [--backbone wavlm|w2v-bert]
        [--layers N]

WavLM Base+ or W2V-BERT 2.0 architecture (random weights; ``--layers``
keeps the first N layers), batch of 4 x 2 s, one step =
forward + backward + Adam step on the encoder's trainable tensors and the
layer-weighted sum (no speaker back-end). On CUDA everything runs under bf16
autocast.

* Time: all encoders (and their optimisers) live in one process and take one
  step each in turn, round after round (the order rotates). Ratios are the
  median of the per-round ratios to ``finetune``, so that every ratio
  compares steps taken under the same machine load.
* Peak memory: every method in its own fresh process, one warm-up step, then
  one measured step: CPU peak = growth of the maximum resident set size,
  CUDA peak = ``torch.cuda.max_memory_allocated`` above what was allocated
  before the first step (gradients, optimiser state and activations, all of
  which PET saves).
* FLOPs: of one step (``torch.utils.flop_counter``; matmuls, convolutions
  and attention, 2 per multiply-add), beside the time: the share of
  fine-tuning's arithmetic a method still does, i.e. its floor on a machine
  whose matmuls run at full speed.
* Fine-tuning's step is also split into forward, backward and optimiser:
  a method without gradients through the backbone is one forward pass.
* ``unipet`` also runs with ``gradient_checkpointing: True`` (an extra row):
  layers recompute their forward in backward, for less activation memory.
* Inference: time per second of audio for the frozen backbone, Inner+Inter
  adapters, unipet, and LoRA unmerged vs merged, timed the same way
  (``--inference-rounds``, default 20), and their FLOPs.
"""

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

BATCH, SECONDS, RATE = 4, 2.0, 16000


def _wavlm_config():
    from transformers import WavLMConfig

    return WavLMConfig()  # the Base+ sizes


def _w2v_bert_config():
    from transformers import Wav2Vec2BertConfig

    return Wav2Vec2BertConfig()  # facebook/w2v-bert-2.0's sizes


#: --backbone -> (family, full-size name, tiny model type, full-size config).
BACKBONES = {
    "wavlm": ("WavLM", "WavLM Base+", "wavlm", _wavlm_config),
    "w2v-bert": ("W2V-BERT", "W2V-BERT 2.0", "wav2vec2-bert", _w2v_bert_config),
}

# (label, method, PETEncoder options; "merge_lora": merged after building)
INFERENCE_RUNS = [
    ("frozen (no PET module)", "frozen", {}),
    ("inner_inter_adapter", "inner_inter_adapter", {}),
    ("unipet (48 prompt tokens per layer)", "unipet", {}),
    ("lora, unmerged", "lora", {}),
    ("lora, merged", "lora", {"merge_lora": True}),
]
# Extra training rows, shown when their method is benchmarked.
TRAINING_VARIANTS = [
    (
        "`unipet`, gradient checkpointing",
        "unipet",
        {"gradient_checkpointing": True},
    ),
]


def make_step(folder, method, device, train, seconds, options=None):
    """Builds one encoder; returns a function running one step of it."""
    from speechbrain_unipet.lobes import PETEncoder

    options = dict(options or {})
    merged = options.pop("merge_lora", False)
    checkpointing = options.pop("gradient_checkpointing", False)
    torch.manual_seed(0)
    enc = PETEncoder(
        folder,
        method=method,
        options=options,
        gradient_checkpointing=checkpointing,
    )
    enc = enc.to(device).train(train)
    if merged:
        enc.merge_lora()
    wavs = torch.randn(BATCH, int(seconds * RATE), device=device)
    lens = torch.ones(BATCH, device=device)
    cuda = device.startswith("cuda")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    if not train:

        def infer():
            with torch.no_grad(), autocast():
                enc(wavs, lens)

        return enc, infer
    opt = torch.optim.Adam(
        [p for p in enc.parameters() if p.requires_grad], lr=1e-4
    )

    def step(phases=None):
        """One training step; appends (forward, backward, optimiser) s."""
        marks = [_clock(cuda)]
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = enc(wavs, lens).float().pow(2).mean()
        marks.append(_clock(cuda))
        loss.backward()
        marks.append(_clock(cuda))
        opt.step()
        marks.append(_clock(cuda))
        if phases is not None:
            phases.append([b - a for a, b in itertools.pairwise(marks)])

    return enc, step


def _clock(cuda):
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


def timing_child(folder, device, specs, rounds, seconds, train):
    """Times one step of every (method, options) in turn, ``rounds`` times."""
    cuda = device.startswith("cuda")
    steps = [
        make_step(folder, method, device, train, seconds, options)[1]
        for method, options in specs
    ]
    for step in steps:
        step()  # warm-up
    times = [[] for _ in steps]
    phases = []  # of the first spec's training steps
    for r in range(rounds):
        order = list(range(len(steps)))
        for i in order[r % len(order) :] + order[: r % len(order)]:
            start = _clock(cuda)
            if train and i == 0:
                steps[i](phases)
            else:
                steps[i]()
            times[i].append(_clock(cuda) - start)
    flops = [count_flops(step) for step in steps]
    print(json.dumps({"times": times, "phases": phases, "flops": flops}))


def count_flops(step):
    """FLOPs (2 per multiply-add) of one step: matmuls, convs, attention."""
    from torch.utils.flop_counter import (
        FlopCounterMode,
        conv_flop_count,
        flop_registry,
    )

    aten = torch.ops.aten

    def conv_backward(grad_out, x, w, *args, out_shape=None, **kwargs):
        # torch's own formula ignores groups (16x too much for the grouped
        # positional conv). The input and the weight gradient each take as
        # many multiply-adds as the forward convolution.
        transposed, output_mask = args[4], args[7]
        forward = conv_flop_count(x, w, grad_out, transposed=transposed)
        return forward * (int(output_mask[0]) + int(output_mask[1]))

    def same_as(op):
        # torch's formula for ``op``, taking tensors as it does itself.
        def formula(*args, **kwargs):
            return flop_registry[op](*args, **kwargs)

        formula._get_raw = True
        return formula

    # torch counts the CUDA attention kernels; the CPU ones compute the same.
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: same_as(
            aten._scaled_dot_product_flash_attention
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: same_as(
            aten._scaled_dot_product_flash_attention_backward
        ),
        aten.convolution_backward: conv_backward,
    }
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return counter.get_total_flops()


def memory_child(folder, method, device, options):
    """Peak memory of one training step of ``method`` in a fresh process."""
    cuda = device.startswith("cuda")
    enc, step = make_step(folder, method, device, True, SECONDS, options)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        ) * 1024
    trainable, total = enc.count_parameters()
    print(json.dumps({"peak": peak, "trainable": trainable, "total": total}))


def run_child(*args):
    """Runs this script with ``args`` in a new process; returns its JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(folder, device, specs, rounds, seconds, train):
    """Times, FLOPs and the first spec's training phases, all specs in turn.

    Returns ``(rows, phases)``: per spec (median time, median per-round
    time ratio to the first spec, FLOP ratio to the first spec); the median
    (forward, backward, optimiser) seconds of the first spec's steps.
    """
    out = run_child(
        "--timing-child",
        folder,
        device,
        json.dumps(specs),
        rounds,
        seconds,
        int(train),
    )
    times, flops = out["times"], out["flops"]
    rows = [
        (
            statistics.median(t),
            statistics.median(a / b for a, b in zip(t, times[0], strict=True)),
            f / flops[0],
        )
        for t, f in zip(times, flops, strict=True)
    ]
    phases = [statistics.median(p) for p in zip(*out["phases"], strict=True)]
    return rows, phases


def training_table(folder, methods, args, name):
    """Prints step time, FLOPs and peak memory per method vs finetune."""
    rows = [(f"`{m}`", m, {}) for m in methods]
    rows += [v for v in TRAINING_VARIANTS if v[1] in methods]
    specs = [(m, options) for _, m, options in rows]
    timed, phases = interleaved(
        folder, args.device, specs, args.rounds, SECONDS, True
    )
    memory = [
        run_child(
            "--memory-child", folder, m, args.device, json.dumps(options)
        )["peak"]
        for m, options in specs
    ]
    print(
        f"Training step, {BATCH} x {SECONDS:g} s, {name}"
        f"{' (bf16 autocast)' if args.device.startswith('cuda') else ''}, "
        f"median of {args.rounds} rounds:\n"
    )
    print(
        "| method | step time | vs finetune | FLOPs vs finetune | peak memory "
        "| vs finetune | utt/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (label, _, _), (t, ratio, flops), peak in zip(
        rows, timed, memory, strict=True
    ):
        print(
            f"| {label} | {t:.3f} s | {ratio:.2f}x | {flops:.2f}x | "
            f"{peak / 2**20:.0f} MiB | {peak / max(memory[0], 1):.2f}x | "
            f"{BATCH / t:.1f} |"
        )
    forward, backward, optimiser = phases
    total = forward + backward + optimiser
    print(
        f"\n`{methods[0]}` step, median: forward {forward:.3f} s "
        f"({forward / total:.2f}x of the step), backward {backward:.3f} s, "
        f"optimiser {optimiser:.3f} s."
    )


def inference_table(folder, args, name):
    """Prints inference time per second of audio with and without PET."""
    specs = [(method, options) for _, method, options in INFERENCE_RUNS]
    seconds = args.inference_seconds
    timed, _ = interleaved(
        folder, args.device, specs, args.inference_rounds, seconds, False
    )
    print(
        f"\nInference (no autograd), {BATCH} x {seconds:g} s, {name}, "
        f"median of {args.inference_rounds} rounds:\n"
    )
    print(
        "| encoder | time per s of audio | overhead vs backbone alone "
        "| FLOPs vs backbone alone |"
    )
    print("|---|---:|---:|---:|")
    for (label, _, _), (t, ratio, flops) in zip(
        INFERENCE_RUNS, timed, strict=True
    ):
        print(
            f"| {label} | {1000 * t / (BATCH * seconds):.1f} ms | "
            f"{100 * (ratio - 1):+.1f} % | {100 * (flops - 1):+.1f} % |"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--inference-rounds",
        type=int,
        default=20,
        help="rounds of the inference table (its steps are short and its "
        "differences a few per cent, so it takes more)",
    )
    parser.add_argument("--methods", default=None)
    parser.add_argument("--inference-only", action="store_true")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny random model instead of the full sizes (checks this script only)",
    )
    parser.add_argument(
        "--inference-seconds",
        type=float,
        default=SECONDS,
        help="utterance length for the inference table",
    )
    parser.add_argument(
        "--backbone",
        default="wavlm",
        choices=tuple(BACKBONES),
        help="architecture: WavLM Base+ or W2V-BERT 2.0 (580 M, Conformer)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="keep only this many layers (a reduced depth, e.g. 6 of "
        "W2V-BERT's 24 on 2 CPU cores)",
    )
    args = parser.parse_args()
    from transformers import AutoModel

    from speechbrain_unipet.lobes import PET_METHODS
    from speechbrain_unipet.testing import tiny_config

    methods = args.methods.split(",") if args.methods else list(PET_METHODS)
    methods = ["finetune"] + [m for m in methods if m != "finetune"]
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else "CPU"
    )
    family, title, model_type, make_config = BACKBONES[args.backbone]
    if args.tiny:
        arch, config = f"tiny {family}", tiny_config(model_type)
    else:
        arch, config = f"{title} architecture", make_config()
    if args.layers:
        config.num_hidden_layers = args.layers
        arch += f", first {args.layers} layers"
    with tempfile.TemporaryDirectory() as folder:
        AutoModel.from_config(config).save_pretrained(folder)
        if not args.inference_only:
            training_table(folder, methods, args, f"{arch}, {name}")
        inference_table(folder, args, f"{arch}, {name}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--timing-child":
        folder, device, specs, rounds, seconds, train = sys.argv[2:8]
        timing_child(
            folder,
            device,
            json.loads(specs),
            int(rounds),
            float(seconds),
            bool(int(train)),
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        folder, method, device, options = sys.argv[2:6]
        memory_child(folder, method, device, json.loads(options))
    else:
        sys.exit(main())
