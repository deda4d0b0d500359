"""The PET state (only the tuned tensors of an encoder) and its file format.

A PET checkpoint file is ``torch.save({"meta": ..., "state": ...})``:
``meta`` says what the tensors fit (method, backbone type and sizes) and
``state`` maps parameter names of the encoder to tensors. Loading is strict
(every name, every shape) so that a file saved for another method or
backbone is refused with the differences, never half-loaded.

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

#: Metadata entries that must agree between a file and the encoder.
CHECKED_METADATA = (
    "method",
    "model_type",
    "hidden_size",
    "num_layers",
    "backbone_fingerprint",
)


def trainable_state(module, buffers_of=None):
    """The tuned tensors of ``module``: its trainable parameters and the
    buffers of its ``buffers_of`` child (PET modules' buffers).

    Arguments
    ---------
    module : torch.nn.Module
        The encoder.
    buffers_of : str or None
        Name of the child whose persistent buffers are part of the state.

    Returns
    -------
    dict
        name -> detached tensor (on the module's device).

    Example
    -------
    >>> lin = torch.nn.Linear(2, 2)
    >>> lin.weight.requires_grad = False
    >>> sorted(trainable_state(lin))
    ['bias']
    """
    state = {
        name: p.detach()
        for name, p in module.named_parameters()
        if p.requires_grad
    }
    if buffers_of is not None:
        child = module.get_submodule(buffers_of)
        for name, buf in child.state_dict().items():
            state.setdefault(f"{buffers_of}.{name}", buf.detach())
    return state


def load_state_strict(module, state_dict, expected, describe=""):
    """Copies ``state_dict`` into ``module`` after checking that its names
    and shapes are exactly ``expected``'s.

    Arguments
    ---------
    module : torch.nn.Module
        The encoder.
    state_dict : dict
        name -> tensor, as saved.
    expected : dict
        name -> tensor of the module (``trainable_state``).
    describe : str
        What the module is, for the error message.

    Raises
    ------
    ValueError
        Listing missing, unexpected and mis-shaped names.
    """
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k}: saved {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"PET state does not fit this encoder ({describe}). Was it saved "
            f"with another method, backbone size or options?\n"
            f"  missing: {_first(missing)}\n  unexpected: "
            f"{_first(unexpected)}\n  shape mismatch: {_first(wrong)}"
        )
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, value in state_dict.items():
            target = params.get(name, buffers.get(name))
            target.copy_(value.to(device=target.device, dtype=target.dtype))


def _first(names, count=5):
    return f"{names[:count]}{' ...' if len(names) > count else ''}"


def save_pet_file(path, meta, state):
    """Writes a PET checkpoint file (tensors moved to CPU).

    Arguments
    ---------
    path : str or pathlib.Path
        Destination.
    meta : dict
        What the state fits (see ``CHECKED_METADATA``).
    state : dict
        name -> tensor.
    """
    state = {k: v.detach().cpu() for k, v in state.items()}
    torch.save({"meta": dict(meta), "state": state}, path)


def read_pet_file(path, expected_meta):
    """Reads a PET checkpoint file and checks its metadata.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.
    expected_meta : dict
        The encoder's metadata; entries of ``CHECKED_METADATA`` must agree.

    Returns
    -------
    dict
        The saved state (name -> tensor, on CPU).

    Raises
    ------
    ValueError
        Naming the file: unreadable, not a PET checkpoint, or saved for
        another model (with the differing entries).
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"Cannot read PET checkpoint '{path}': {err}") from err
    if not isinstance(saved, dict) or "state" not in saved:
        raise ValueError(
            f"'{path}' is not a PET checkpoint written by PETEncoder "
            "(expected keys 'meta' and 'state')."
        )
    meta = saved.get("meta", {})
    diff = {
        k: (meta[k], expected_meta[k])
        for k in CHECKED_METADATA
        if k in meta and k in expected_meta and meta[k] != expected_meta[k]
    }
    if diff:
        hint = ""
        if list(diff) == ["backbone_fingerprint"]:
            hint = (
                " (a backbone of the same type and size but other weights "
                "or layout: load the one it was trained on, ssl_source / "
                "ssl_hub)"
            )
        raise ValueError(
            f"PET checkpoint '{path}' was saved for another model: "
            + ", ".join(
                f"{k} saved={a!r} here={b!r}" for k, (a, b) in diff.items()
            )
            + hint
        )
    return saved["state"]


@register_checkpoint_hooks
class PETStateMixin:
    """PET state methods and SpeechBrain checkpoint hooks of ``PETEncoder``
    (which provides ``method``, ``backbone``, ``pet``, ``num_layers``,
    ``hidden_size``, ``output_all_hiddens`` and ``attach_backbone``):
    checkpoints hold only the tuned tensors, never the frozen backbone."""

    def pet_state_dict(self):
        """Only the tuned tensors (trainable parameters + PET buffers).

        Returns
        -------
        dict
            name -> tensor (detached, on the module's device).
        """
        return trainable_state(self, buffers_of="pet")

    def load_pet_state_dict(self, state_dict):
        """Loads tensors saved by ``pet_state_dict`` (strict, shape-checked).

        Several adapters can share one loaded backbone: calling this swaps
        the PET state without reloading the encoder.

        Arguments
        ---------
        state_dict : dict
            name -> tensor.
        """
        load_state_strict(
            self,
            state_dict,
            self.pet_state_dict(),
            f"method '{self.method.name}', {self.num_layers} layers, hidden "
            f"size {self.hidden_size}",
        )

    def pet_metadata(self):
        """What a saved PET state needs to be checked against on load.

        Returns
        -------
        dict
        """
        return {
            "method": self.method.name,
            "model_type": self.backbone.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "output_all_hiddens": self.output_all_hiddens,
            "backbone_fingerprint": self.backbone.fingerprint(),
        }

    def save_pet_file(self, path):
        """Writes the PET state and its metadata (``pet.state`` format).

        Arguments
        ---------
        path : str or pathlib.Path
            Destination file.
        """
        save_pet_file(path, self.pet_metadata(), self.pet_state_dict())

    @mark_as_saver
    def _save(self, path):
        self.save_pet_file(path)

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

        Arguments
        ---------
        path : str or pathlib.Path
            The file.
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
        state = read_pet_file(path, self.pet_metadata())
        self.load_pet_state_dict(state)
