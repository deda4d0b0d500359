"""Robustness conditions: the test side of a trial list degraded, one way
at a time, deterministically per utterance.

Grammar of ``parse_conditions`` (comma-separated, case-insensitive names):

============== ============================================================
``clean``      the audio as it is
``noise:SNR``  additive noise at SNR dB (any finite number) measured over the
               whole utterance: a file of ``noise_folder`` chosen per
               utterance (a random region, looped if the file is shorter),
               or, with no folder, generated pink (1/f power) noise
``reverb``     convolution with a room impulse response of ``rir_folder``
               chosen per utterance, aligned at its direct path (its peak),
               mean amplitude kept
``reverb:RT``  a synthetic RIR instead (``rir_folder`` is not used): a unit
               direct path and an exponentially decaying Gaussian tail that
               reaches -60 dB after RT seconds (0 < RT <= 10), with as much
               energy as the direct path (DRR 0 dB)
``truncate:S`` the first S seconds (S > 0); shorter utterances stay whole
``telephone``  narrowband telephone: resampled to 8 kHz, band-passed to
               300-3400 Hz, G.711 mu-law (8 bit), resampled back; same
               length
============== ============================================================

Each condition is ``condition(wav, sample_rate, key) -> wav`` on a 1-D
waveform; the same ``key`` (the utterance id) and seed give the same audio
in every process of a distributed run and in every rerun (the random
choices are seeded with a hash of seed and key, not with Python's salted
``hash``). Noise and RIR files are listed sorted, so the choice per key
depends on the folder's content only.

``condition.name`` is file-name safe (``noise_5dB``, ``reverb_0.6s``,
``truncate_2s``); ``condition.signature`` also names the noise / RIR source
and the seed, for caches that must not serve audio degraded another way.

RIRS_NOISES (openslr.org/28) mixes impulse responses and noise recordings:
files whose name contains ``noise`` are skipped in ``rir_folder`` (with a
warning) and belong in ``noise_folder``.

Authors
 * speechbrain-unipet contributors 2026
"""

import hashlib
import math
import pathlib

import torch
import torchaudio.functional as AF
from speechbrain.utils.logger import get_logger

from speechbrain_unipet.data.layouts import AUDIO_EXTENSIONS, audio_files
from speechbrain_unipet.utils.audio import audio_info, load_audio
from speechbrain_unipet.utils.errors import UserError

logger = get_logger(__name__)


GRAMMAR = (
    "clean | noise:SNR (dB) | reverb (needs a RIR folder) | reverb:RT60 "
    "(seconds, synthetic RIR) | truncate:SECONDS | telephone; "
    "comma-separated, e.g. clean,noise:0,noise:5,reverb:0.6,truncate:2,"
    "telephone"
)


#: Bumped whenever a degradation changes, so that ``signature`` changes.
VERSION = 2


#: torchaudio's "kaiser_best" resampler: its stop band (about -60 dB above
#: 4 kHz after the telephone channel; the default sinc gives about -33 dB)
#: keeps the narrowband signal narrow when it is brought back up.
_KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


class ConditionError(UserError, ValueError):
    """An unknown condition or an unusable noise / RIR folder or file."""


def _generator(seed, key, salt):
    """A torch generator seeded from (seed, key, salt), stable across
    processes (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _randint(high, generator):
    """A uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator))


def _audio_files(folder, what, skip_noise=False):
    """Sorted audio files under ``folder`` (any depth), with errors that
    name the folder."""

    if folder is None:
        return None
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ConditionError(
            f"The {what} folder '{folder}' does not exist (or is not a folder)"
        )
    files = [path for _, path in audio_files(folder)]
    if skip_noise:
        noises = [p for p in files if "noise" in pathlib.Path(p).name.lower()]
        if noises:
            logger.warning(
                "Skipping %d noise recordings in the RIR folder %s (e.g. %s): "
                "they are no impulse responses; use them as --noise_folder",
                len(noises),
                folder,
                noises[0],
            )
            skipped = set(noises)
            files = [p for p in files if p not in skipped]
    if not files:
        raise ConditionError(
            f"The {what} folder '{folder}' holds no audio files "
            f"({', '.join(AUDIO_EXTENSIONS)}, searched recursively)"
            + (" other than *noise* files" if skip_noise else "")
        )
    return files


