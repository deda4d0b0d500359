"""Speaker back-ends: trainable parameters and training-step time vs ECAPA.

    python benchmarks/backends.py [--device cpu|cuda] [--rounds 20]
        [--encoder] [--encoder-rounds 3] [--threads N] [--tiny]

Back-ends at WavLM Base+ sizes (D=768, 12 layers: 13 hidden states), each
at its constructor defaults, the published sizes (ECAPA 192-dimensional
embeddings, the others 256, each with its own classifier):

* ``ecapa``: SpeechBrain's ``ECAPA_TDNN`` (channels 512 x 4 + 1536) on the
  learnable softmax-weighted sum of the hidden states (its 13 layer weights
  counted with it), the recipe's default back-end;
* ``mhfa``, ``ca_mhfa``, ``mfa``: ``speechbrain_unipet.lobes.MHFA``,
  ``CAMHFA`` and ``LayerAdapterMFA`` on the stack ``[13, B, T, 768]``.

One step = forward + backward + Adam step of the back-end and an AAM
classifier (SpeechBrain's ECAPA ``Classifier``, 5994 speakers as VoxCeleb2
dev, ``AdditiveAngularMargin`` 0.2 / 32) on a fixed batch of random hidden
states, 4 utterances x 3 s = 150 frames. All back-ends live in one process
and take one step each in turn, round after round (the order rotates); the
ratio is the median of the per-round ratios to ``ecapa``, so that every
ratio compares steps taken under the same machine load. FLOPs: of one step
(``torch.utils.flop_counter``, 2 per multiply-add; matmuls and
convolutions, not the elementwise work), counted as in
``training_cost.py``. On CUDA everything runs under bf16 autocast.

``--encoder`` adds the full step with the WavLM Base+ architecture (random
weights) under ``unipet`` in front, 4 x 3 s of audio: the encoder returns
the layer-weighted sum for ``ecapa`` and all hidden states for the others
(as the recipe does); the encoder's trainable tensors are in the optimiser
too, the table's parameter column counts the back-end only. Expensive on
CPU (about 2.5 s a step on 2 cores: 1.5 min more with 3 rounds), hence off
by default and with its own ``--encoder-rounds``. The back-end-only run
takes about 30 s on 2 CPU cores.
"""

import argparse
import statistics
import tempfile
import time

import torch
from training_cost import count_flops

BATCH, SECONDS, FRAMES, RATE = 4, 3.0, 150, 16000
BACKENDS = ["ecapa", "mhfa", "ca_mhfa", "mfa"]
SPEAKERS = 5994
# --tiny: hidden states [3, BATCH, 20, 32] (as the tiny WavLM's), 10 speakers.
TINY_LAYERS, TINY_FRAMES, TINY_DIM, TINY_SPEAKERS = 3, 20, 32, 10


class WeightedECAPA(torch.nn.Module):
    """ECAPA-TDNN on the softmax-weighted sum of the hidden-state stack (the
    recipe computes that sum in the encoder; here it is timed with ECAPA so
    that every back-end starts from the same stack).

    Arguments
    ---------
    input_size : int
        Hidden size D.
    num_layers : int
        Stacked hidden states L+1.
    **ecapa_options
        ``ECAPA_TDNN`` options.
    """

    def __init__(self, input_size, num_layers, **ecapa_options):
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        super().__init__()
        self.layer_weights = torch.nn.Parameter(torch.zeros(num_layers))
        self.ecapa = ECAPA_TDNN(input_size=input_size, **ecapa_options)

    def forward(self, x, lengths=None):
        """Embeddings [B, 1, lin_neurons] from the stack [L+1, B, T, D].

        Arguments
        ---------
        x : torch.Tensor
            Hidden states [L+1, B, T, D].
        lengths : torch.Tensor or None
            Relative lengths.

        Returns
        -------
        torch.Tensor
        """
        weights = torch.softmax(self.layer_weights, dim=0).to(x.dtype)
        return self.ecapa(torch.einsum("l,lbtd->btd", weights, x), lengths)


