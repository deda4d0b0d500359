"""Shared pieces of the speaker-verification recipes (training, scoring,
export): hparams loading, data pipelines, back-end construction, embedding.

Recipe YAML layout: ``recipes/.../hparams/<method>.yaml`` names the PET
method, includes its option fragment from the top-level ``hparams/pet/``
and includes the shared recipe ``train_common.yaml`` under the key
``recipe``, passing the method down. ``load_recipe_hparams`` applies the
command-line overrides to the shared recipe (or to the method file for the
keys it defines), so ``--data_folder=...`` works as in any SpeechBrain
recipe, and rejects override keys that exist nowhere.

Authors
 * speechbrain-unipet contributors 2026
"""

import io
import pathlib

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)


def _yaml_mapping(text):
    if not text:
        return {}
    data = YAML(typ="safe").load(text)
    return dict(data or {})


def _top_keys(path):
    with open(path, encoding="utf-8") as f:
        return YAML().load(f) or {}


def nest_overrides(hparams_file, overrides):
    """Routes command-line overrides to the method file or the recipe.

    Arguments
    ---------
    hparams_file : str
        The method YAML.
    overrides : str or dict
        Overrides as ``sb.parse_arguments`` returns them.

    Returns
    -------
    dict
        Overrides in the structure of the method YAML.

    Raises
    ------
    ValueError
        For an override key that neither file defines (a typo would
        otherwise be silently ignored).
    """
    if isinstance(overrides, str):
        overrides = _yaml_mapping(overrides)
    overrides = dict(overrides or {})
    top = _top_keys(hparams_file)
    recipe_node = top.get("recipe")
    tag = getattr(getattr(recipe_node, "tag", None), "value", None) or ""
    known = set(top)
    if tag.startswith("!include:"):
        base = pathlib.Path(hparams_file).parent / tag[len("!include:") :]
        known |= set(_top_keys(base))
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(
            f"Unknown override(s) {unknown} for {hparams_file}. Valid keys: "
            f"{sorted(k for k in known if not k.startswith('_'))}"
        )
    if "recipe" not in top:
        return overrides  # a flat, self-contained hparams file
    nested, recipe = {}, {}
    for key, value in overrides.items():
        if key in top and key != "recipe":
            nested[key] = value
        else:
            recipe[key] = value
    if recipe:
        nested["recipe"] = recipe
    return nested


def load_recipe_hparams(hparams_file, overrides=None):
    """Loads a recipe's hparams and applies overrides.

    Returns
    -------
    hparams : dict
        The recipe (the ``recipe`` entry of a method file, or the whole
        file if it is flat), with the method keys available in it.
    nested : dict
        The overrides in the file's structure (for
        ``create_experiment_directory``).
    """
    nested = nest_overrides(hparams_file, overrides)
    with open(hparams_file, encoding="utf-8") as f:
        loaded = load_hyperpyyaml(f, nested, overrides_must_match=False)
    return loaded.get("recipe", loaded), nested


def resolved_yaml(hparams_file, nested_overrides):
    """The fully resolved text of a recipe file (what gets saved)."""
    with open(hparams_file, encoding="utf-8") as f:
        return resolve_references(f, nested_overrides).getvalue()


def audio_pipeline(hparams):
    """Data pipeline reading ``sentence_len`` s (random chunk) of a file."""
    sample_rate = hparams["sample_rate"]
    snt_len = int(hparams["sentence_len"] * sample_rate)
    random_chunk = hparams.get("random_chunk", True)

    @sb.utils.data_pipeline.takes("wav", "start", "stop", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def pipeline(wav, start, stop, duration):
        if random_chunk:
            total = int(float(duration) * sample_rate)
            start = (
                0
                if total <= snt_len
                else torch.randint(0, total - snt_len + 1, (1,)).item()
            )
            stop = start + snt_len
        else:
            start, stop = int(start), int(stop)
        sig = sb.dataio.dataio.read_audio(
            {"file": wav, "start": start, "stop": stop}
        )
        return sig

    return pipeline


def dataio_prep(hparams):
    """Train/dev datasets and the speaker label encoder (SpeechBrain style)."""
    datasets = {}
    for split, key in (
        ("train", "train_annotation"),
        ("dev", "valid_annotation"),
    ):
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams[key]
        )
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        yield spk_id
        yield label_encoder.encode_sequence_torch([spk_id])

    pipeline = audio_pipeline(hparams)
    for data in datasets.values():
        data.add_dynamic_item(pipeline)
        data.add_dynamic_item(label_pipeline)
        data.set_output_keys(["id", "sig", "spk_id_encoded"])
    label_path = pathlib.Path(hparams["save_folder"]) / "label_encoder.txt"
    label_encoder.load_or_create(
        path=str(label_path),
        from_didatasets=[datasets["train"]],
        output_key="spk_id",
    )
    return datasets["train"], datasets["dev"], label_encoder