def _files_digest(folder, files):
    """Short digest of the resolved folder and its file list."""
    text = "\n".join([str(pathlib.Path(folder).resolve()), *map(str, files)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Condition:
    """A named degradation of the test side; this base class is the
    identity (``clean``), subclasses override ``apply``.

    Arguments
    ---------
    name : str
        File-name safe (``noise_5dB``).
    description : str
        For tables and plots.
    seed : int
        Seeds the per-utterance choices.

    Example
    -------
    >>> clean = Condition("clean", "clean")
    >>> wav = torch.randn(800)
    >>> torch.equal(clean(wav, 16000, "u"), wav)
    True
    """

    def __init__(self, name, description, seed=1234):
        self.name, self.description, self.seed = name, description, seed

    @property
    def signature(self):
        """Everything the degraded audio depends on besides the input:
        the name, the seed, the source of noise / RIRs and ``VERSION``
        (for cache keys; ``name`` alone does not tell folder noise from
        generated noise).

        Example
        -------
        >>> AdditiveNoise(5.0, seed=1).signature
        'noise_5dB|seed=1|pink|v2'
        """
        return f"{self.name}|seed={self.seed}|{self._source()}|v{VERSION}"

    def _source(self):
        return "-"

    def __call__(self, wav, sample_rate, key):
        """The degraded waveform.

        Arguments
        ---------
        wav : torch.Tensor
            [S] samples.
        sample_rate : int
            Rate of ``wav`` (and of the result).
        key : str
            The utterance id (seeds the randomness).

        Returns
        -------
        torch.Tensor
            Float32 [S'] samples (S' = S except for ``truncate``).
        """
        if not isinstance(wav, torch.Tensor) or wav.dim() != 1:
            shape = tuple(getattr(wav, "shape", ()))
            raise ConditionError(
                f"{self.name}: expected a 1-D waveform tensor for {key!r}, "
                f"got {type(wav).__name__} of shape {shape}"
            )
        return self.apply(wav.float(), int(sample_rate), str(key))

    def apply(self, wav, sample_rate, key):
        """The identity (``clean``).

        Arguments
        ---------
        wav : torch.Tensor
            Float32 [S].
        sample_rate : int
            Its rate.
        key : str
            The utterance id.

        Returns
        -------
        torch.Tensor
            ``wav``.
        """
        return wav

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class AdditiveNoise(Condition):
    """Noise added at an SNR measured over the whole utterance
    (``torchaudio.functional.add_noise``). A silent utterance stays silent.

    Arguments
    ---------
    snr : float
        Signal-to-noise ratio in dB.
    noise_folder : str or pathlib.Path or None
        Audio files (any depth, any rate: resampled) to draw noise from, one
        per utterance, a random region of it (looped when the file is
        shorter than the utterance). None: generated pink noise.
    seed : int
        Seeds the choice of file, region or generated noise.

    Example
    -------
    >>> cond = AdditiveNoise(5.0)
    >>> wav = torch.randn(16000)
    >>> noise = cond(wav, 16000, "spk/utt1") - wav
    >>> round(float(10 * torch.log10(wav.pow(2).sum() / noise.pow(2).sum())), 2)
    5.0
    """

    def __init__(self, snr, noise_folder=None, seed=1234):
        snr = float(snr)
        if not math.isfinite(snr):
            raise ConditionError(f"noise needs a finite SNR in dB, got {snr}")
        self.files = _audio_files(noise_folder, "noise")
        self.folder = noise_folder
        source = "pink noise" if self.files is None else "noise files"
        super().__init__(
            f"noise_{snr:g}dB", f"{source} at {snr:g} dB SNR", seed
        )
        self.snr = snr

    def _source(self):
        if self.files is None:
            return "pink"
        return f"noise_folder={_files_digest(self.folder, self.files)}"

    def noise(self, length, sample_rate, key):
        """The noise for an utterance.

        Arguments
        ---------
        length : int
            Samples wanted.
        sample_rate : int
            Their rate.
        key : str
            The utterance id.

        Returns
        -------
        torch.Tensor
            [length] samples.

        Example
        -------
        >>> AdditiveNoise(0.0).noise(1000, 16000, "u").shape
        torch.Size([1000])
        """
        gen = _generator(self.seed, key, "noise")
        if self.files is None:
            return pink_noise(length, gen)

        path = self.files[_randint(len(self.files), gen)]
        info = audio_info(path)
        # Only the region needed is decoded (noise tracks last minutes),
        # one frame more for the resampler's rounding.
        need = math.ceil(length * info.sample_rate / sample_rate) + 1
        if info.frames > need:
            start = _randint(info.frames - need + 1, gen)
            noise = load_audio(path, sample_rate, start, start + need)[:length]
            if float(noise.pow(2).sum()) > 0.0:
                return noise
            # A silent stretch of a noise file: fall back to the whole file.
        whole = load_audio(path, sample_rate)
        if float(whole.pow(2).sum()) == 0.0:
            raise ConditionError(
                f"{self.name}: the noise file '{path}' is silent; remove it "
                "from the noise folder"
            )
        start = _randint(whole.numel(), gen)
        loops = math.ceil((start + length) / whole.numel())
        return whole.repeat(loops)[start : start + length]

    def apply(self, wav, sample_rate, key):
        """``wav`` plus the utterance's noise at ``snr`` dB.

        Arguments
        ---------
        wav : torch.Tensor
            Float32 [S].
        sample_rate : int
            Its rate.
        key : str
            The utterance id.

        Returns
        -------
        torch.Tensor
            [S] noisy samples.
        """
        noise = self.noise(wav.numel(), sample_rate, key).to(wav)
        snr = torch.tensor([self.snr], dtype=wav.dtype, device=wav.device)
        return AF.add_noise(wav[None], noise[None], snr)[0]


def pink_noise(length, generator):
    """Pink (1/f power) noise: white Gaussian noise shaped in the frequency
    domain (neither torchaudio nor SpeechBrain generates coloured noise).

    Arguments
    ---------
    length : int
        Samples.
    generator : torch.Generator
        Source of the white noise.

    Returns
    -------
    torch.Tensor
        [length], zero mean, unit variance.

    Example
    -------
    >>> x = pink_noise(16000, torch.Generator().manual_seed(0))
    >>> x.shape, round(float(x.std()), 3)
    (torch.Size([16000]), 1.0)
    """
    white = torch.randn(length, generator=generator)
    spectrum = torch.fft.rfft(white)
    freqs = torch.arange(spectrum.numel(), dtype=torch.float32)
    freqs[0] = 1.0  # the DC bin is removed with the mean below
    pink = torch.fft.irfft(spectrum / freqs.sqrt(), n=length)
    return (pink - pink.mean()) / pink.std()


class Reverberation(Condition):
    """Convolution with a room impulse response, aligned at the direct
    path and rescaled to the input's mean absolute amplitude, as
    SpeechBrain's ``reverberate`` (``rescale_amp="avg"``), but linear
    (``torchaudio.functional.fftconvolve``): SpeechBrain's FFT convolution
    is circular at the signal's length and wraps the reverberant tail of
    the end onto the start of the utterance.

    Arguments
    ---------
    rir_folder : str or pathlib.Path or None
        RIR audio files (any depth, any rate: resampled; ``*noise*`` files
        skipped), one chosen per utterance; the direct path is the peak.
    rt60 : float or None
        Without a folder: a synthetic RIR (``synthetic_rir``), direct path
        at sample 0.
    seed : int
        Seeds the choice of RIR or the synthetic tail.
    drr_db : float
        Direct-to-reverberant ratio of the synthetic RIR.

    Example
    -------
    >>> cond = Reverberation(rt60=0.3)
    >>> cond.name, cond(torch.randn(8000), 16000, "u").shape
    ('reverb_0.3s', torch.Size([8000]))
    """

    def __init__(self, rir_folder=None, rt60=None, seed=1234, drr_db=0.0):
        if (rir_folder is None) == (rt60 is None):
            raise ConditionError(
                "reverb needs either a folder of room impulse responses "
                "(--rir_folder, e.g. RIRS_NOISES/simulated_rirs from "
                "https://www.openslr.org/28) or an RT60 for a synthetic "
                f"RIR (reverb:0.6), not both; got rir_folder={rir_folder!r}, "
                f"rt60={rt60!r}"
            )
        if rt60 is not None:
            rt60 = _check_rt60(rt60)
            name, what = f"reverb_{rt60:g}s", f"synthetic RIR, RT60 {rt60:g} s"
        else:
            name, what = "reverb", "room impulse responses"
        self.files = _audio_files(rir_folder, "RIR", skip_noise=True)
        self.folder = rir_folder
        super().__init__(name, f"reverberation ({what})", seed)
        self.rt60, self.drr_db = rt60, float(drr_db)

    def _source(self):
        if self.files is None:
            return f"synthetic_drr={self.drr_db:g}"
        return f"rir_folder={_files_digest(self.folder, self.files)}"

    def rir(self, sample_rate, key):
        """The impulse response of an utterance and its direct path.

        Arguments
        ---------
        sample_rate : int
            Rate of the RIR.
        key : str
            The utterance id.

        Returns
        -------
        rir : torch.Tensor
            [R] samples.
        direct : int
            Index of the direct path.

        Example
        -------
        >>> rir, direct = Reverberation(rt60=0.25).rir(16000, "u")
        >>> rir.shape, direct
        (torch.Size([4000]), 0)
        """
        gen = _generator(self.seed, key, "rir")
        if self.files is None:
            return synthetic_rir(self.rt60, sample_rate, gen, self.drr_db), 0

        path = self.files[_randint(len(self.files), gen)]
        rir = load_audio(path, sample_rate)
        if float(rir.abs().max()) == 0.0:
            raise ConditionError(
                f"{self.name}: the impulse response '{path}' is silent; "
                "remove it from the RIR folder"
            )
        return rir, int(rir.abs().argmax())

    def apply(self, wav, sample_rate, key):
        """``wav`` convolved with the utterance's RIR.

        Arguments
        ---------
        wav : torch.Tensor
            Float32 [S].
        sample_rate : int
            Its rate.
        key : str
            The utterance id.

        Returns
        -------
        torch.Tensor
            [S] reverberant samples with the mean amplitude of ``wav``.
        """
        rir, direct = self.rir(sample_rate, key)
        out = AF.fftconvolve(wav, rir.to(wav))[direct : direct + wav.numel()]
        level = wav.abs().mean() / out.abs().mean().clamp(min=1e-12)
        return out * level


def _check_rt60(rt60):
    rt60 = float(rt60)
    if not 0.0 < rt60 <= 10.0:
        raise ConditionError(
            f"reverb RT60 must be in (0, 10] seconds, got {rt60:g}"
        )
    return rt60


def synthetic_rir(rt60, sample_rate, generator, drr_db=0.0):
    """A unit direct path followed by exponentially decaying Gaussian noise
    (the diffuse tail of statistical room acoustics: -60 dB after
    ``rt60`` s), scaled to ``drr_db``, so that the result does not depend
    on the sample rate. Written by hand: SpeechBrain and torchaudio load
    RIRs but do not generate them.

    Arguments
    ---------
    rt60 : float
        Reverberation time in seconds (0 < rt60 <= 10).
    sample_rate : int
        Rate of the RIR.
    generator : torch.Generator
        Source of the tail.
    drr_db : float
        Direct-to-reverberant energy ratio in dB.

    Returns
    -------
    torch.Tensor
        [round(rt60 * sample_rate)] samples; the first (1.0) is the direct
        path.

    Example
    -------
    >>> rir = synthetic_rir(0.5, 16000, torch.Generator().manual_seed(0))
    >>> rir.shape, float(rir[0]), round(float(rir[1:].pow(2).sum()), 3)
    (torch.Size([8000]), 1.0, 1.0)
    """
    rt60 = _check_rt60(rt60)
    n = max(int(round(rt60 * sample_rate)), 2)
    t = torch.arange(1, n, dtype=torch.float32) / sample_rate
    tail = torch.randn(n - 1, generator=generator) * torch.exp(
        -3.0 * math.log(10.0) * t / rt60  # amplitude -60 dB at rt60
    )
    tail *= 10 ** (-drr_db / 20) / tail.pow(2).sum().sqrt()
    return torch.cat([torch.ones(1), tail])


class Truncation(Condition):
    """The first ``seconds`` of the test utterance (shorter ones stay
    whole): short-duration test conditions cut from the start, where a
    deployed system would stop listening.

    Arguments
    ---------
    seconds : float
        Duration kept (> 0).

    Example
    -------
    >>> Truncation(1.0)(torch.ones(40000), 16000, "u").shape
    torch.Size([16000])
    """

    def __init__(self, seconds):
        seconds = float(seconds)
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConditionError(
                f"truncate needs a positive number of seconds, got {seconds:g}"
            )
        super().__init__(
            f"truncate_{seconds:g}s", f"first {seconds:g} s of the test side"
        )
        self.seconds = seconds

    def apply(self, wav, sample_rate, key):
        """The first ``seconds`` of ``wav``.

        Arguments
        ---------
        wav : torch.Tensor
            Float32 [S].
        sample_rate : int
            Its rate.
        key : str
            Unused (truncation is not random).

        Returns
        -------
        torch.Tensor
            ``min(S, round(seconds * sample_rate))`` samples.
        """
        return wav[: max(1, int(round(self.seconds * sample_rate)))]


class Telephone(Condition):
    """Narrowband telephone channel: resampled to 8 kHz (torchaudio's
    kaiser-best sinc), band-passed to 300-3400 Hz (second-order high- and
    low-pass biquads, -3 dB at the edges), G.711 mu-law with 8 bits
    (``torchaudio.functional.mu_law_encoding`` / ``decoding``) and
    resampled back; the length is kept.

    Mu-law codes [-1, 1] (the codec's full scale): audio within it is
    quantised as a real channel would; louder audio is scaled down for the
    codec and back up rather than clipped, so only the channel, not the
    level, degrades it.

    Example
    -------
    >>> Telephone()(torch.randn(16000) * 0.1, 16000, "u").shape
    torch.Size([16000])
    """

    def __init__(self):
        super().__init__(
            "telephone", "telephone band (8 kHz, 300-3400 Hz, mu-law)"
        )

    def apply(self, wav, sample_rate, key):
        """The telephone version of ``wav``.

        Arguments
        ---------
        wav : torch.Tensor
            Float32 [S].
        sample_rate : int
            Its rate.
        key : str
            Unused (the channel is not random).

        Returns
        -------
        torch.Tensor
            [S] samples at ``sample_rate``.
        """
        narrow = AF.resample(wav, sample_rate, 8000, **_KAISER_BEST)
        narrow = AF.highpass_biquad(narrow, 8000, 300.0)
        narrow = AF.lowpass_biquad(narrow, 8000, 3400.0)
        scale = max(float(narrow.abs().max()), 1.0)
        coded = AF.mu_law_encoding(narrow / scale, 256)
        narrow = AF.mu_law_decoding(coded, 256) * scale
        out = AF.resample(narrow, 8000, sample_rate, **_KAISER_BEST)
        if out.numel() >= wav.numel():
            return out[: wav.numel()]
        return torch.nn.functional.pad(out, (0, wav.numel() - out.numel()))


def _number(text, spec):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConditionError(
            f"Condition {spec!r}: {text!r} is not a finite number. "
            f"Conditions: {GRAMMAR}"
        )
    return value


def parse_conditions(spec, noise_folder=None, rir_folder=None, seed=1234):
    """Conditions from a specification (grammar in the module docstring).

    Arguments
    ---------
    spec : str or list of str
        ``"clean,noise:5,reverb,truncate:2,telephone"`` or a list of such
        items (items may themselves hold commas, as from a CLI list).
    noise_folder : str or pathlib.Path or None
        Noise files for ``noise:SNR`` (None: generated pink noise).
    rir_folder : str or pathlib.Path or None
        Impulse responses for ``reverb``.
    seed : int
        Seeds the per-utterance choices.

    Returns
    -------
    list of Condition
        In the order given.

    Raises
    ------
    ConditionError
        On an unknown item, a bad number, a repeated condition, a missing
        or empty folder, or ``reverb`` without ``rir_folder``.

    Example
    -------
    >>> [c.name for c in parse_conditions("clean,noise:5,truncate:2,telephone")]
    ['clean', 'noise_5dB', 'truncate_2s', 'telephone']
    >>> parse_conditions("echo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_unipet.evaluation.conditions.ConditionError: Unknown condition 'echo'...
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    items = [i.strip() for item in items for i in str(item).split(",")]
    conditions = []
    for item in filter(None, items):
        name, colon, value = (s.strip() for s in item.partition(":"))
        name = name.lower()
        if name == "clean" and not colon:
            conditions.append(Condition("clean", "clean", seed))
        elif name == "noise" and value:
            snr = _number(value, item)
            conditions.append(AdditiveNoise(snr, noise_folder, seed))
        elif name == "reverb" and not colon:
            if rir_folder is None:
                raise ConditionError(
                    "'reverb' needs a folder of room impulse responses "
                    "(--rir_folder, e.g. RIRS_NOISES/simulated_rirs from "
                    "https://www.openslr.org/28), or use reverb:RT60 "
                    f"(e.g. reverb:0.6) for a synthetic one. Conditions: "
                    f"{GRAMMAR}"
                )
            conditions.append(Reverberation(rir_folder, seed=seed))
        elif name == "reverb" and value:
            rt60 = _number(value, item)
            conditions.append(Reverberation(rt60=rt60, seed=seed))
        elif name == "truncate" and value:
            conditions.append(Truncation(_number(value, item)))
        elif name == "telephone" and not colon:
            conditions.append(Telephone())
        else:
            raise ConditionError(
                f"Unknown condition {item!r}. Conditions: {GRAMMAR}"
            )
    if not conditions:
        raise ConditionError(f"No condition given. Conditions: {GRAMMAR}")
    names = [c.name for c in conditions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConditionError(
            f"Condition(s) {', '.join(repeated)} given twice (the same "
            "condition with the same number written another way counts)"
        )
    return conditions
