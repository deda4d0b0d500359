"""The utterances an extraction embeds: from prepared CSV rows, a folder of
audio, or a list file, each with its crop and duration.

Authors
 * speechbrain-unipet contributors 2026
"""

import pathlib

from speechbrain_unipet.data.layouts import AUDIO_EXTENSIONS, audio_files
from speechbrain_unipet.data.preparation import read_csv_rows
from speechbrain_unipet.data.shards import is_shard_folder, shard_recordings
from speechbrain_unipet.evaluation.extraction import ExtractionError


class Utterance:
    """One utterance to embed.

    Arguments
    ---------
    id : str
        Its id in the store (trial lists name it).
    path : str
        The audio file.
    start, stop : int
        Region in samples at the file's own rate (``stop=None``: to the
        end), as the data-preparation CSVs store it.
    duration : float or None
        Seconds, for length bucketing (None: read from the header).

    Example
    -------
    >>> Utterance("spk1/a", "/data/spk1/a.wav", duration=3.5)
    Utterance('spk1/a', '/data/spk1/a.wav', 0, None)
    """

    __slots__ = ("id", "path", "start", "stop", "duration")

    def __init__(self, id, path, start=0, stop=None, duration=None):
        self.id, self.path = str(id), str(path)
        self.start, self.stop = int(start), None if stop is None else int(stop)
        self.duration = duration

    def __repr__(self):
        return (
            f"Utterance({self.id!r}, {self.path!r}, {self.start}, {self.stop})"
        )


def utterances_from_rows(rows):
    """Utterances of data-preparation CSV rows (``ID``, ``wav``, ``start``,
    ``stop``, ``duration``).

    Arguments
    ---------
    rows : iterable of dict
        CSV rows, e.g. from ``speechbrain_unipet.data.preparation.read_csv_rows``.

    Returns
    -------
    list of Utterance

    Example
    -------
    >>> row = {"ID": "a", "wav": "a.wav", "start": "0", "stop": "16000"}
    >>> utterances_from_rows([dict(row, duration="1.0")])
    [Utterance('a', 'a.wav', 0, 16000)]
    """
    return [
        Utterance(
            r["ID"],
            r["wav"],
            int(r["start"]),
            int(r["stop"]),
            float(r["duration"]) if r.get("duration") else None,
        )
        for r in rows
    ]


def utterances_from_folder(folder):
    """Every audio file under ``folder``, its id the relative path without
    the extension (``id10270/x6uYqmx31kE/00001``, as VoxCeleb trial lists
    name utterances).

    Arguments
    ---------
    folder : str or pathlib.Path
        A folder of audio files (any depth).

    Returns
    -------
    list of Utterance
        Sorted by id.

    Example
    -------
    >>> import soundfile
    >>> import numpy as np
    >>> root = getfixture("tmp_path")
    >>> (root / "spk1").mkdir()
    >>> soundfile.write(root / "spk1" / "a.wav", np.zeros(800), 16000)
    >>> utterances_from_folder(root)
    [Utterance('spk1/a', '.../spk1/a.wav', 0, None)]
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ExtractionError(f"{folder} is not a folder")
    found = [Utterance(uid, path) for uid, path in audio_files(folder)]
    if not found:
        raise ExtractionError(
            f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}"
        )
    return found


def utterances_from_list(path):
    """Utterances of a list file: one ``path`` or ``id path`` per line
    (Kaldi's ``wav.scp`` without pipes). Relative paths are relative to the
    list's folder; a bare path's id is the path without the extension.

    Arguments
    ---------
    path : str or pathlib.Path
        The list file.

    Returns
    -------
    list of Utterance

    Example
    -------
    >>> lst = getfixture("tmp_path") / "list.txt"
    >>> _ = lst.write_text("spk1/a.wav\\nb /x/b.flac\\n")
    >>> [
    ...     (u.id, u.path.endswith("spk1/a.wav"))
    ...     for u in utterances_from_list(lst)
    ... ]
    [('spk1/a', True), ('b', False)]
    """
    path = pathlib.Path(path)
    base = path.parent
    utterances, seen = [], {}
    for lineno, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), 1
    ):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) == 1:
            uid, audio = (
                pathlib.PurePath(parts[0]).with_suffix("").as_posix(),
                parts[0],
            )
        elif len(parts) == 2:
            uid, audio = parts
        else:
            raise ExtractionError(
                f"{path}:{lineno}: expected 'path' or 'id path', got "
                f"{line.strip()!r} (paths with spaces are not supported)"
            )
        if audio.endswith("|"):
            raise ExtractionError(
                f"{path}:{lineno}: piped commands are not supported; "
                "convert the audio to files first"
            )
        if uid in seen:
            raise ExtractionError(
                f"{path}:{lineno}: the id {uid!r} is already on line "
                f"{seen[uid]}; ids must be unique"
            )
        seen[uid] = lineno
        audio_path = pathlib.Path(audio)
        if not audio_path.is_absolute():
            audio_path = base / audio_path
        utterances.append(Utterance(uid, audio_path))
    if not utterances:
        raise ExtractionError(f"{path} lists no audio files")
    return utterances


def utterances_from_shards(folder):
    """The utterances of a shard folder (``make_shards``), as the regions
    of the files they were made from (their ids, and the keys a resumed
    extraction matches); ``extract(..., shards=folder)`` reads their audio
    from the shards.

    Arguments
    ---------
    folder : str or pathlib.Path

    Returns
    -------
    list of Utterance
    """
    recordings, probes = shard_recordings(folder)
    return [
        Utterance(r.uid, r.path, p.start, p.stop, (p.stop - p.start) / p.rate)
        for r, p in zip(recordings, probes, strict=True)
    ]


def read_utterances(source):
    """Utterances of a folder of audio, a shard folder, a list file, or a
    data-preparation CSV (chosen by what ``source`` is).

    Arguments
    ---------
    source : str or pathlib.Path

    Returns
    -------
    list of Utterance

    Example
    -------
    >>> lst = getfixture("tmp_path") / "list.txt"
    >>> _ = lst.write_text("a.wav\\n")
    >>> read_utterances(lst)[0].id
    'a'
    """
    source = pathlib.Path(source)
    if is_shard_folder(source):
        return utterances_from_shards(source)
    if source.is_dir():
        return utterances_from_folder(source)
    if not source.is_file():
        raise ExtractionError(
            f"{source} does not exist: give a folder of audio files, a list "
            "file ('path' or 'id path' per line) or a prepared CSV"
        )
    if source.suffix.lower() == ".csv":
        return utterances_from_rows(
            read_csv_rows(source, ["ID", "wav", "start", "stop"])
        )
    return utterances_from_list(source)
