"""Robustness conditions measured with numbers: achieved SNR, spectra,
impulse responses, lengths, determinism per utterance, and errors (the
same audio in another process: ``tests/integration/test_conditions_processes.py``)."""

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import speech_like

from speechbrain_unipet.evaluation.conditions import (
    AdditiveNoise,
    ConditionError,
    Reverberation,
    parse_conditions,
    synthetic_rir,
)

RATE = 16000


def snr_db(clean, noisy):
    noise = noisy - clean
    return float(10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum()))


def band_power(wav, rate, low, high):
    """Mean power spectral density of ``wav`` in [low, high) Hz."""
    power = torch.fft.rfft(wav.double()).abs().pow(2)
    freqs = torch.fft.rfftfreq(wav.numel(), 1 / rate)
    return float(power[(freqs >= low) & (freqs < high)].mean())


def write(path, signal, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(signal, dtype=np.float32), rate)
    return path


@pytest.fixture(scope="module")
def noise_folders(tmp_path_factory):
    """``long``: files longer than any utterance at other rates (a region
    is read); ``short``: shorter files (looped)."""
    root = tmp_path_factory.mktemp("noises")
    rng = np.random.default_rng(0)
    write(root / "long/a/hum.ogg", 0.2 * rng.standard_normal(441000), 44100)
    write(root / "long/hiss.flac", 0.05 * rng.standard_normal(96000), 8000)
    write(root / "short/click.wav", rng.standard_normal(2400), 8000)
    return {name: root / name for name in ("long", "short")}


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_noise_reaches_the_requested_snr(noise_folders, snr):
    wav = speech_like()
    for folder in (noise_folders["long"], noise_folders["short"], None):
        (cond,) = parse_conditions(f"noise:{snr:g}", noise_folder=folder)
        for key in ("spk1/utt1", "spk2/utt7"):
            out = cond(wav, RATE, key)
            assert out.shape == wav.shape and out.dtype == torch.float32
            assert snr_db(wav, out) == pytest.approx(snr, abs=0.1), folder


