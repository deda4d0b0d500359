"""One audio loading path: decode, down-mix, resample, with errors that name
the file.

Used by data preparation, training, validation and verification, so that a
file gives the same samples everywhere. Decoding goes through ``soundfile``
(libsndfile: wav, flac, ogg/vorbis/opus, mp3 and the other formats of
``soundfile.available_formats()``); formats libsndfile cannot read (m4a/aac
as VoxCeleb2 ships it) go through ``torchaudio.load`` when its decoder
(``torchcodec`` with FFmpeg) is installed. Otherwise the error names the
file and the ``ffmpeg`` command that converts it.

Multi-channel audio is down-mixed by averaging the channels; any sample rate
is resampled with ``torchaudio.functional.resample`` (its default windowed
sinc), so the result equals torchaudio's on the same audio.

Authors
 * speechbrain-unipet contributors 2026
"""

import dataclasses
import functools
import math
import os

import numpy as np
import soundfile as sf

from speechbrain_unipet.utils.errors import UserError

#: Lowest sample rate accepted: telephone speech (8 kHz) is upsampled,
#: anything below cannot carry speaker information usefully.
MIN_SAMPLE_RATE = 8000


class AudioError(UserError, ValueError):
    """Audio that cannot be used, with the file and the fix."""


class NotReadBySoundfile(AudioError):
    """libsndfile cannot decode the file (raised where the torchaudio
    fallback is not allowed)."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self):
        """Length in seconds.

        Example
        -------
        >>> AudioInfo(frames=8000, sample_rate=16000, channels=1).duration
        0.5
        """
        return self.frames / self.sample_rate


def conversion_hint(path, sample_rate=16000):
    """The command that turns ``path`` into a mono wav any backend reads.

    Arguments
    ---------
    path : str or pathlib.Path
        The file no backend could decode.
    sample_rate : int
        The rate the converted wav gets.

    Returns
    -------
    str
        An ``ffmpeg`` command line writing ``<path>.wav``.

    Example
    -------
    >>> conversion_hint("a.m4a")
    "ffmpeg -i 'a.m4a' -ac 1 -ar 16000 'a.m4a.wav'"
    """
    return f"ffmpeg -i '{path}' -ac 1 -ar {sample_rate} '{path}.wav'"


@functools.lru_cache(maxsize=1)
def _torchaudio_can_decode():
    try:
        import torchcodec  # noqa: F401 -- torchaudio >= 2.9 decodes with it
    except Exception:  # noqa: BLE001 -- missing, or FFmpeg libraries absent
        return False
    return True


def _fallback_load(path, err, fallback=True):
    """``torchaudio.load`` for formats libsndfile does not know.

    Returns
    -------
    tuple
        ``(numpy array [channels, frames], sample_rate)``.
    """
    if not fallback:
        raise NotReadBySoundfile(f"soundfile cannot decode '{path}': {err}")
    if not _torchaudio_can_decode():
        raise AudioError(
            f"Cannot decode '{path}': {err}. No installed backend reads this "
            "format (soundfile reads wav/flac/ogg/mp3; m4a needs "
            "'pip install torchcodec' with FFmpeg). Convert it, e.g. "
            f"{conversion_hint(path)}"
        ) from err
    try:
        import torchaudio

        wav, rate = torchaudio.load(str(path))
        return wav.numpy(), rate
    except Exception as err2:  # noqa: BLE001 -- decoders raise many types
        raise AudioError(
            f"Cannot decode '{path}': {err2}. Convert it, e.g. "
            f"{conversion_hint(path)}"
        ) from err2


def audio_info(path, fallback=True):
    """Frames, sample rate and channels of ``path`` (header only).

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.
    fallback : bool
        If soundfile cannot read the file, try torchaudio. ``False`` raises
        ``NotReadBySoundfile`` instead (for processes that must not run
        torch).

    Returns
    -------
    AudioInfo
        ``frames``, ``sample_rate`` and ``channels`` of the file.

    Raises
    ------
    AudioError
        Naming the file, if it is missing or no backend decodes it.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, np.zeros((800, 2), np.float32), 8000)
    >>> audio_info(path)
    AudioInfo(frames=800, sample_rate=8000, channels=2)
    """
    try:
        # SoundFile rather than sf.info: the same header, without building
        # the format description strings (a third of sf.info's time).
        with sf.SoundFile(str(path)) as f:
            return AudioInfo(int(f.frames), int(f.samplerate), f.channels)
    except Exception as err:  # noqa: BLE001 -- soundfile raises many types
        if not os.path.isfile(path):
            raise AudioError(f"Audio file '{path}' does not exist") from err
        wav, rate = _fallback_load(path, err, fallback)
        return AudioInfo(int(wav.shape[1]), int(rate), int(wav.shape[0]))


def check_sample_rate(path, sample_rate):
    """Raises an ``AudioError`` naming ``path`` if ``sample_rate`` is
    below ``MIN_SAMPLE_RATE``.

    Arguments
    ---------
    path : str or pathlib.Path
        The file, named in the error.
    sample_rate : int
        Its sample rate.

    Example
    -------
    >>> check_sample_rate("a.wav", 16000)
    >>> check_sample_rate("a.wav", 4000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_unipet.utils.audio.AudioError: 'a.wav' is sampled at 4000 Hz; ...
    """
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"'{path}' is sampled at {sample_rate} Hz; speaker models need at "
            f"least {MIN_SAMPLE_RATE} Hz. Remove the file or use the original "
            "recording."
        )


def read_numpy(path, start=0, stop=None, fallback=True):
    """Samples ``[start, stop)`` of ``path`` at its own rate, down-mixed.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.
    start : int
        First frame to read.
    stop : int, optional
        Frame to stop before; ``None`` reads to the end.
    fallback : bool
        As in ``audio_info``: try torchaudio where soundfile fails.

    Returns
    -------
    signal : numpy.ndarray
        Float32 [S], the mean of the channels.
    sample_rate : int
        The file's sample rate.
    """
    try:
        data, rate = sf.read(
            str(path),
            start=int(start),
            stop=None if stop is None else int(stop),
            dtype="float32",
            always_2d=True,
        )
        signal = data.mean(axis=1, dtype=np.float32)
    except Exception as err:  # noqa: BLE001
        if not os.path.isfile(path):
            raise AudioError(f"Audio file '{path}' does not exist") from err
        wav, rate = _fallback_load(path, err, fallback)
        signal = wav.mean(axis=0)[int(start) : None if stop is None else stop]
    return np.ascontiguousarray(signal, dtype=np.float32), int(rate)


@dataclasses.dataclass
class AudioProbe:
    """What inspecting one file (region) found; frames at the file's rate."""

    rate: int = 0
    channels: int = 0
    start: int = 0
    stop: int = 0
    quiet: tuple = ()
    error: str = ""
    needs_fallback: bool = False


def probe_audio(task, fallback=True):
    """Header of a file region and, with ``amp_th``, which of its
    ``seg_dur`` segments are quieter than ``amp_th`` (mean absolute
    amplitude). Picklable worker of the data preparation.

    Arguments
    ---------
    task : tuple
        ``(path, start, stop, seg_dur, amp_th)``, ``start``/``stop`` in
        seconds or None (the file's bounds).

    fallback : bool
        Whether to try torchaudio for files libsndfile cannot decode; if
        not, such a file gives ``needs_fallback=True``.

    Returns
    -------
    AudioProbe
        With ``error`` set (and nothing else) if the file cannot be used.
    """
    path, start, stop, seg_dur, amp_th = task
    try:
        info = audio_info(path, fallback)
    except NotReadBySoundfile as err:
        return AudioProbe(error=str(err), needs_fallback=True)
    except AudioError as err:
        return AudioProbe(error=str(err))
    rate = info.sample_rate
    first = 0 if start is None else int(round(start * rate))
    last = info.frames if stop is None else int(round(stop * rate))
    if first >= info.frames > 0:
        return AudioProbe(
            error=f"region starts at {first / rate:.2f} s but '{path}' lasts "
            f"{info.duration:.2f} s (start/stop are in seconds)"
        )
    if last > info.frames + rate // 100:  # 10 ms of rounding slack
        return AudioProbe(
            error=f"region ends at {last / rate:.2f} s but '{path}' lasts "
            f"{info.duration:.2f} s"
        )
    last = min(last, info.frames)
    probe = AudioProbe(rate, info.channels, first, max(first, last))
    seg = int(round(seg_dur * rate))
    if amp_th and seg > 0 and probe.stop - probe.start >= seg:
        try:
            signal, _ = read_numpy(path, probe.start, probe.stop, fallback)
        except NotReadBySoundfile as err:
            return AudioProbe(error=str(err), needs_fallback=True)
        except AudioError as err:
            return AudioProbe(error=str(err))
        n = signal.size // seg
        energy = np.abs(signal[: n * seg]).reshape(n, seg).mean(1)
        probe.quiet = tuple(int(i) for i in np.flatnonzero(energy < amp_th))
    return probe


def resample(signal, orig_rate, sample_rate):
    """``torchaudio.functional.resample`` when the rates differ.

    Arguments
    ---------
    signal : torch.Tensor
        Samples, time last.
    orig_rate : int
        The rate of ``signal``.
    sample_rate : int
        The rate wanted.

    Returns
    -------
    torch.Tensor
        ``signal`` itself when the rates are equal (no torchaudio import),
        else the resampled signal.

    Example
    -------
    >>> import torch
    >>> resample(torch.zeros(800), 8000, 16000).shape
    torch.Size([1600])
    """
    if orig_rate == sample_rate:
        return signal
    import torchaudio

    return torchaudio.functional.resample(signal, orig_rate, sample_rate)


def load_audio(path, sample_rate=16000, start=0, stop=None):
    """Mono float32 samples of ``path`` at ``sample_rate``.

    Arguments
    ---------
    path : str or path-like
        Any file a backend decodes (see the module docstring).
    sample_rate : int
        Rate of the returned signal; the file is resampled to it.
    start, stop : int
        Region to read, in samples *at the file's own rate* (as the data
        preparation CSVs store it); ``stop=None`` reads to the end.

    Returns
    -------
    torch.Tensor
        [S] samples.

    Raises
    ------
    AudioError
        Naming the file: unreadable, empty region, too low a sample rate.

    Example
    -------
    >>> path = getfixture("tmp_path") / "stereo.wav"
    >>> sf.write(path, np.ones((441, 2), np.float32), 44100)
    >>> load_audio(path, 16000).shape
    torch.Size([160])
    """
    import torch

    signal, rate = decoded(path, start, stop)
    return resample(torch.from_numpy(signal), rate, sample_rate)


def decoded(path, start=0, stop=None):
    """Mono float32 samples of ``path`` at its own rate, refused (naming
    the file) when empty, damaged or below 8 kHz: ``load_audio`` without
    resampling.

    Arguments
    ---------
    path : str or path-like
        The audio file.
    start, stop : int
        Region to read, in samples at the file's rate.

    Returns
    -------
    signal : numpy.ndarray
        [S] float32.
    sample_rate : int
        The file's rate.
    """
    signal, rate = read_numpy(path, start, stop)
    check_sample_rate(path, rate)
    if signal.size == 0:
        raise AudioError(
            f"Audio file '{path}' holds no samples"
            + (f" in [{start}, {stop})" if start or stop is not None else "")
        )
    if not np.isfinite(signal).all():
        bad = int(np.flatnonzero(~np.isfinite(signal))[0])
        raise AudioError(
            f"Audio file '{path}' holds NaN or infinite samples (the first at "
            f"sample {start + bad}): the file is damaged; re-encode or "
            "remove it."
        )
    return signal, rate


def resample_numpy(signal, orig_rate, sample_rate, width=6, rolloff=0.99):
    """``torchaudio.functional.resample`` (its default Hann-windowed sinc)
    in NumPy, for runtimes without torch (``speechbrain_unipet.onnx``).

    Written by hand because SciPy's and soxr's filters differ from
    torchaudio's, and a deployed model must see the samples the PyTorch
    model saw: this follows torchaudio's kernel and padding, and equals it
    to float32 rounding (tested).

    Arguments
    ---------
    signal : numpy.ndarray
        [S] samples.
    orig_rate, sample_rate : int
        Rates of ``signal`` and of the result.
    width : int
        Zero crossings of the sinc on each side (torchaudio's
        ``lowpass_filter_width``).
    rolloff : float
        Cut-off as a fraction of the lower Nyquist frequency.

    Returns
    -------
    numpy.ndarray
        float32, ``ceil(S * sample_rate / orig_rate)`` samples.

    Example
    -------
    >>> resample_numpy(np.zeros(800, np.float32), 8000, 16000).shape
    (1600,)
    """
    signal = np.asarray(signal, dtype=np.float32)
    if orig_rate == sample_rate:
        return signal
    gcd = math.gcd(int(orig_rate), int(sample_rate))
    orig, new = int(orig_rate) // gcd, int(sample_rate) // gcd
    base = min(orig, new) * rolloff
    half = math.ceil(width * orig / base)
    idx = np.arange(-half, half + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -width, width)
    window = np.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = (kernel * window * base / orig).astype(np.float32)
    padded = np.pad(signal, (half, half + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[
        ::orig
    ]
    out = (frames @ kernel.T).reshape(-1)
    target = math.ceil(new * signal.size / orig)
    return np.ascontiguousarray(out[:target], dtype=np.float32)


def load_numpy(path, sample_rate=16000, start=0, stop=None):
    """``load_audio`` without torch: mono float32 NumPy samples of
    ``path`` at ``sample_rate`` (``resample_numpy``).

    Arguments
    ---------
    path : str or path-like
    sample_rate : int
    start, stop : int
        Region, in samples at the file's rate (``stop=None``: to the end).

    Returns
    -------
    numpy.ndarray
        [S] float32.
    """
    signal, rate = decoded(path, start, stop)
    return resample_numpy(signal, rate, sample_rate)


def window_starts(length, chunk, hop):
    """Start samples of the windows covering ``length`` samples.

    Arguments
    ---------
    length : int
        Samples of the utterance.
    chunk : int
        Window length (samples).
    hop : int
        Distance between window starts (samples).

    Returns
    -------
    list
        Starts; the last window ends at ``length`` (one window at 0 if the
        utterance is not longer than ``chunk``).

    Example
    -------
    >>> window_starts(10, 4, 3), window_starts(3, 4, 3)
    ([0, 3, 6], [0])
    """
    if length <= chunk:
        return [0]
    starts = list(range(0, length - chunk + 1, hop))
    if starts[-1] + chunk < length:
        starts.append(length - chunk)
    return starts
