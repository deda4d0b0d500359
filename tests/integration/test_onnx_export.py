"""ONNX export (``speechbrain_unipet.onnx_export``) and its runtime
(``speechbrain_unipet.onnx``): onnxruntime's embeddings against the PyTorch
eval path, one recording at a time (the independent reference), for each
backbone family, each PET component and each back-end; padded batches;
long-audio windowing; the command line; errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import perturb_pet, verify
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization

from speechbrain_unipet.cli import main as cli_main
from speechbrain_unipet.evaluation.reports import read_scores
from speechbrain_unipet.inference import verify_files
from speechbrain_unipet.lobes import CAMHFA, MHFA, LayerAdapterMFA, PETEncoder
from speechbrain_unipet.lobes.embedding import speaker_embeddings
from speechbrain_unipet.onnx import OnnxModelError, OnnxSpeakerModel
from speechbrain_unipet.onnx_export import (
    OnnxExportError,
    cosine_rows,
    export_onnx,
    parity_signals,
    require_onnx_packages,
    write_onnx_folder,
)
from speechbrain_unipet.scoring.metrics import eer
from speechbrain_unipet.testing import tiny_ssl_folder
from speechbrain_unipet.training.runs import LoadedModel
from speechbrain_unipet.utils.audio import AudioError

RATE = 16000

#: (backbone, pre-LN, method, back-end): every backbone family, every PET
#: component (unipet: inner + inter adapters, deep prompts, gates; LoRA is
#: merged; Houlsby; AdapterBias; shallow prompt; BitFit), every back-end.
CASES = [
    ("wavlm", False, "unipet", "ecapa"),
    ("wavlm", True, "lora", "mhfa"),
    ("hubert", False, "houlsby", "ca_mhfa"),
    ("wav2vec2", True, "shallow_prompt", "mfa"),
    ("data2vec-audio", False, "adapterbias", "ecapa"),
    ("wav2vec2", False, "bitfit", "ecapa"),
    # W2V-BERT 2.0: the fbank front-end in the graph, inner adapters on
    # both Conformer FFNs, deep prompts with relative-key positions.
    ("wav2vec2-bert", False, "ipet", "ecapa"),
]


def build_model(root, model_type, pre_ln, method, backend):
    """A tiny model of the case, every trainable tensor off its init."""
    folder = tiny_ssl_folder(root, model_type, pre_ln, num_hidden_layers=2)
    torch.manual_seed(0)
    options = {"adapter_dim": 4, "prompt_length": 2}
    encoder = PETEncoder(
        folder,
        method,
        output_all_hiddens=backend != "ecapa",
        options={
            k: v
            for k, v in options.items()
            if k in PETEncoder(None, method).options
        },
    )
    perturb_pet(encoder)
    size, stack = encoder.hidden_size, encoder.num_layers + 1
    if backend == "ecapa":
        embedding_model = ECAPA_TDNN(
            size, channels=[8, 8, 8, 8, 24], lin_neurons=6
        )
    elif backend == "mhfa":
        embedding_model = MHFA(
            size, stack, heads=2, compression_dim=8, lin_neurons=6
        )
    elif backend == "ca_mhfa":
        embedding_model = CAMHFA(
            size, stack, heads=2, compression_dim=8, context=3, lin_neurons=6
        )
    else:
        embedding_model = LayerAdapterMFA(
            size, stack, adapter_dim=6, lin_neurons=6
        )
    with torch.no_grad():  # batch-norm statistics off their init too
        for name, buf in embedding_model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    modules = torch.nn.ModuleDict(
        {
            "ssl_encoder": encoder,
            "mean_var_norm": InputNormalization(
                norm_type="sentence", std_norm=False
            ),
            "embedding_model": embedding_model,
        }
    ).eval()
    return LoadedModel("run", {}, modules, RATE, f"{model_type}-{method}")


def reference(model, signal):
    """The PyTorch eval path on one recording alone."""
    with torch.no_grad():
        emb, _ = speaker_embeddings(
            *model.parts, torch.from_numpy(signal)[None]
        )
    return emb.reshape(-1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (model, ONNX folder), exported once per case."""
    cache = {}

    def get(case):
        if case not in cache:
            root = tmp_path_factory.mktemp("onnx")
            model = build_model(root, *case)
            write_onnx_folder(model, root / "onnx", check=False)
            cache[case] = (model, root / "onnx")
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_onnx_embeddings_equal_pytorch_alone_and_in_a_padded_batch(
    exported, case
):
    model, folder = exported(case)
    runtime = OnnxSpeakerModel(folder)
    # The shortest recording the model takes, 0.5 s, 1.3 s, 3 s, 20 s.
    shortest = runtime.min_samples / RATE
    signals = parity_signals(RATE, (0.5, 3.0, 20.0, 1.3, shortest))
    expected = np.stack([reference(model, s) for s in signals])
    alone = np.stack([runtime.embed(s) for s in signals])
    assert cosine_rows(alone, expected).min() >= 0.9999
    # One graph call on the padded batch: each row as if alone.
    lengths = np.array([len(s) for s in signals])
    wavs = np.zeros((len(signals), lengths.max()), np.float32)
    for row, s in enumerate(signals):
        wavs[row, : len(s)] = s
    (batched,) = runtime.session.run(
        None, {"wavs": wavs, "lengths": lengths.astype(np.int64)}
    )
    assert batched.shape == expected.shape
    assert cosine_rows(batched, expected).min() >= 0.9999
    np.testing.assert_allclose(batched, alone, atol=1e-4)


