"""Helpers shared by the test modules of both tiers (``tests/unit``,
``tests/integration``): plain functions and constants, no fixtures (those
are in the ``conftest.py`` files). ``pyproject.toml`` puts ``tests/`` on
``sys.path`` (pytest's ``pythonpath``), so a test module imports them as
``from helpers import ...``.
"""

import csv
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
DATA = TESTS / "data"
RECIPE = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
CN_RECIPE = REPO / "recipes" / "CNCeleb" / "SpeakerRec"
RATE = 16000

# ------------------------------------------------------------ tiny models
# (model_type, pre_ln): every backbone family in both layer-norm layouts
# that HF implements (data2vec-audio only has the post-LN one).
VARIANTS = [
    ("wavlm", False),
    ("wavlm", True),
    ("hubert", False),
    ("hubert", True),
    ("wav2vec2", False),
    ("wav2vec2", True),
    ("data2vec-audio", False),
]


def variant_id(variant):
    model_type, pre_ln = variant
    return f"{model_type}-{'preln' if pre_ln else 'postln'}"


def perturb_pet(enc, seed=1, std=0.05):
    """Moves every trainable tensor away from its (often zero) init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * std)


def small_model(folder):
    """A tiny UniPET + ECAPA embedding model (the recipe's module names)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    from speechbrain_unipet.lobes import PETEncoder

    torch.manual_seed(0)
    encoder = PETEncoder(folder, method="unipet")
    normalizer = InputNormalization(norm_type="sentence", std_norm=False)
    ecapa = ECAPA_TDNN(32, channels=[16, 16, 16, 16, 48], lin_neurons=8)
    modules = torch.nn.ModuleDict(
        {
            "ssl_encoder": encoder,
            "mean_var_norm": normalizer,
            "embedding_model": ecapa,
        }
    )
    return modules.eval()


# ------------------------------------------------------------------ audio
def speech_like(seconds=2.0, rate=RATE, seed=0):
    """Harmonics of a 150 Hz voice with a syllable-rate envelope and a
    little breath noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    voice = sum(torch.sin(2 * torch.pi * 150 * k * t) / k for k in range(1, 9))
    envelope = 0.55 + 0.45 * torch.sin(2 * torch.pi * 4 * t)
    breath = 0.02 * torch.randn(t.numel(), generator=gen)
    return (0.1 * envelope * voice + breath).float()


# ------------------------------------------------------- extraction engine
# Lengths in samples (16 kHz): different, so batches carry padding.
LENGTHS = [4000, 9000, 6500, 3000, 12000, 5200, 7700]


def build_modules(ssl_folder, state=None, backend="ecapa"):
    """A tiny UniPET model (gates, so gate means are tested too)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization

    from speechbrain_unipet.lobes import PETEncoder
    from speechbrain_unipet.lobes.backends import MHFA

    torch.manual_seed(0)
    enc = PETEncoder(
        ssl_folder,
        "unipet",
        output_all_hiddens=backend != "ecapa",
        options={"adapter_dim": 4, "prompt_length": 2},
    )
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    if backend == "ecapa":
        model = ECAPA_TDNN(32, channels=[8, 8, 8, 8, 24], lin_neurons=6)
    else:
        model = MHFA(
            32, num_layers=3, heads=2, compression_dim=8, lin_neurons=6
        )
    modules = torch.nn.ModuleList([enc, norm, model])
    if state is not None:
        modules.load_state_dict(torch.load(state))
    return tuple(modules.eval())


def one_by_one(modules, utterances):
    """The reference: each file alone through the embedding path; the
    per-utterance gates' means are left in ``one_by_one.gate_means``."""
    from speechbrain_unipet.lobes.embedding import speaker_embeddings
    from speechbrain_unipet.utils.audio import load_audio

    out, gates = {}, {}
    with torch.no_grad():
        for utt in utterances:
            wav = load_audio(utt.path, 16000)[None]
            emb, utt_gates = speaker_embeddings(*modules, wav)
            out[utt.id] = emb[0, 0].numpy()
            for key, value in utt_gates.items():
                gates.setdefault(key, []).append(value[0].numpy())
    one_by_one.gate_means = {k: np.mean(v, axis=0) for k, v in gates.items()}
    return out


# ----------------------------------------------------------------- recipe
FAST = [
    "--number_of_epochs=1",
    "--batch_size=4",
    "--sentence_len=0.5",
    "--ecapa_channels=[16,16,16,16,48]",
    "--emb_dim=8",
    "--num_workers=0",
    "--num_valid_speakers=2",
    "--test_segment_len=0.5",
    "--device=cpu",
    "--noprogressbar",
]


def write_speaker_data(root):
    """8 speakers x 2 videos x 1 utterance (1.2 s) of speaker-specific tones;
    trials over speakers 4 and 5."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * RATE)) / RATE
    for s in range(8):
        for v in range(2):
            f0 = 110 + 40 * s
            x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
            x = 0.1 * x + 0.01 * rng.standard_normal(t.size)
            path = root / "wav" / f"id{s}" / f"vid{v}" / "00001.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.astype(np.float32), RATE)
    test = [f"id{s}/vid{v}/00001.wav" for s in (4, 5) for v in (0, 1)]
    lines = []
    for i, a in enumerate(test):
        for b in test[i + 1 :]:
            lines.append(f"{int(a[:3] == b[:3])} {a} {b}")
    (root / "trials.txt").write_text("\n".join(lines) + "\n")
    return root


def run_script(script, *args, check=True, timeout=300, cwd=RECIPE):
    """Runs a recipe script (of ``cwd``, the VoxCeleb recipe by default)
    offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, script, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


def kill_after_intra_epoch_checkpoint(yaml, args, out, timeout=240):
    """Starts ``train_speaker_embeddings.py yaml args`` (the VoxCeleb
    recipe) and SIGKILLs it once ``out`` holds an intra-epoch checkpoint
    (a failure if training ends first or none appears in ``timeout`` s)."""
    import pytest

    proc = subprocess.Popen(
        [sys.executable, "train_speaker_embeddings.py", yaml, *args],
        cwd=RECIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ckpts = list((out / "save").glob("CKPT+*/CKPT.yaml"))
            if any("brain_intra_epoch_ckpt" in c.read_text() for c in ckpts):
                return
            if proc.poll() is not None:
                pytest.fail("training ended before an intra-epoch checkpoint")
            time.sleep(0.2)
        pytest.fail("no intra-epoch checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def merged_args(base, extra):
    """``base`` command-line options with those in ``extra`` replaced."""
    keys = {e.split("=")[0] for e in extra}
    return [a for a in base if a.split("=")[0] not in keys] + list(extra)


def train(env, method, out, *extra, check=True):
    """Trains ``hparams/<method>.yaml`` on ``env`` (the ``recipe_env``
    fixture) into ``out``."""
    return run_script(
        "train_speaker_embeddings.py",
        f"hparams/{method}.yaml",
        *merged_args(env["args"], [f"--output_folder={out}", *extra]),
        check=check,
    )


def verify(out, *extra):
    """Runs the verification script on the run ``out``; its results.json."""
    run_script(
        "speaker_verification_cosine.py",
        "hparams/verification.yaml",
        f"--output_folder={out}",
        "--device=cpu",
        *extra,
    )
    with open(out / "results.json", encoding="utf-8") as f:
        return json.load(f)


def epochs_logged(out):
    text = (out / "train_log.txt").read_text()
    return [int(m) for m in re.findall(r"^epoch: (\d+)", text, flags=re.M)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args, out, *extra):
    """Trains ``unipet`` with 2-process gloo torchrun; fails on an error."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "train_speaker_embeddings.py",
        "hparams/unipet.yaml",
        *args,
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        *extra,
    ]
    done = subprocess.run(
        cmd,
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def checkpoints(out):
    return sorted((out / "save").glob("CKPT+*"))


def ckpt_state(ckpt, name):
    state = torch.load(ckpt / f"{name}.ckpt", weights_only=True)
    return state["state"] if name == "ssl_encoder" else state


def steps_per_epoch(out, batch_size=4):
    with open(out / "save" / "train.csv", encoding="utf-8") as f:
        return len(list(csv.DictReader(f))) // batch_size


def speakers(out):
    text = (out / "save" / "label_encoder.txt").read_text()
    labels = text.split("=" * 16)[0]  # then SpeechBrain's own fields
    return len(re.findall(r"^'.*' => \d+$", labels, flags=re.M))


def labels(out):
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    encoder.load(str(out / "save" / "label_encoder.txt"))
    return dict(encoder.lab2ind)


def folder_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- exports
FILES = ["id4/vid0/00001.wav", "id5/vid1/00001.wav", "id0/vid0/00001.wav"]

LOAD_SCRIPT = """
import json, sys, torch
from speechbrain.inference.speaker import EncoderClassifier, SpeakerRecognition
from speechbrain_unipet.utils.audio import load_audio
hub, data, out = sys.argv[1:4]
files = json.loads(sys.argv[4])
model = EncoderClassifier.from_hparams(source=hub, savedir=hub, run_opts={"device": "cpu"})
wavs = [load_audio(f"{data}/wav/{f}") for f in files]
single = torch.cat([model.encode_batch(w[None]) for w in wavs])
longest = max(w.numel() for w in wavs)
batch = torch.zeros(len(wavs), longest)
for i, w in enumerate(wavs):
    batch[i, : w.numel()] = w
lens = torch.tensor([w.numel() / longest for w in wavs])
padded = model.encode_batch(batch, lens)
labels = model.classify_batch(wavs[0][None])[3]
verifier = SpeakerRecognition.from_hparams(source=hub, savedir=hub, run_opts={"device": "cpu"})
score, _ = verifier.verify_files(f"{data}/wav/{files[0]}", f"{data}/wav/{files[1]}")
vb, _ = verifier.verify_batch(wavs[0][None], wavs[1][None])
torch.save({"single": single, "padded": padded, "labels": labels, "score": score,
            "verify_batch": vb}, out)
"""


def recipe_embeddings(train_folder, data):
    """The embeddings of ``FILES`` as the recipe's verification computes
    them (its own ``load_trained_model``)."""
    from speechbrain_unipet.training.runs import compute_embedding
    from speechbrain_unipet.utils.audio import load_audio

    sys.path.insert(0, str(RECIPE))
    try:
        from speaker_verification_cosine import load_trained_model
    finally:
        sys.path.pop(0)
    _, modules = load_trained_model(train_folder, "cpu")
    return torch.cat(
        [
            compute_embedding(modules, load_audio(data / "wav" / f)[None])
            for f in FILES
        ]
    )


def load_in_fresh_process(hub, data, tmp_path, cwd):
    """Loads the exported folder ``hub`` with SpeechBrain's inference
    classes in a fresh offline process; what ``LOAD_SCRIPT`` computed."""
    out = tmp_path / "loaded.pt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            str(hub),
            str(data),
            str(out),
            json.dumps(FILES),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=False)