def build_backend(hparams, num_speakers):
    """Instantiates the ECAPA-TDNN and classifier for the encoder's size and
    the number of training speakers, and registers them in ``modules`` and
    the checkpointer (their sizes are only known at run time)."""
    encoder = hparams["ssl_encoder"]
    embedding_model = hparams["embedding_model"](input_size=encoder.hidden_size)
    classifier = hparams["classifier"](out_neurons=num_speakers)
    hparams["modules"]["embedding_model"] = embedding_model
    hparams["modules"]["classifier"] = classifier
    checkpointer = hparams.get("checkpointer")
    if checkpointer is not None:
        checkpointer.add_recoverable("embedding_model", embedding_model)
        checkpointer.add_recoverable("classifier", classifier)
    return embedding_model, classifier


def num_speakers(save_folder):
    """Number of classes in a saved ``label_encoder.txt``."""
    path = pathlib.Path(save_folder) / "label_encoder.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: is this a finished training output folder?"
        )
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(str(path))
    return len(encoder)


def load_trained_model(output_folder, device="cpu"):
    """Rebuilds a training run from its saved ``hyperparams.yaml`` and loads
    its latest checkpoint.

    Returns
    -------
    hparams : dict
        The run's recipe hparams (with the back-end instantiated).
    modules : torch.nn.ModuleDict
        The model modules, on ``device``, in eval mode.
    """
    saved = pathlib.Path(output_folder) / "hyperparams.yaml"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found: the folder must be the output_folder of "
            "train_speaker_embeddings.py"
        )
    hparams, _ = load_recipe_hparams(str(saved))
    build_backend(hparams, num_speakers(hparams["save_folder"]))
    checkpoint = hparams["checkpointer"].recover_if_possible()
    if checkpoint is None:
        raise FileNotFoundError(
            f"No checkpoint in {hparams['save_folder']}: train the model first"
        )
    logger.info("Loaded checkpoint %s", checkpoint.path)
    modules = torch.nn.ModuleDict(hparams["modules"]).to(device).eval()
    return hparams, modules


@torch.no_grad()
def compute_embedding(modules, wavs, wav_lens=None):
    """SSL encoder -> mean/var norm -> ECAPA: embeddings [B, 1, D].

    A single waveform is cut after its last non-zero sample, as the exported
    inference front-end does, so both give the same embedding.
    """
    if wavs.shape[0] == 1 and wav_lens is None:
        from speechbrain_unipet.inference import nonzero_lengths

        wavs = wavs[:, : int(nonzero_lengths(wavs)[0])]
    if wav_lens is None:
        wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
    feats = modules["ssl_encoder"](wavs, wav_lens)
    feats = modules["mean_var_norm"](feats, wav_lens)
    return modules["embedding_model"](feats, wav_lens)


def read_wav(path):
    """Whole file as a float tensor [S]; errors name the file."""
    try:
        sig = sb.dataio.dataio.read_audio(str(path))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"Cannot read audio '{path}': {err}") from err
    if sig.dim() > 1:
        sig = sig[:, 0]
    if sig.numel() == 0:
        raise ValueError(f"Audio file '{path}' is empty")
    return sig


def dump_yaml(data):
    """Plain YAML text of a mapping."""
    out = io.StringIO()
    YAML().dump(data, out)
    return out.getvalue()