def test_long_recordings_are_windowed_as_in_pytorch(exported):
    model, folder = exported(CASES[0])
    runtime = OnnxSpeakerModel(folder)
    (signal,) = parity_signals(RATE, (47.0,), seed=3)
    # 47 s: three 20 s windows (0, 18, 27 s), averaged by both.
    with torch.no_grad():
        emb, _ = speaker_embeddings(
            *model.parts, torch.from_numpy(signal)[None]
        )
    whole = runtime.embed_batch([signal, signal[: 2 * RATE]])
    assert cosine_rows(whole[:1], emb.reshape(1, -1).numpy())[0] >= 0.9999
    assert (
        cosine_rows(whole[1:], reference(model, signal[: 2 * RATE])[None])[0]
        >= 0.9999
    )


def test_weights_over_the_protobuf_limit_go_to_external_data(
    exported, tmp_path, monkeypatch
):
    """W2V-BERT 2.0 (580 M parameters) passes protobuf's 2 GB: its weights
    must go beside the graph. The limit is lowered to exercise that path on
    a tiny model."""
    import speechbrain_unipet.onnx_export as onnx_export

    model, inline = exported(CASES[0])
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1024)
    config = write_onnx_folder(model, tmp_path / "big", int8=True)
    assert config["external_data"]
    files = {p.name: p.stat().st_size for p in (tmp_path / "big").iterdir()}
    whole = (inline / "embedding.onnx").stat().st_size
    # The weights moved out of the graph file (small ones stay inline).
    assert files["embedding.onnx.data"] > 100_000
    assert files["embedding.onnx"] < whole - 100_000
    assert files["embedding.int8.onnx.data"] > 50_000
    assert config["parity"]["min_cosine"] >= 0.9999
    assert config["parity_int8"]["min_cosine"] >= 0.99


def test_lora_is_merged_into_the_exported_weights(exported):
    model, folder = exported(CASES[1])
    encoder = model.modules["ssl_encoder"]
    # After export the LoRA factors are folded in: merging again finds none.
    assert not sum(c.merge() for c in encoder.components)
    import onnx

    graph = onnx.load(str(folder / "embedding.onnx"))
    names = " ".join(i.name for i in graph.graph.initializer).lower()
    assert "lora" not in names


