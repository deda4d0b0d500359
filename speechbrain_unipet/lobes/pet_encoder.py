"""PETEncoder: a parameter-efficiently tunable SSL speech encoder lobe.

Authors
 * speechbrain-unipet contributors 2026
"""

import pathlib

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    mark_as_transfer,
    register_checkpoint_hooks,
)
from speechbrain.utils.logger import get_logger
from torch import nn
from torch.utils.checkpoint import checkpoint

from speechbrain_unipet.backbones import SSLBackbone, lengths_to_mask
from speechbrain_unipet.pet import (
    AdapterBias,
    BottleneckAdapter,
    BranchGate,
    DeepPrompts,
    ShallowPrompt,
    add_lora,
    get_method,
    merge_lora,
)
from speechbrain_unipet.pet.lora import lora_parametrizations

logger = get_logger(__name__)

INNER_POSITIONS = ("ffn", "mhsa", "both")
GATED_BRANCHES = ("inner_adapter", "prompt", "inter_adapter")
# Components that live inside the Transformer stack: when any is present,
# autograd must run through the backbone.
_INSIDE_COMPONENTS = {
    "inner_adapter",
    "houlsby",
    "adapterbias",
    "lora",
    "deep_prompt",
    "shallow_prompt",
    "gates",
}


@register_checkpoint_hooks
class PETEncoder(nn.Module):
    """HF SSL encoder (WavLM / HuBERT / wav2vec 2.0 / data2vec-audio) with a
    PET method inserted, returning the layer-weighted sum of hidden states.

    The backbone is always frozen except what the method unfreezes; the CNN
    feature encoder is frozen and runs without autograd. Methods with no
    trainable tensor inside the Transformer (``frozen``, ``inter_adapter``)
    run the whole backbone without autograd. The method table, with option
    defaults, is ``speechbrain_unipet.pet.methods.PET_METHODS``; an option
    left at ``None`` takes the method's default.

    Arguments
    ---------
    source : str or None
        HuggingFace hub id or local folder of the SSL model. ``None`` defers
        loading to the first ``load_pet_file`` (exported folders).
    method : str
        A key of ``PET_METHODS``.
    save_path : str
        Cache folder for hub downloads (SpeechBrain convention).
    output_all_hiddens : bool
        Return all hidden states [L+1, B, T, D] (after the Inter adapters)
        instead of their learnable softmax-weighted sum [B, T, D]. The layer
        weights are then not created as trainable.
    normalize_wav : bool or None
        Per-utterance waveform normalisation; ``None`` follows the model's
        preprocessor config.
    adapter_dim, inter_adapter_dim, adapter_scale, adapter_dropout,
    adapter_activation, inner_position, prompt_length, prompt_init,
    lora_rank, lora_alpha, lora_targets, gate_bias_init, gated_branches,
    pet_layers :
        Method options, see ``speechbrain_unipet.pet.methods.OPTIONS``.
    gradient_checkpointing : bool
        Recompute each Transformer layer in backward (non-reentrant, so it
        works with DDP and frozen inputs) to save activation memory.
    options : dict or None
        The same method options as a mapping (what recipe YAML fragments
        pass); an explicit keyword wins over an entry here.

    Example
    -------
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> folder = tiny_ssl_folder(getfixture("tmp_path"), "wavlm")
    >>> enc = PETEncoder(folder, method="unipet")
    >>> enc(torch.randn(2, 4000), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 49, 32])
    >>> trainable, total = enc.count_parameters()
    >>> 0 < trainable < total
    True
    """

    def __init__(
        self,
        source,
        method="unipet",
        save_path="",
        output_all_hiddens=False,
        normalize_wav=None,
        adapter_dim=None,
        inter_adapter_dim=None,
        adapter_scale=None,
        adapter_dropout=None,
        adapter_activation=None,
        inner_position=None,
        prompt_length=None,
        prompt_init=None,
        lora_rank=None,
        lora_alpha=None,
        lora_targets=None,
        gate_bias_init=None,
        gated_branches=None,
        pet_layers=None,
        gradient_checkpointing=False,
        options=None,
    ):
        super().__init__()
        self.method = get_method(method)
        given = {
            "adapter_dim": adapter_dim,
            "inter_adapter_dim": inter_adapter_dim,
            "adapter_scale": adapter_scale,
            "adapter_dropout": adapter_dropout,
            "adapter_activation": adapter_activation,
            "inner_position": inner_position,
            "prompt_length": prompt_length,
            "prompt_init": prompt_init,
            "lora_rank": lora_rank,
            "lora_alpha": lora_alpha,
            "lora_targets": lora_targets,
            "gate_bias_init": gate_bias_init,
            "gated_branches": gated_branches,
            "pet_layers": pet_layers,
        }
        for key, value in (options or {}).items():
            if key not in given:
                raise ValueError(
                    f"Unknown PET option '{key}' in options. Valid options: "
                    f"{sorted(given)}"
                )
            if given[key] is None:
                given[key] = value
        ignored = sorted(
            k
            for k, v in given.items()
            if v is not None and k not in self.method.options()
        )
        if ignored:
            logger.warning(
                "PET method '%s' ignores the options %s (it reads: %s).",
                self.method.name,
                ignored,
                sorted(self.method.options()) or "none",
            )
        self.output_all_hiddens = output_all_hiddens
        self.gradient_checkpointing = gradient_checkpointing
        self._save_path = save_path
        self._normalize_wav = normalize_wav
        self._given = given
        self.pet = nn.ModuleDict()
        self._hooks = []
        self._layer_gates = {}
        self._prompt_kv_cache = {}
        self.gate_values = {}
        self.source = None
        self.backbone = None
        if source is not None:
            self.attach_backbone(source)

    def attach_backbone(self, source):
        """Loads the SSL model from ``source`` and inserts the PET modules.

        Called by the constructor, or later when the encoder was built with
        ``source=None`` (exported models whose backbone sits next to the PET
        checkpoint; see ``load_pet_file``).
        """
        if self.backbone is not None:
            raise RuntimeError("PETEncoder already has a backbone")
        self.source = str(source)
        self.backbone = SSLBackbone(
            self.source, self._save_path, self._normalize_wav
        )
        self.options = self._validate(self.method.resolve(self._given))
        self.num_layers = self.backbone.num_layers
        self.hidden_size = self.backbone.hidden_size
        for param in self.backbone.parameters():
            param.requires_grad = False
        self._build_components()
        self._unfreeze_backbone()
        self.layer_weights = nn.Parameter(
            torch.zeros(self.num_layers + 1),
            requires_grad=not self.output_all_hiddens,
        )
        self._grad_through_backbone = bool(
            _INSIDE_COMPONENTS & set(self.method.components)
        ) or any(p.requires_grad for p in self.backbone.parameters())
        self.train(self.training)

    # ------------------------------------------------------------ building
    def _validate(self, opts):
        num_layers = self.backbone.num_layers
        layers = opts["pet_layers"]
        if layers is None:
            layers = list(range(num_layers))
        layers = sorted({int(i) for i in layers})
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad or not layers:
            raise ValueError(
                f"pet_layers {opts['pet_layers']} must be a non-empty list of "
                f"0-based layer indices below {num_layers}."
            )
        opts["pet_layers"] = layers
        if opts["inner_position"] not in INNER_POSITIONS:
            raise ValueError(
                f"inner_position '{opts['inner_position']}' is not one of "
                f"{list(INNER_POSITIONS)}"
            )
        branches = tuple(opts["gated_branches"])
        unknown = [b for b in branches if b not in GATED_BRANCHES]
        if unknown:
            raise ValueError(
                f"gated_branches {unknown} unknown. Valid: {list(GATED_BRANCHES)}"
            )
        opts["gated_branches"] = branches
        opts["lora_targets"] = tuple(opts["lora_targets"])
        return opts

    def _adapter(self, bottleneck, **overrides):
        o = self.options
        kwargs = {
            "scale": o["adapter_scale"],
            "activation": o["adapter_activation"],
            "dropout": o["adapter_dropout"],
        }
        kwargs.update(overrides)
        return BottleneckAdapter(
            self.backbone.hidden_size, bottleneck, **kwargs
        )

    def _build_components(self):
        o, bb = self.options, self.backbone
        comps = self.method.components
        layers = o["pet_layers"]
        if "inner_adapter" in comps:
            places = (
                ["ffn", "mhsa"]
                if o["inner_position"] == "both"
                else [o["inner_position"]]
            )
            for place in places:
                mods = nn.ModuleDict(
                    {str(i): self._adapter(o["adapter_dim"]) for i in layers}
                )
                self.pet[f"inner_{place}"] = mods
                for i in layers:
                    target = (
                        bb.feed_forward(i)
                        if place == "ffn"
                        else bb.attention(i)
                    )
                    self._hooks.append(
                        target.register_forward_hook(
                            self._parallel_hook(mods[str(i)], place == "mhsa")
                        )
                    )
        if "houlsby" in comps:
            mods = nn.ModuleDict(
                {
                    str(i): self._adapter(o["adapter_dim"], scale=1.0)
                    for i in layers
                }
            )
            self.pet["houlsby"] = mods
            for i in layers:
                self._hooks.append(
                    bb.feed_forward(i).register_forward_hook(
                        self._sequential_hook(mods[str(i)])
                    )
                )
        if "adapterbias" in comps:
            mods = nn.ModuleDict(
                {
                    str(i): AdapterBias(bb.hidden_size, bb.intermediate_size)
                    for i in layers
                }
            )
            self.pet["adapterbias"] = mods
            for i in layers:
                self._hooks.append(
                    bb.feed_forward(i).output_dense.register_forward_hook(
                        self._input_shift_hook(mods[str(i)])
                    )
                )
        if "lora" in comps:
            for i in layers:
                for name in o["lora_targets"]:
                    add_lora(
                        bb.attention_projection(i, name),
                        rank=o["lora_rank"],
                        alpha=o["lora_alpha"],
                    )
        if "deep_prompt" in comps:
            self.pet["deep_prompt"] = DeepPrompts(
                len(layers),
                o["prompt_length"],
                bb.hidden_size,
                o["prompt_init"],
            )
        if "shallow_prompt" in comps:
            self.pet["shallow_prompt"] = ShallowPrompt(
                o["prompt_length"], bb.hidden_size, o["prompt_init"]
            )
        if "inter_adapter" in comps:
            self.pet["inter"] = nn.ModuleList(
                [
                    self._adapter(o["inter_adapter_dim"])
                    for _ in range(bb.num_layers + 1)
                ]
            )
        if "gates" in comps:
            inside = self._inside_gated_branches()
            if inside:
                self.pet["layer_gates"] = nn.ModuleDict(
                    {
                        str(i): BranchGate(
                            bb.hidden_size, len(inside), o["gate_bias_init"]
                        )
                        for i in layers
                    }
                )
            if "inter_adapter" in o["gated_branches"] and "inter" in self.pet:
                self.pet["inter_gates"] = nn.ModuleList(
                    [
                        BranchGate(bb.hidden_size, 1, o["gate_bias_init"])
                        for _ in range(bb.num_layers + 1)
                    ]
                )

    def _inside_gated_branches(self):
        if "gates" not in self.method.components:
            return ()
        comps = self.method.components
        present = {
            "inner_adapter": "inner_adapter" in comps,
            "prompt": "deep_prompt" in comps,
        }
        return tuple(
            b for b in self.options["gated_branches"] if present.get(b, False)
        )

    def _unfreeze_backbone(self):
        bb = self.backbone
        mode = self.method.unfreeze
        if mode == "transformer":
            for module in bb.transformer_modules():
                for p in module.parameters():
                    p.requires_grad = True
        elif mode == "biases":
            for module in bb.transformer_modules():
                for name, p in module.named_parameters():
                    if name.endswith("bias"):
                        p.requires_grad = True
        elif mode != "none":
            raise ValueError(f"unknown unfreeze mode '{mode}'")
        for p in bb.unused_transformer_parameters():
            p.requires_grad = False
        # LoRA factors are created after the freeze and stay trainable.
        for module in bb.model.modules():
            for lora in lora_parametrizations_safe(module):
                lora.lora_A.requires_grad = True
                lora.lora_B.requires_grad = True

    # --------------------------------------------------------------- hooks
    def _parallel_hook(self, adapter, is_attention):
        def hook(module, args, output):
            gate = self._layer_gates.get("inner_adapter")
            if is_attention:
                out = adapter.add_to(output[0], args[0], gate)
                return (out,) + tuple(output[1:])
            return adapter.add_to(output, args[0], gate)

        return hook

    @staticmethod
    def _sequential_hook(adapter):
        def hook(module, args, output):
            return adapter.add_to(output, output)

        return hook

    @staticmethod
    def _input_shift_hook(shift):
        def hook(module, args, output):
            return output + shift(args[0])

        return hook

    # ------------------------------------------------------------- forward
    def train(self, mode=True):
        """Frozen parts stay in eval mode (no dropout); PET modules, and the
        Transformer under full fine-tuning, follow ``mode``."""
        super().train(mode)
        if self.backbone is not None and self.method.unfreeze == "transformer":
            for module in self.backbone.transformer_modules():
                module.train(mode)
        return self

    def forward(self, wav, wav_lens=None):
        """Encodes a batch of waveforms.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S] (16 kHz).
        wav_lens : torch.Tensor or None
            Relative lengths in [0, 1] (SpeechBrain convention).

        Returns
        -------
        torch.Tensor
            [B, T, D] weighted sum, or [L+1, B, T, D] with
            ``output_all_hiddens``. Padded frames are zero.
        """
        hiddens, frame_mask = self.hidden_states(wav, wav_lens)
        if self.output_all_hiddens:
            out = torch.stack(hiddens)
        else:
            weights = torch.softmax(self.layer_weights, dim=0)
            out = torch.einsum(
                "l,lbtd->btd",
                weights.to(hiddens[0].dtype),
                torch.stack(hiddens),
            )
        if frame_mask is not None:
            out = out * frame_mask.unsqueeze(-1).to(out.dtype)
        return out

    def frame_mask(self, wav, wav_lens=None):
        """Bool [B, T] mask of valid output frames (None if no padding)."""
        if wav_lens is None:
            return None
        samples = self._sample_lengths(wav, wav_lens)
        frames = self.backbone.frame_lengths(samples)
        total = self.backbone.frame_lengths(
            torch.tensor([wav.shape[1]], device=wav.device)
        )
        return lengths_to_mask(frames, int(total[0]))

    @staticmethod
    def _sample_lengths(wav, wav_lens):
        total = wav.shape[1]
        lens = torch.round(wav_lens.to(torch.float64) * total).long()
        return lens.clamp(min=1, max=total).to(wav.device)

    def hidden_states(self, wav, wav_lens=None):
        """All L+1 hidden states (after Inter adapters) and the frame mask."""
        if self.backbone is None:
            raise RuntimeError(
                "PETEncoder has no backbone yet: give `source`, or load a PET "
                "checkpoint that has a backbone/ folder next to it."
            )
        if wav.dim() != 2:
            raise ValueError(
                f"PETEncoder expects waveforms [batch, samples], got shape "
                f"{tuple(wav.shape)}"
            )
        samples = (
            None if wav_lens is None else self._sample_lengths(wav, wav_lens)
        )
        use_grad = torch.is_grad_enabled() and self._grad_through_backbone
        with torch.set_grad_enabled(use_grad):
            hiddens, frame_mask = self._backbone_hiddens(wav, samples)
        hiddens = self._apply_inter(hiddens, frame_mask)
        return hiddens, frame_mask

    def _backbone_hiddens(self, wav, samples):
        bb = self.backbone
        batch = wav.shape[0]
        with torch.no_grad():
            wav = (
                bb.preprocess(wav, samples)
                if samples is not None
                else bb.preprocess(
                    wav, torch.full((batch,), wav.shape[1], device=wav.device)
                )
            )
            feats = bb.extract_features(wav, samples)
        if samples is not None:
            frame_mask = lengths_to_mask(
                bb.frame_lengths(samples), feats.shape[1]
            )
            if bool(frame_mask.all()):
                frame_mask = None
        else:
            frame_mask = None
        x = bb.project(feats)

        prefix = 0
        seq_mask = frame_mask
        if "shallow_prompt" in self.pet:
            prompt = self.pet["shallow_prompt"]
            x = torch.cat([prompt.expand(batch).to(x.dtype), x], dim=1)
            prefix = prompt.length
            seq_mask = self._extend_mask(frame_mask, prefix)
        x = bb.encoder_input(x, seq_mask)
        hiddens = [x[:, prefix:]]

        deep = self.pet["deep_prompt"] if "deep_prompt" in self.pet else None
        layer_gates = (
            self.pet["layer_gates"] if "layer_gates" in self.pet else None
        )
        inside_branches = self._inside_gated_branches()
        prompt_index = {i: j for j, i in enumerate(self.options["pet_layers"])}
        context = bb.layer_context(
            x, seq_mask, deep.length if deep is not None else 0
        )
        gate_log = {b: [] for b in inside_branches}
        for i in range(self.num_layers):
            gates = {}
            if layer_gates is not None and str(i) in layer_gates:
                values = layer_gates[str(i)](x[:, prefix:], frame_mask)
                gates = {b: values[:, k] for k, b in enumerate(inside_branches)}
                for b in inside_branches:
                    gate_log[b].append(gates[b].detach())
            prompts = None
            if deep is not None and i in prompt_index:
                prompts = deep.tokens(prompt_index[i]).to(x.dtype)
            x = self._run_layer(i, x, context, gates, prompts)
            hiddens.append(x[:, prefix:])
        self.gate_values = {
            b: torch.stack(v, dim=1) for b, v in gate_log.items() if v
        }
        return hiddens, frame_mask

    @staticmethod
    def _extend_mask(frame_mask, prefix):
        if frame_mask is None:
            return None
        ones = frame_mask.new_ones(frame_mask.shape[0], prefix)
        return torch.cat([ones, frame_mask], dim=1)

    def _layer_step(self, index, x, context, gates, prompts):
        # Deep prompts enter as keys/values only (exactly what prepending
        # them and dropping their outputs computes, see SSLBackbone._attend);
        # computed here so that checkpointed layers recompute them too.
        self._layer_gates = gates
        try:
            prefix_kv = None
            if prompts is not None:
                prefix_kv = self._prefix_kv(index, prompts, gates.get("prompt"))
            return self.backbone.run_layer(index, x, context, prefix_kv)
        finally:
            self._layer_gates = {}

    def _prefix_kv(self, index, prompts, scale):
        bb = self.backbone
        if torch.is_grad_enabled() or (scale is not None and bb.pre_ln):
            return bb.prefix_kv(index, prompts, scale)
        # Without autograd the prompts and the frozen projections are
        # constants, and so are the prompts' keys and values: they are
        # recomputed only once one of those tensors has changed. In-place
        # writes (an optimiser step, load_state_dict) bump its version;
        # merge_lora replaces the tensor; .to() and `.data =` swap its
        # storage. The entry holds the tensors and their storages alive, so
        # that no other tensor or storage can take their id or address.
        tensors = [self.pet["deep_prompt"].prompts]
        tensors += bb.prefix_kv_parameters(index)
        device = prompts.device.type
        key = (
            prompts.dtype,
            torch.get_autocast_dtype(device)
            if torch.is_autocast_enabled(device)
            else None,
            tuple((id(t), t._version, t.data_ptr()) for t in tensors),
        )
        cached = self._prompt_kv_cache.get(index)
        if cached is None or cached[0] != key:
            held = [(t, t.detach()) for t in tensors]
            cached = (key, held, bb.prefix_kv(index, prompts))
            self._prompt_kv_cache[index] = cached
        return bb.scale_prefix_kv(index, cached[2], scale)

    def _run_layer(self, index, x, context, gates, prompts):
        if (
            self.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
        ):
            return checkpoint(
                self._layer_step,
                index,
                x,
                context,
                gates,
                prompts,
                use_reentrant=False,
            )
        return self._layer_step(index, x, context, gates, prompts)

    def _apply_inter(self, hiddens, frame_mask):
        if "inter" not in self.pet:
            return hiddens
        gates = self.pet["inter_gates"] if "inter_gates" in self.pet else None
        out, log = [], []
        for idx, (h, adapter) in enumerate(
            zip(hiddens, self.pet["inter"], strict=True)
        ):
            g = None
            if gates is not None:
                g = gates[idx](h, frame_mask)[:, 0]
                log.append(g.detach())
            out.append(adapter.add_to(h, h, g))
        if log:
            self.gate_values["inter_adapter"] = torch.stack(log, dim=1)
        return out

    # ------------------------------------------------------- PET utilities
    def count_parameters(self):
        """Returns ``(trainable, total)`` parameter counts."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def pet_state_dict(self):
        """Only the tuned tensors (trainable parameters + PET buffers).

        Returns
        -------
        dict
            name -> tensor (detached, on the module's device).
        """
        sd = {
            n: p.detach() for n, p in self.named_parameters() if p.requires_grad
        }
        for name, buf in self.pet.state_dict().items():
            sd.setdefault(f"pet.{name}", buf.detach())
        return sd

    def load_pet_state_dict(self, state_dict):
        """Loads tensors saved by ``pet_state_dict`` (strict, shape-checked).

        Several adapters can share one loaded backbone: calling this swaps
        the PET state without reloading the encoder.
        """
        expected = self.pet_state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        wrong = sorted(
            f"{k}: saved {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
        )
        if missing or unexpected or wrong:
            raise ValueError(
                f"PET state does not fit this encoder (method "
                f"'{self.method.name}', {self.num_layers} layers, hidden size "
                f"{self.hidden_size}). Was it saved with another method, "
                f"backbone size or options?\n  missing: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}\n  unexpected: "
                f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}\n"
                f"  shape mismatch: {wrong[:5]}"
            )
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        with torch.no_grad():
            for name, value in state_dict.items():
                target = params.get(name, buffers.get(name))
                target.copy_(value.to(device=target.device, dtype=target.dtype))

    def pet_metadata(self):
        """What a saved PET state needs to be checked against on load."""
        return {
            "method": self.method.name,
            "model_type": self.backbone.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "output_all_hiddens": self.output_all_hiddens,
        }

    def merge_lora(self):
        """Folds LoRA updates into the attention weights (zero overhead)."""
        merged = 0
        self._prompt_kv_cache.clear()
        for module in list(self.backbone.model.modules()):
            if lora_parametrizations(module):
                merge_lora(module)
                merged += 1
        if not merged:
            raise ValueError(
                f"merge_lora: method '{self.method.name}' has no LoRA to merge"
            )
        self._grad_through_backbone = any(
            p.requires_grad for p in self.backbone.parameters()
        ) or bool((_INSIDE_COMPONENTS - {"lora"}) & set(self.method.components))
        return merged

    @mark_as_saver
    def _save(self, path):
        state = {k: v.cpu() for k, v in self.pet_state_dict().items()}
        torch.save({"meta": self.pet_metadata(), "state": state}, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        self.load_pet_file(path)

    @mark_as_transfer
    def _transfer(self, path):
        self.load_pet_file(path)

    def load_pet_file(self, path):
        """Loads a PET checkpoint file written by the checkpointer.

        If the encoder was built without a backbone (``source=None``), the
        backbone is loaded from the ``backbone/`` folder next to the
        (symlink-resolved) file, as written by ``export --copy-backbone``.
        """
        if self.backbone is None:
            folder = pathlib.Path(path).resolve().parent / "backbone"
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"PETEncoder was built with source=None but there is no "
                    f"backbone folder next to '{path}' (expected {folder}). "
                    "Set ssl_source to a hub id or local SSL model folder."
                )
            self.attach_backbone(folder)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"Cannot read PET checkpoint '{path}': {err}"
            ) from err
        if not isinstance(saved, dict) or "state" not in saved:
            raise ValueError(
                f"'{path}' is not a PET checkpoint written by PETEncoder "
                "(expected keys 'meta' and 'state')."
            )
        meta, mine = saved.get("meta", {}), self.pet_metadata()
        diff = {
            k: (meta[k], mine[k])
            for k in ("method", "model_type", "hidden_size", "num_layers")
            if k in meta and meta[k] != mine[k]
        }
        if diff:
            raise ValueError(
                f"PET checkpoint '{path}' was saved for another model: "
                + ", ".join(
                    f"{k} saved={a!r} here={b!r}" for k, (a, b) in diff.items()
                )
            )
        self.load_pet_state_dict(saved["state"])


def lora_parametrizations_safe(module):
    """LoRA parametrisations of ``module.weight`` (empty if none)."""
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        return []
    return lora_parametrizations(module)
