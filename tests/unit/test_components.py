"""The component contract: a new kind of PET module, defined here, outside
the package, and registered through the public API, trains, saves,
reloads and keeps the padded-batch guarantee without any edit to the
package; options are validated by the registry (the method tables of
``docs/methods.md`` are the registry's: ``test_method_tables.py``)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from speechbrain_unipet.lobes import PETEncoder
from speechbrain_unipet.pet import (
    PET_COMPONENTS,
    PET_METHODS,
    ComponentOptions,
    PETComponent,
    PETMethod,
    option,
    register_component,
    register_method,
    select_layers,
)
from speechbrain_unipet.pet.methods import option_table


class DepthwiseConvAdapter(PETComponent):
    """A depthwise convolution over time, parallel to the FFN. Its receptive
    field crosses frames, so it must see zeros past each utterance's end:
    it needs the frame mask, which it gets from the layer context."""

    name = "test_dwconv_adapter"

    @dataclass(frozen=True)
    class Options(ComponentOptions):
        """Options of the test adapter."""

        conv_kernel: int = option(
            3, "kernel of the depthwise adapter", "int", minimum=1
        )
        pet_layers: tuple = option(
            None, "0-based Transformer layers that get PET modules", "layers"
        )

    def __init__(self, backbone, options, built=()):
        super().__init__(backbone, options, built)
        d, k = backbone.hidden_size, options.conv_kernel
        layers = select_layers(options.pet_layers, backbone.num_layers)
        self.dwconv = nn.ModuleDict(
            {
                str(i): nn.Conv1d(d, d, k, padding=k // 2, groups=d)
                for i in layers
            }
        )

    def layer_hooks(self, layer):
        """The convolution's output added to the FFN output."""
        conv = self.dwconv[str(layer.index)]
        mask = layer.frame_mask

        def add_conv(inputs, output):
            if mask is not None:
                inputs = inputs * mask.unsqueeze(-1).to(inputs.dtype)
            return output + conv(inputs.transpose(1, 2)).transpose(1, 2)

        return [("feed_forward", add_conv)]


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Registers the test component and method for this module only (the
    other modules' tests iterate over the built-in methods)."""
    register_component(DepthwiseConvAdapter)
    register_method(
        PETMethod(
            "test_dwconv",
            "depthwise convolutional adapter parallel to the FFN (test)",
            components=("test_dwconv_adapter",),
            defaults={"conv_kernel": 5},
        )
    )
    yield
    del PET_METHODS["test_dwconv"], PET_COMPONENTS["test_dwconv_adapter"]


def test_a_component_defined_outside_the_package_trains_saves_reloads(
    ssl_folder, tmp_path
):
    folder = ssl_folder("wavlm")
    torch.manual_seed(0)
    enc = PETEncoder(folder, method="test_dwconv").train()
    d, layers = enc.hidden_size, enc.num_layers
    assert enc.options == {"conv_kernel": 5, "pet_layers": None}
    trainable, _ = enc.count_parameters()
    assert trainable == layers * (d * 5 + d) + (layers + 1)
    wav, lens = torch.randn(3, 4000), torch.tensor([1.0, 0.75, 0.5])
    before = {k: v.clone() for k, v in enc.pet_state_dict().items()}
    # Plain SGD: a step is lr x gradient, so a move above rounding size
    # shows a real gradient (Adam would blow rounding noise up to full steps).
    opt = torch.optim.SGD(
        [p for p in enc.parameters() if p.requires_grad], lr=0.5
    )
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = enc(wav, lens).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = enc.pet_state_dict()
    assert set(after) == set(before)
    assert any(k.startswith("pet.dwconv.") for k in after)
    for k in after:
        assert (after[k] - before[k]).abs().max() > 1e-6, k
    assert losses[-1] < losses[0]
    frozen = [p for p in enc.backbone.parameters() if p.grad is not None]
    assert not frozen

    enc.eval()
    enc.save_pet_file(tmp_path / "dwconv.ckpt")
    again = PETEncoder(folder, method="test_dwconv").eval()
    again.load_pet_file(tmp_path / "dwconv.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(again(wav, lens), enc(wav, lens))


def test_the_new_component_keeps_the_padded_batch_guarantee(ssl_folder):
    enc = PETEncoder(ssl_folder("hubert"), method="test_dwconv").eval()
    torch.manual_seed(1)
    with torch.no_grad():  # a large delta, so that leaks would show
        for p in enc.pet.parameters():
            p.normal_(std=0.3)
    lengths = [4000, 2900, 2100]
    singles = [torch.randn(n) for n in lengths]
    batch = torch.zeros(3, 4000)
    for i, w in enumerate(singles):
        batch[i, : len(w)] = w
    rel = torch.tensor([n / 4000 for n in lengths])
    with torch.no_grad():
        out = enc(batch, rel)
        for i, w in enumerate(singles):
            alone = enc(w[None])[0]
            n = alone.shape[0]
            torch.testing.assert_close(out[i, :n], alone, atol=1e-4, rtol=0)
            assert float(alone.abs().max()) > 0.1


def test_registered_options_are_validated_and_listed(ssl_folder):
    assert "conv_kernel" in option_table()
    assert "test_dwconv" in PET_METHODS
    with pytest.raises(ValueError, match="conv_kernel=0 must be an integer"):
        PETEncoder(
            ssl_folder("wavlm"), "test_dwconv", options={"conv_kernel": 0}
        )
    with pytest.raises(ValueError, match="already registered"):
        register_component(DepthwiseConvAdapter)
    with pytest.raises(ValueError, match="unknown component"):
        PETMethod("broken", "x", components=("no_such_component",))
    with pytest.raises(ValueError, match="'gates' must come last"):
        PETMethod("broken", "x", components=("gates", "inner_adapter"))
    with pytest.raises(ValueError, match="do not have"):
        PETMethod("broken", "x", components=("lora",), defaults={"x": 1})

    @dataclass(frozen=True)
    class Clash(ComponentOptions):
        adapter_dim: int = option(7, "another default", "int")

    class ClashComponent(PETComponent):
        name = "test_clash"
        Options = Clash

    with pytest.raises(ValueError, match="option 'adapter_dim'"):
        register_component(ClashComponent)