def test_bad_rows_and_folders_get_clear_errors(exported, tmp_path):
    model, folder = exported(CASES[0])
    runtime = OnnxSpeakerModel(folder)
    with pytest.raises(AudioError, match="row 1: digital silence"):
        runtime.embed_batch([np.ones(8000, np.float32), np.zeros(8000)])
    with pytest.raises(AudioError, match="row 0: 100 samples"):
        runtime.embed(np.ones(100, np.float32))
    with pytest.raises(OnnxModelError, match="not an ONNX export"):
        OnnxSpeakerModel(tmp_path)
    with pytest.raises(OnnxModelError, match="no int8 model"):
        OnnxSpeakerModel(folder, int8=True)
    with pytest.raises(OnnxExportError, match="opset 16 is too low"):
        write_onnx_folder(model, tmp_path / "x", opset=16)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OnnxExportError, match="not empty"):
        write_onnx_folder(model, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_unexportable_parts_are_refused_before_export(tmp_path):
    model = build_model(tmp_path, "wavlm", False, "frozen", "ecapa")
    model.modules["embedding_model"] = torch.nn.Linear(32, 6)
    with pytest.raises(OnnxExportError, match="back-end Linear cannot be"):
        write_onnx_folder(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_onnxruntime_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxExportError, match="pip install"):
        require_onnx_packages()


def test_command_line_export_verify_and_embed(trained, recipe_env, tmp_path):
    run = trained("unipet")
    verify(run)  # writes scores.txt: the card's thresholds come from it
    out = tmp_path / "onnx"
    assert cli_main(["export-onnx", str(run), str(out), "--int8"]) == 0
    config = json.loads((out / "onnx_config.json").read_text())
    trials, scores = read_scores(run / "scores.txt")
    labels = np.array([t.label == 1 for t in trials])
    rate, at = eer(scores[labels], scores[~labels])
    assert config["thresholds"]["eer"] == rate
    assert config["thresholds"]["eer_threshold"] == at
    assert f"EER {100 * rate:.2f} %" in (out / "README.md").read_text()
    assert config["parity"]["min_cosine"] >= 0.9999
    assert config["parity_int8"]["min_cosine"] >= 0.99
    card = (out / "README.md").read_text()
    assert "Parity with PyTorch (int8)" in card
    files = sorted(p for p in (recipe_env["data"]).rglob("*.wav"))[:3]
    a, b = str(files[0]), str(files[2])
    expected = verify_files(run, a, b)["score"]
    # The runtime alone: no torch, transformers or SpeechBrain imported.
    code = (
        "import sys, json\n"
        "for m in ('torch', 'torchaudio', 'transformers', 'speechbrain'):\n"
        "    sys.modules[m] = None\n"
        "from speechbrain_unipet.onnx import OnnxSpeakerModel\n"
        f"print(json.dumps(OnnxSpeakerModel({str(out)!r}).verify_files({a!r}, {b!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout)["score"] == pytest.approx(expected, abs=1e-4)
    store = tmp_path / "store"
    assert cli_main(["embed", str(out), str(files[0].parent), str(store)]) == 0
    from speechbrain_unipet.scoring.store import EmbeddingStore

    saved = EmbeddingStore.load(store)
    assert saved.dim == config["embedding_dim"]
    assert len(saved) == len(list(files[0].parent.glob("*.wav")))
    # A 44.1 kHz copy is resampled as the PyTorch model resamples it.
    signal, rate = sf.read(a, dtype="float32")
    import torchaudio

    up = torchaudio.functional.resample(torch.from_numpy(signal), rate, 44100)
    sf.write(tmp_path / "a44.wav", up.numpy(), 44100, subtype="FLOAT")
    onnx_score = OnnxSpeakerModel(out).verify_files(
        str(tmp_path / "a44.wav"), b
    )
    torch_score = verify_files(run, str(tmp_path / "a44.wav"), b)["score"]
    assert onnx_score["score"] == pytest.approx(torch_score, abs=1e-4)


def test_a_calibrated_export_verifies_alike_in_onnx(
    trained, recipe_env, tmp_path
):
    from speechbrain_unipet.export import add_calibration, export
    from speechbrain_unipet.scoring.calibration import (
        ScoreCalibrator,
        quality_features,
    )

    hub = export(trained("unipet"), tmp_path / "hub")
    _, names = quality_features(
        np.array([0.5]),
        enrol_durations=np.array([1.0]),
        test_durations=np.array([2.0]),
        enrol_norms=np.array([1.0]),
        test_norms=np.array([2.0]),
    )
    calibrator = ScoreCalibrator.from_dict(
        {
            "names": names,
            "weights": [4.0] + [0.1 * (k + 1) for k in range(len(names) - 1)],
            "bias": -1.0,
            "mean": [0.0] * len(names),
            "std": [1.0] * len(names),
            "p_target": 0.01,
            "format": 2,
            "scoring": {},
        }
    )
    add_calibration(hub, calibrator, p_target=0.05)
    out = tmp_path / "onnx"
    config = export_onnx(hub, out, check=False)
    assert config["calibration"]["decision_p_target"] == 0.05
    files = sorted(recipe_env["data"].rglob("*.wav"))
    a, b = str(files[0]), str(files[-1])
    expected = verify_files(hub, a, b)
    got = OnnxSpeakerModel(out).verify_files(a, b)
    assert got["calibrated"] and expected["calibrated"]
    assert got["score"] == pytest.approx(expected["score"], abs=1e-3)
    assert got["threshold"] == pytest.approx(expected["threshold"])
    assert got["same_speaker"] == expected["same_speaker"]
