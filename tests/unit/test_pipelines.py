"""The training pipeline's speed perturbation, on one file (through the
recipe: ``tests/integration/test_training_stages.py``)."""

import soundfile as sf
import torch
from speechbrain.augment.time_domain import SpeedPerturb

from speechbrain_unipet.training.pipelines import audio_pipeline
from speechbrain_unipet.utils.audio import load_audio


def test_speed_perturbed_crops_keep_their_length_and_name_their_speed(
    tmp_path,
):
    rate = 16000
    wave = torch.randn(rate * 2) * 0.1
    path = tmp_path / "a.wav"
    sf.write(path, wave.numpy(), rate)
    speeds = (1.0, 0.9, 1.1)
    pipeline = audio_pipeline({"sample_rate": rate}, False, speeds)
    length, seen = 8000, set()
    torch.manual_seed(0)
    for _ in range(30):
        sig, index = pipeline.func(path, 4000, 4000 + length, 0, 2 * rate)
        seen.add(index)
        assert sig.shape == (length,)
        # What SpeechBrain's SpeedPerturb makes of the samples that last
        # `length` at that speed.
        needed = round(length * speeds[index])
        source = load_audio(path, rate, 4000, 4000 + needed)
        if index == 0:
            expected = source
        else:
            perturb = SpeedPerturb(rate, speeds=[round(100 * speeds[index])])
            expected = perturb(source[None])[0, :length]
        torch.testing.assert_close(sig, expected)
    assert seen == {0, 1, 2}
