"""The PET state: only tuned tensors, strict loading, the checkpoint file."""

import pytest
import torch
from helpers import perturb_pet

from speechbrain_unipet.lobes import PET_METHODS, PETEncoder


@pytest.mark.parametrize("method", list(PET_METHODS))
def test_pet_state_dict_roundtrip(ssl_folder, method, wavs, tmp_path):
    folder = ssl_folder("wavlm", True)
    enc = PETEncoder(folder, method=method).eval()
    perturb_pet(enc)
    state = enc.pet_state_dict()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert not frozen & set(state)
    fresh = PETEncoder(folder, method=method).eval()
    with torch.no_grad():
        differs = not torch.allclose(fresh(wavs), enc(wavs), atol=1e-5)
    assert differs or method == "frozen"
    fresh.load_pet_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(wavs), enc(wavs), atol=1e-6, rtol=0)
    # The SpeechBrain checkpoint hooks write the same tensors to disk.
    path = tmp_path / "pet.ckpt"
    enc.save_pet_file(path)
    third = PETEncoder(folder, method=method).eval()
    third.load_pet_file(path)
    with torch.no_grad():
        torch.testing.assert_close(third(wavs), enc(wavs), atol=1e-6, rtol=0)


def test_checkpoint_file_is_small_for_pet(ssl_folder, tmp_path):
    enc = PETEncoder(ssl_folder("wavlm"), method="lora")
    enc.save_pet_file(tmp_path / "lora.ckpt")
    full = tmp_path / "full.pt"
    torch.save(enc.backbone.model.state_dict(), full)
    assert (tmp_path / "lora.ckpt").stat().st_size < 0.3 * full.stat().st_size


def test_mismatched_pet_state_is_rejected(ssl_folder, model_root, tmp_path):
    from speechbrain_unipet.testing import tiny_ssl_folder

    small = PETEncoder(ssl_folder("wavlm"), method="unipet")
    other = tiny_ssl_folder(model_root, "wavlm", seed=7, hidden_size=48)
    big = PETEncoder(str(other), method="unipet")
    with pytest.raises(ValueError, match="shape mismatch"):
        big.load_pet_state_dict(small.pet_state_dict())
    lora = PETEncoder(ssl_folder("wavlm"), method="lora")
    with pytest.raises(ValueError, match="another method"):
        lora.load_pet_state_dict(small.pet_state_dict())
    small.save_pet_file(tmp_path / "u.ckpt")
    with pytest.raises(ValueError, match="method saved='unipet' here='lora'"):
        lora.load_pet_file(tmp_path / "u.ckpt")


def test_a_state_saved_on_other_backbone_weights_is_refused(
    ssl_folder, model_root, tmp_path
):
    """Same type and size, other pretrained weights: refused by the
    backbone fingerprint (architecture + CNN weights)."""
    from speechbrain_unipet.testing import tiny_ssl_folder

    mine = PETEncoder(ssl_folder("wavlm"), method="lora")
    other = PETEncoder(
        str(tiny_ssl_folder(model_root, "wavlm", seed=11)), method="lora"
    )
    assert mine.backbone.fingerprint() != other.backbone.fingerprint()
    mine.save_pet_file(tmp_path / "lora.ckpt")
    with pytest.raises(ValueError, match="other weights or layout"):
        other.load_pet_file(tmp_path / "lora.ckpt")
    again = PETEncoder(ssl_folder("wavlm"), method="lora")
    again.load_pet_file(tmp_path / "lora.ckpt")  # the same backbone loads
