"""The PET components of one method attached to one backbone, and the
forward pass that runs their stages layer by layer.

``component.py`` says what one component may do in each stage; this module
says how the stages of several components combine: input tokens are
prepended in build order, at most one component adds attention prefixes,
the hooks and gates of every component apply, and the hidden-state stack
goes through the components in build order.

Authors
 * speechbrain-unipet contributors 2026
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .component import LayerContext


class AttachedComponents(Sequence):
    """The components of a PET method, built in order for ``backbone`` (a
    read-only sequence of ``PETComponent``), and the stages they run.

    Not a ``torch.nn.Module``: the components' child modules are registered
    flat in ``modules`` (the encoder's ``pet``), so state-dict names are
    ``pet.<child name>`` however modules are grouped into components.

    Arguments
    ---------
    backbone : speechbrain_unipet.backbones.SSLBackbone
        The backbone the components attach to and run in.
    component_options : list
        ``(component class, its Options instance)`` pairs in build order,
        as ``PETMethod.component_options`` returns them.
    modules : torch.nn.ModuleDict
        Where the components' child modules are registered by name; a name
        used by two components is an error.

    Example
    -------
    >>> from speechbrain_unipet.backbones import load_backbone
    >>> from speechbrain_unipet.pet.methods import get_method
    >>> from speechbrain_unipet.testing import tiny_ssl_folder
    >>> bb = load_backbone(tiny_ssl_folder(getfixture("tmp_path"), "wavlm"))
    >>> options = get_method("ipet").component_options({"adapter_dim": 8})
    >>> modules = torch.nn.ModuleDict()
    >>> components = AttachedComponents(bb, options, modules)
    >>> [c.name for c in components], sorted(modules)
    (['inner_adapter', 'deep_prompt'], ['deep_prompt', 'inner_ffn'])
    >>> hiddens, frame_mask, gates = components.layer_stack(torch.randn(1, 800))
    >>> len(hiddens) == bb.num_layers + 1, frame_mask, gates
    (True, None, {})
    """

    def __init__(self, backbone, component_options, modules):
        self.backbone = backbone
        built = []
        for cls, opts in component_options:
            component = cls(backbone, opts, tuple(built))
            for name, child in component.named_children():
                if name in modules:
                    raise ValueError(
                        f"component '{cls.name}' reuses the module name "
                        f"'{name}' of another component"
                    )
                modules[name] = child
            built.append(component)
        self._components = tuple(built)

    def __getitem__(self, index):
        return self._components[index]

    def __len__(self):
        return len(self._components)

    @property
    def needs_backbone_grad(self):
        """Whether a component needs autograd through the Transformer."""
        return any(c.needs_backbone_grad for c in self)

    def layer_stack(self, wav, samples=None, checkpointing=False):
        """Runs the backbone with the components' per-layer stages.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms [B, S].
        samples : torch.Tensor or None
            Valid samples per waveform (None: nothing padded).
        checkpointing : bool
            Recompute each layer in backward (non-reentrant) when autograd
            is on.

        Returns
        -------
        tuple
            The L+1 hidden states [B, T, D] (frames only, before the
            hidden-state stage), the bool frame mask [B, T] or None, and
            the layer gates (branch -> [B, gated layers], detached).
        """
        bb = self.backbone
        x, frame_mask = bb.features(wav, samples)
        seq_mask, prefix = frame_mask, 0
        for component in self:
            tokens = component.input_tokens(x.shape[0], x.dtype)
            if tokens is not None:
                x = torch.cat([tokens, x], dim=1)
                prefix += tokens.shape[1]
                if seq_mask is not None:
                    seq_mask = nn.functional.pad(
                        seq_mask, (tokens.shape[1], 0), value=True
                    )
        x = bb.encoder_input(x, seq_mask)
        hiddens = [x[:, prefix:]]
        prefix_length = max((c.prefix_length for c in self), default=0)
        context = bb.layer_context(x, seq_mask, prefix_length, prefix)
        checkpointing = checkpointing and torch.is_grad_enabled()
        gate_log = {}
        for index in range(bb.num_layers):
            layer = LayerContext(index, frame_mask)
            for component in self:
                component.before_layer(layer, x[:, prefix:])
            for branch, value in layer.gates.items():
                gate_log.setdefault(branch, []).append(value.detach())
            if checkpointing:
                x = checkpoint(
                    self._run_layer, layer, x, context, use_reentrant=False
                )
            else:
                x = self._run_layer(layer, x, context)
            hiddens.append(x[:, prefix:])
        gates = {b: torch.stack(v, dim=1) for b, v in gate_log.items()}
        return hiddens, frame_mask, gates

    def _run_layer(self, layer, x, context):
        """One layer with the components' prefixes and hooks (computed here
        so that checkpointed layers recompute them too)."""
        prefixes = [
            kv
            for c in self
            if (kv := c.prefix_kv(layer, x, self.backbone)) is not None
        ]
        if len(prefixes) > 1:
            raise ValueError("only one component may add attention prefixes")
        hooks = [hook for c in self for hook in c.layer_hooks(layer)]
        return self.backbone.run_layer(
            layer.index, x, context, prefixes[0] if prefixes else None, hooks
        )

    def process_hiddens(self, hiddens, frame_mask):
        """The hidden-state stage: every component's gates on the stack,
        then each component's processing, in build order.

        Arguments
        ---------
        hiddens : list
            The L+1 hidden states [B, T, D].
        frame_mask : torch.Tensor or None
            Bool [B, T], True on valid frames.

        Returns
        -------
        tuple
            The processed hidden states (list) and the stack gates
            (branch -> [B, L+1], not detached).
        """
        gates = {}
        for component in self:
            gates.update(component.hidden_gates(hiddens, frame_mask))
        for component in self:
            hiddens = component.process_hiddens(hiddens, frame_mask, gates)
        return hiddens, gates