def build_backend(name, dim, layers, tiny, stack_input=True):
    """One back-end at its defaults (``tiny``: small sizes)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    from speechbrain_unipet.lobes import CAMHFA, MHFA, LayerAdapterMFA

    small = {
        "ecapa": {
            "channels": [16, 16, 16, 16, 48],
            "attention_channels": 8,
            "se_channels": 8,
            "lin_neurons": 16,
        },
        "mhfa": {"heads": 4, "compression_dim": 8, "lin_neurons": 16},
        "ca_mhfa": {"heads": 4, "compression_dim": 8, "lin_neurons": 16},
        "mfa": {"adapter_dim": 8, "lin_neurons": 16},
    }
    options = small[name] if tiny else {}
    if name == "ecapa":
        if not tiny:
            options = {"channels": [512, 512, 512, 512, 1536]}
        options = {"lin_neurons": 192, **options}
        if stack_input:
            return WeightedECAPA(dim, layers, **options)
        return ECAPA_TDNN(input_size=dim, **options)
    cls = {"mhfa": MHFA, "ca_mhfa": CAMHFA, "mfa": LayerAdapterMFA}[name]
    return cls(input_size=dim, num_layers=layers, **options)


def make_step(name, device, tiny, encoder_folder=None):
    """Builds a back-end (and, with ``encoder_folder``, a ``unipet``
    encoder in front) with its classifier and optimiser; returns
    ``(label, trainable back-end parameters, step function)``."""
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    from speechbrain_unipet.lobes import PETEncoder

    cuda = device.startswith("cuda")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    encoder = None
    if encoder_folder is not None:
        encoder = PETEncoder(encoder_folder, method="unipet")
        encoder.set_output_all_hiddens(name != "ecapa")
        encoder = encoder.to(device).train()
        dim, layers = encoder.hidden_size, encoder.num_layers + 1
        inputs = torch.randn(BATCH, int(SECONDS * RATE), generator=gen)
    else:
        dim, layers = (TINY_DIM, TINY_LAYERS) if tiny else (768, 13)
        frames = TINY_FRAMES if tiny else FRAMES
        inputs = torch.randn(layers, BATCH, frames, dim, generator=gen)
    inputs = inputs.to(device)
    backend = build_backend(
        name, dim, layers, tiny, stack_input=encoder is None
    ).to(device)
    backend.train()
    # Each at its published size: ECAPA 192, the stack back-ends 256.
    emb_dim = 16 if tiny else (192 if name == "ecapa" else backend.lin_neurons)
    speakers = TINY_SPEAKERS if tiny else SPEAKERS
    classifier = Classifier(emb_dim, out_neurons=speakers).to(device)
    cost = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=32))
    targets = torch.randint(speakers, (BATCH, 1), generator=gen).to(device)
    lengths = torch.ones(BATCH, device=device)
    params = [
        p
        for module in (encoder, backend, classifier)
        if module is not None
        for p in module.parameters()
        if p.requires_grad
    ]
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            x = inputs if encoder is None else encoder(inputs, lengths)
            emb = backend(x, lengths)
            loss = cost(classifier(emb.float()), targets)
        loss.backward()
        opt.step()

    trainable = sum(p.numel() for p in backend.parameters() if p.requires_grad)
    return describe(name, backend), trainable, step


def _clock(cuda):
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


def interleaved(device, tiny, rounds, encoder_folder=None):
    """Per back-end: (label, trainable parameters, median step time, median
    ratio of per-round times to ``ecapa``, FLOPs of one step)."""
    cuda = device.startswith("cuda")
    built = [make_step(n, device, tiny, encoder_folder) for n in BACKENDS]
    steps = [step for _, _, step in built]
    for step in steps:  # warm-up (allocations, Adam state)
        step()
        step()
    times = [[] for _ in steps]
    for r in range(rounds):
        order = list(range(len(steps)))
        for i in order[r % len(order) :] + order[: r % len(order)]:
            start = _clock(cuda)
            steps[i]()
            times[i].append(_clock(cuda) - start)
    flops = [count_flops(step) for step in steps]
    return [
        (
            label,
            trainable,
            statistics.median(t),
            statistics.median(a / b for a, b in zip(t, times[0], strict=True)),
            f,
        )
        for (label, trainable, _), t, f in zip(built, times, flops, strict=True)
    ]


def describe(name, module):
    """Table label of a back-end, with its sizes."""
    if name == "ecapa":
        ecapa = getattr(module, "ecapa", module)
        channels = ecapa.blocks[1].out_channels
        return f"`ecapa` (ECAPA-TDNN C={channels}, on the layer-weighted sum)"
    if name == "mfa":
        return f"`mfa` (layer adapters {module.adapter_dim}-d, MFA, ASP)"
    sizes = f"{module.heads} heads, {module.compression_dim}-d"
    if name == "ca_mhfa":
        return f"`ca_mhfa` (CA-MHFA, {sizes}, context {module.context})"
    return f"`mhfa` (MHFA, {sizes})"


def print_table(rows, flops_base):
    """Prints one Markdown table of ``interleaved``'s rows."""
    print(
        "| back-end | trainable params | step time | vs ecapa "
        "| GFLOP per step | vs ecapa |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, trainable, t, ratio, flops in rows:
        print(
            f"| {label} | {trainable:,} | {1000 * t:.1f} ms | {ratio:.2f}x | "
            f"{flops / 1e9:.3g} | {flops / flops_base:.2f}x |"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--encoder",
        action="store_true",
        help="also time the full step with the unipet encoder in front",
    )
    parser.add_argument("--encoder-rounds", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's; 1 with --tiny, whose steps are "
        "too short to share)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes and a tiny random WavLM (checks this script only)",
    )
    args = parser.parse_args()
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    autocast = " (bf16 autocast)" if args.device.startswith("cuda") else ""
    sizes = "tiny sizes" if args.tiny else "WavLM Base+ sizes"
    speakers = TINY_SPEAKERS if args.tiny else SPEAKERS
    rows = interleaved(args.device, args.tiny, args.rounds)
    if args.tiny:
        shape = f"[{TINY_LAYERS}, {BATCH}, {TINY_FRAMES}, {TINY_DIM}]"
    else:
        shape = f"[13, {BATCH}, {FRAMES}, 768] ({BATCH} x {SECONDS:g} s)"
    print(
        f"Back-end training step (back-end + AAM classifier, {speakers} "
        f"speakers), hidden states {shape}, {sizes}, {name}{autocast}, "
        f"median of {args.rounds} rounds:\n"
    )
    print_table(rows, rows[0][4])
    if args.encoder:
        from transformers import WavLMConfig, WavLMModel

        from speechbrain_unipet.testing import tiny_config

        config = tiny_config("wavlm") if args.tiny else WavLMConfig()
        arch = "tiny WavLM" if args.tiny else "WavLM Base+ architecture"
        with tempfile.TemporaryDirectory() as folder:
            WavLMModel(config).save_pretrained(folder)
            full = interleaved(
                args.device, args.tiny, args.encoder_rounds, folder
            )
        print(
            f"\nFull training step with the `unipet` encoder ({arch}) in "
            f"front, {BATCH} x {SECONDS:g} s, {name}{autocast}, median of "
            f"{args.encoder_rounds} rounds (trainable: back-end only):\n"
        )
        print_table(full, full[0][4])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
