"""A VoxBlink2-size speaker classifier: its memory and its share of a
training step.

    python benchmarks/large_classifier.py [--device cpu|cuda] [--classes 5994,100000]
        [--sub-centers 3] [--emb-dim 256] [--batch 4] [--rounds 3] [--tiny]

The recipe's classifier is ``SubCenterClassifier`` (``sub_centers`` weight
vectors of ``emb_dim`` per class) under the inter-top-k AAM loss
(``InterTopKAdditiveAngularMargin``, margin 0.2, scale 32, top-5), trained
with Adam, as ``hparams/published/w2v_bert_*`` and WeSpeaker's VoxBlink2
models (3 sub-centres, 256-d). For each number of classes:

* **memory** of the classifier in training, in a fresh process: the growth
  of the resident set (CPU) or ``max_memory_allocated`` (CUDA) over one
  warm-up and one measured step of the classifier alone (weights, their
  gradient, Adam's two moments, the [batch, classes x sub_centres] logits
  and one-hot targets), beside the arithmetic: 4 x weights x 4 bytes;
* **time** of the classifier alone (forward, backward, Adam step on a batch
  of embeddings), and of a full training step of the WavLM Base+
  architecture (random weights) under ``unipet`` with the MHFA back-end
  (256-d) and that classifier, ``--batch`` utterances of 3 s; the share is
  the classifier's time over the full step's. The configurations take
  their steps in turn, round after round, so that the times compare steps
  under the same machine load.

The 100k-class classifier is the one VoxBlink2 users train (about 110k
speakers); with speed perturbation as three classes per speaker it would be
three times larger.
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

SECONDS, RATE, MARGIN, SCALE = 3.0, 16000, 0.2, 32.0


def classifier_parts(classes, sub_centers, emb_dim, device):
    """The recipe's classifier, loss and their Adam optimiser."""
    from speechbrain.nnet.losses import LogSoftmaxWrapper

    from speechbrain_unipet.training.losses import (
        InterTopKAdditiveAngularMargin,
        SubCenterClassifier,
    )

    classifier = SubCenterClassifier(
        emb_dim, out_neurons=classes, sub_centers=sub_centers
    ).to(device)
    loss = LogSoftmaxWrapper(
        InterTopKAdditiveAngularMargin(margin=MARGIN, scale=SCALE)
    )
    return classifier, loss


def classifier_step(classes, sub_centers, emb_dim, batch, device):
    """A step of the classifier alone on fixed embeddings."""
    gen = torch.Generator().manual_seed(0)
    classifier, loss = classifier_parts(classes, sub_centers, emb_dim, device)
    emb = torch.randn(batch, 1, emb_dim, generator=gen).to(device)
    emb.requires_grad_(True)
    targets = torch.randint(classes, (batch, 1), generator=gen).to(device)
    opt = torch.optim.Adam(classifier.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(classifier(emb), targets).backward()
        opt.step()

    return step


def full_step(encoder_folder, classes, sub_centers, emb_dim, batch, device):
    """A training step: unipet encoder, MHFA back-end, the classifier."""
    from speechbrain_unipet.lobes import MHFA, PETEncoder

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    encoder = PETEncoder(encoder_folder, method="unipet")
    encoder.set_output_all_hiddens(True)
    encoder = encoder.to(device).train()
    backend = MHFA(
        encoder.hidden_size, encoder.num_layers + 1, lin_neurons=emb_dim
    ).to(device)
    classifier, loss = classifier_parts(classes, sub_centers, emb_dim, device)
    wavs = torch.randn(batch, int(SECONDS * RATE), generator=gen).to(device)
    lengths = torch.ones(batch, device=device)
    targets = torch.randint(classes, (batch, 1), generator=gen).to(device)
    params = [
        p
        for m in (encoder, backend, classifier)
        for p in m.parameters()
        if p.requires_grad
    ]
    opt = torch.optim.Adam(params, lr=1e-3)
    cuda = device.startswith("cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            emb = backend(encoder(wavs, lengths), lengths)
        loss(classifier(emb.float()), targets).backward()
        opt.step()

    return step


def _clock(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def measure_memory(classes, sub_centers, emb_dim, batch, device):
    """Memory of the classifier in training (run in a fresh process)."""
    cuda = device.startswith("cuda")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    step = classifier_step(classes, sub_centers, emb_dim, batch, device)
    step()
    step()
    if cuda:
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def memory_in_fresh_process(args, classes):
    """MiB, from ``--memory-of CLASSES`` run in a new interpreter."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--memory-of={classes}",
            f"--sub-centers={args.sub_centers}",
            f"--emb-dim={args.emb_dim}",
            f"--batch={args.batch}",
            f"--device={args.device}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["mib"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--classes", default="5994,100000")
    parser.add_argument("--sub-centers", type=int, default=3)
    parser.add_argument("--emb-dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-of", type=int, default=None)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny random WavLM and few classes (checks this script only)",
    )
    args = parser.parse_args()
    if args.memory_of is not None:
        mib = measure_memory(
            args.memory_of,
            args.sub_centers,
            args.emb_dim,
            args.batch,
            args.device,
        )
        print(json.dumps({"mib": mib}))
        return
    from transformers import WavLMConfig, WavLMModel

    from speechbrain_unipet.testing import tiny_config

    classes = [int(c) for c in args.classes.split(",")]
    if args.tiny:
        classes = [10, 1000]
    config = tiny_config("wavlm") if args.tiny else WavLMConfig()
    memory = {c: memory_in_fresh_process(args, c) for c in classes}
    with tempfile.TemporaryDirectory() as folder:
        WavLMModel(config).save_pretrained(folder)
        steps = {}
        for c in classes:
            steps[("classifier", c)] = classifier_step(
                c, args.sub_centers, args.emb_dim, args.batch, args.device
            )
            steps[("full", c)] = full_step(
                folder,
                c,
                args.sub_centers,
                args.emb_dim,
                args.batch,
                args.device,
            )
        for step in steps.values():  # warm-up: allocations, Adam state
            step()
        times = {key: [] for key in steps}
        keys = list(steps)
        for r in range(args.rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                start = _clock(args.device)
                steps[key]()
                times[key].append(_clock(args.device) - start)
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    arch = "tiny WavLM" if args.tiny else "WavLM Base+ architecture"
    print(
        f"Sub-centre AAM classifier ({args.sub_centers} sub-centres, "
        f"{args.emb_dim}-d, inter-top-k AAM, Adam) in a training step of the "
        f"{arch} (random weights) + unipet + MHFA, batch {args.batch} x "
        f"{SECONDS:g} s, {device}, median of {args.rounds} rounds:\n"
    )
    print(
        "| classes | classifier parameters | weights + grad + Adam | "
        "measured memory | classifier step | full step | classifier share |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c in classes:
        weights = c * args.sub_centers * args.emb_dim
        alone = statistics.median(times[("classifier", c)])
        full = statistics.median(times[("full", c)])
        print(
            f"| {c:,} | {weights:,} | {4 * weights * 4 / 2**20:.0f} MiB | "
            f"{memory[c]:.0f} MiB | {1000 * alone:.0f} ms | "
            f"{1000 * full:.0f} ms | {100 * alone / full:.0f} % |"
        )


if __name__ == "__main__":
    main()