@pytest.mark.parametrize("file_seconds", [5.0, 0.3])  # a region; looped
def test_folder_noise_is_the_file_resampled(tmp_path, file_seconds):
    # A 1 kHz tone sampled at 8 kHz: read at the wrong rate, or not read,
    # the added noise would not peak at 1 kHz.
    t = np.arange(int(file_seconds * 8000)) / 8000
    write(tmp_path / "n/tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 8000)
    (cond,) = parse_conditions("noise:0", noise_folder=tmp_path / "n")
    wav = speech_like(1.0)
    added = cond(wav, RATE, "u") - wav
    spectrum = torch.fft.rfft(added).abs()
    freqs = torch.fft.rfftfreq(added.numel(), 1 / RATE)
    assert float(freqs[spectrum.argmax()]) == pytest.approx(1000, abs=2)


def test_generated_noise_is_pink():
    wav = speech_like(4.0)
    (cond,) = parse_conditions("noise:0")
    added = (cond(wav, RATE, "u") - wav).double()
    power = torch.fft.rfft(added).abs().pow(2)
    freqs = torch.fft.rfftfreq(added.numel(), 1 / RATE)
    # Power per octave band is flat for 1/f noise: fit the log-log slope
    # of the mean density in the octave bands from 62.5 Hz to 8 kHz.
    edges = 62.5 * 2.0 ** np.arange(7)
    centres, density = [], []
    for low in edges:
        band = (freqs >= low) & (freqs < 2 * low)
        centres.append(np.log10(low * np.sqrt(2)))
        density.append(np.log10(float(power[band].mean())))
    slope = np.polyfit(centres, density, 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_conditions_are_deterministic_per_key(noise_folders, tmp_path):
    wav = speech_like(1.0)
    for i, taps in enumerate([(0, 1.0, 300, 0.5), (5, 1.0, 900, -0.7)]):
        rir = np.zeros(1200)
        rir[taps[0]], rir[taps[2]] = taps[1], taps[3]
        write(tmp_path / f"rirs/room{i}.wav", rir, RATE)

    def pink(seed):
        return parse_conditions("noise:5", seed=seed)[0]

    def files(seed):
        folder = noise_folders["long"]
        return parse_conditions("noise:5", noise_folder=folder, seed=seed)[0]

    def room(seed):
        return parse_conditions("reverb:0.4", seed=seed)[0]

    for make in (pink, files, room):
        first = make(1234)(wav, RATE, "spk1/utt1")
        torch.testing.assert_close(make(1234)(wav, RATE, "spk1/utt1"), first)
        assert not torch.allclose(make(1234)(wav, RATE, "spk1/utt2"), first)
        assert not torch.allclose(make(99)(wav, RATE, "spk1/utt1"), first)
    # RIR files: the only choice is the file, the same per key.
    (cond,) = parse_conditions("reverb", rir_folder=tmp_path / "rirs")
    outs = [cond(wav, RATE, f"utt{k}") for k in range(12)]
    again = [cond(wav, RATE, f"utt{k}") for k in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again, strict=True))
    distinct = {tuple(o[:2000:50].tolist()) for o in outs}
    assert len(distinct) == 2  # both rooms used


def test_reverb_with_known_impulse_responses(tmp_path):
    wav = speech_like(1.0)
    # A delayed, attenuated delta: aligned at its peak, level restored.
    delta = np.zeros(800)
    delta[100] = 0.5
    write(tmp_path / "delta/d.wav", delta, RATE)
    (cond,) = parse_conditions("reverb", rir_folder=tmp_path / "delta")
    torch.testing.assert_close(cond(wav, RATE, "u"), wav, atol=1e-5, rtol=1e-4)

    # Direct path at 50, an echo of half its amplitude 400 samples later.
    rir = np.zeros(800)
    rir[50], rir[450] = 1.0, 0.5
    write(tmp_path / "echo/e.wav", rir, RATE)
    out = Reverberation(tmp_path / "echo")(wav, RATE, "u")
    echoed = wav.clone()
    echoed[400:] += 0.5 * wav[:-400]  # linear: nothing wraps to the start
    level = wav.abs().mean() / echoed.abs().mean()  # mean amplitude kept
    torch.testing.assert_close(out, level * echoed, atol=1e-5, rtol=1e-4)
    assert float(out.abs().mean()) == pytest.approx(float(wav.abs().mean()))


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_synthetic_rir_has_the_rt60_and_drr(rt60):
    for rate in (8000, 16000):
        rir = synthetic_rir(rt60, rate, torch.Generator().manual_seed(3))
        tail = rir[1:].double()
        drr = 10 * np.log10(float(rir[0]) ** 2 / float(tail.pow(2).sum()))
        assert drr == pytest.approx(0.0, abs=1e-3)
        # Schroeder backward integration; T20 (-5 to -25 dB) times 3.
        edc = torch.flip(torch.cumsum(torch.flip(tail.pow(2), [0]), 0), [0])
        edc_db = 10 * torch.log10(edc / edc[0])
        fit = (edc_db <= -5) & (edc_db >= -25)
        t = torch.arange(1, rir.numel()).double()[fit] / rate
        slope = np.polyfit(t.numpy(), edc_db[fit].numpy(), 1)[0]
        assert -60 / slope == pytest.approx(rt60, rel=0.1)


def test_synthetic_reverb_is_aligned_at_the_direct_path():
    # White input: the output's cross-correlation with it peaks at the
    # lag of the direct path, which must be 0 for every utterance.
    wav = torch.randn(RATE, generator=torch.Generator().manual_seed(0))
    (cond,) = parse_conditions("reverb:0.6")
    n = 2 * wav.numel()
    for key in range(30):
        out = cond(wav, RATE, f"utt{key}")
        xcorr = torch.fft.irfft(
            torch.fft.rfft(out, n) * torch.fft.rfft(wav, n).conj(), n
        )
        assert int(xcorr.argmax()) == 0, key


def test_rir_folder_skips_noise_recordings(tmp_path):
    rir = np.r_[1.0, np.zeros(99)]
    write(tmp_path / "rirs/simulated_rirs/room1.wav", rir, RATE)
    write(tmp_path / "rirs/pointsource_noises/noise-1.wav", rir, RATE)
    cond = Reverberation(tmp_path / "rirs")
    assert [p.endswith("room1.wav") for p in cond.files] == [True]
    with pytest.raises(ConditionError, match="other than \\*noise\\* files"):
        Reverberation(tmp_path / "rirs/pointsource_noises")


@pytest.mark.parametrize("rate", [8000, 16000])
def test_truncation_keeps_the_first_seconds(rate):
    wav = speech_like(3.0, rate)
    for seconds in (0.5, 1.0, 2.0):
        (cond,) = parse_conditions(f"truncate:{seconds:g}")
        out = cond(wav, rate, "u")
        assert out.numel() == round(seconds * rate)
        assert torch.equal(out, wav[: out.numel()])
    (four,) = parse_conditions("truncate:4")
    assert torch.equal(four(wav, rate, "u"), wav)  # shorter: whole


@pytest.mark.parametrize(("rate", "length"), [(16000, 32000), (44100, 44101)])
def test_telephone_band(rate, length):
    white = 0.1 * torch.randn(
        length, generator=torch.Generator().manual_seed(1)
    )
    (tel,) = parse_conditions("telephone")
    out = tel(white, rate, "u")
    assert out.shape == white.shape
    band = band_power(out, rate, 300, 3400)
    assert band > 0.5 * band_power(white, rate, 300, 3400)  # within -3 dB
    assert band_power(out, rate, 4000, rate / 2) < 1e-4 * band  # < -40 dB
    assert band_power(out, rate, 0, 100) < 1e-2 * band  # < -20 dB


def test_telephone_quantises_with_8_bit_mu_law():
    # A loud 1 kHz tone: what is not the tone is the codec's quantisation
    # noise, for 8-bit mu-law about 38 dB below the tone (G.711), far above
    # the filters' and resamplers' own errors.
    t = torch.arange(2 * RATE) / RATE
    tone = 0.7 * torch.sin(2 * torch.pi * 1000 * t)
    out = parse_conditions("telephone")[0](tone, RATE, "u")[4000:-4000]
    spectrum = torch.fft.rfft(out.double() * torch.hann_window(out.numel()))
    freqs = torch.fft.rfftfreq(out.numel(), 1 / RATE)
    power = spectrum.abs().pow(2)
    near = (freqs - 1000).abs() < 20
    inband = (freqs > 300) & (freqs < 3400)
    sqnr = 10 * np.log10(float(power[near].sum() / power[inband & ~near].sum()))
    assert 30 < sqnr < 45


def test_names_descriptions_and_signatures(noise_folders):
    spec = "clean,noise:0,noise:5,noise:10,reverb:0.6,truncate:1,truncate:2,telephone"
    conditions = parse_conditions(spec)
    names = [c.name for c in conditions]
    assert len(set(names)) == len(names)
    assert all(n.replace("_", "").replace(".", "").isalnum() for n in names)
    assert all(c.description for c in conditions)
    # A list of items, spaces and capitals give the same conditions.
    listed = parse_conditions(
        [" Clean", "NOISE:0 ,noise:5", *spec.split(",")[3:]]
    )
    assert [c.name for c in listed] == names
    pink = AdditiveNoise(5.0)
    files = AdditiveNoise(5.0, noise_folders["long"])
    assert pink.name == files.name  # the same condition of the table ...
    signatures = {
        pink.signature,
        files.signature,
        AdditiveNoise(5.0, seed=7).signature,
    }
    assert len(signatures) == 3  # ... not the same audio
    assert AdditiveNoise(5.0).signature == pink.signature


def test_bad_specifications_are_refused(tmp_path):
    cases = {
        "echo": "Unknown condition 'echo'.*noise:SNR.*truncate:SECONDS",
        "noise": "Unknown condition 'noise'",
        "clean:3": "Unknown condition 'clean:3'",
        "noise:loud": "'loud' is not a finite number",
        "noise:nan": "'nan' is not a finite number",
        "truncate:0": "truncate needs a positive number",
        "truncate:-1": "truncate needs a positive number",
        "reverb:0": "RT60 must be in",
        "reverb": "'reverb' needs a folder.*reverb:0.6",
        "noise:5,noise:5.0": "noise_5dB given twice",
        " , ": "No condition given",
    }
    for spec, message in cases.items():
        with pytest.raises(ConditionError, match=message):
            parse_conditions(spec)
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "empty/readme.txt").write_text("no audio")
    with pytest.raises(ConditionError, match="'.*empty' holds no audio"):
        parse_conditions("noise:5", noise_folder=tmp_path / "empty")
    with pytest.raises(ConditionError, match="'.*missing' does not exist"):
        parse_conditions("reverb", rir_folder=tmp_path / "missing")


def test_bad_audio_is_refused(tmp_path):
    write(tmp_path / "quiet/silence.wav", np.zeros(800), RATE)
    (cond,) = parse_conditions("noise:5", noise_folder=tmp_path / "quiet")
    with pytest.raises(ConditionError, match="silence.wav' is silent"):
        cond(speech_like(0.5), RATE, "u")
    with pytest.raises(ConditionError, match="1-D waveform.*'u'.*\\(1, 800\\)"):
        parse_conditions("telephone")[0](torch.zeros(1, 800), RATE, "u")
