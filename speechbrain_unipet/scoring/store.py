"""Embedding stores: utterance ids plus a float32 matrix on disk.

A store is a folder that extraction writes once and scoring, AS-norm
cohorts, calibration and the command line read again:

* ``ids.txt``: one id per line (UTF-8);
* ``embeddings.npy``: float32 [N, D], row k is the embedding of line k;
* ``durations.npy``: float32 [N], seconds (NaN where unknown);
* ``meta.json``: how it was made (model, crops, gate means, ...).

Plain NumPy files and text, so that any tool reads them
(``numpy.load("embeddings.npy", mmap_mode="r")``). A store is written into
a temporary folder next to its place and renamed there: a killed or
failed write never leaves a half store.

Authors
 * speechbrain-unipet contributors 2026
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import torch

from speechbrain_unipet.utils.errors import UserError

FILES = ("ids.txt", "embeddings.npy", "durations.npy", "meta.json")


class EmbeddingStoreError(UserError, ValueError):
    """A store that cannot be used, naming the folder or id and the fix."""


class EmbeddingStore:
    """Ids, embeddings [N, D], durations [N] and a ``meta`` dict.

    Arguments
    ---------
    ids : list of str
        Unique ids (no whitespace at either end, no newline).
    embeddings : array_like
        [N, D] finite numbers (stored as float32).
    durations : array_like or None
        [N] seconds (None: unknown, NaN).
    meta : dict or None
        JSON-able description.
    folder : str or None
        Where it was loaded from (named in errors).

    Example
    -------
    >>> store = EmbeddingStore(["a", "b"], np.eye(2))
    >>> len(store), store.dim, "a" in store
    (2, 2, True)
    >>> store.rows(["b", "a"]).tolist()
    [1, 0]
    """

    def __init__(self, ids, embeddings, durations=None, meta=None, folder=None):
        self.folder = folder
        ids = [str(i) for i in ids]
        matrix = np.asarray(embeddings, dtype=np.float32)
        where = f" ({folder})" if folder else ""
        if not ids:
            raise EmbeddingStoreError(
                f"The embedding store{where} holds no embeddings: embed "
                "audio into it first (speechbrain-unipet embed)"
            )
        if matrix.ndim != 2:
            raise EmbeddingStoreError(
                f"Embeddings{where} must be a matrix [N, D], got shape "
                f"{matrix.shape}"
            )
        if matrix.shape[0] != len(ids):
            raise EmbeddingStoreError(
                f"The embedding store{where} has {len(ids)} ids but "
                f"{matrix.shape[0]} embedding rows: it is damaged; embed "
                "again into a new folder"
            )
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        if bad.size:
            raise EmbeddingStoreError(
                f"{bad.size} embedding(s){where} hold NaN or inf, e.g. "
                f"{[ids[i] for i in bad[:3]]}"
            )
        index = {}
        for k, uid in enumerate(ids):
            if uid in index:
                raise EmbeddingStoreError(
                    f"The id {uid!r} is in the store{where} twice (rows "
                    f"{index[uid]} and {k}); ids must be unique"
                )
            if uid != uid.strip() or "\n" in uid or not uid:
                raise EmbeddingStoreError(
                    f"Id {uid!r}{where}: ids may not be empty, contain a "
                    "newline or start/end with whitespace"
                )
            index[uid] = k
        if durations is None:
            durations = np.full(len(ids), np.nan, dtype=np.float32)
        durations = np.asarray(durations, dtype=np.float32).reshape(-1)
        if durations.shape[0] != len(ids):
            raise EmbeddingStoreError(
                f"{durations.shape[0]} durations for {len(ids)} ids{where}"
            )
        self.ids, self.embeddings, self.durations = ids, matrix, durations
        self.meta = dict(meta or {})
        self.index = index

    def __len__(self):
        return len(self.ids)

    def __contains__(self, uid):
        return uid in self.index

    def __repr__(self):
        return f"EmbeddingStore({len(self)} x {self.dim})"

    @property
    def dim(self):
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])

    def rows(self, ids, what="trial"):
        """Row indices of ``ids``.

        Arguments
        ---------
        ids : iterable of str
        what : str
            What the ids are, for the error (``trial``, ``enrolment``...).

        Returns
        -------
        numpy.ndarray
            int64 rows.

        Raises
        ------
        EmbeddingStoreError
            For ids absent from the store, naming them and the store.
        """
        ids = list(ids)
        missing = [i for i in ids if i not in self.index]
        if missing:
            unique = list(dict.fromkeys(missing))
            where = f" {self.folder}" if self.folder else ""
            raise EmbeddingStoreError(
                f"{len(unique)} {what} id(s) have no embedding in the "
                f"store{where}, e.g. {unique[:3]}: embed them into it "
                "(speechbrain-unipet embed), or check that the trial list "
                "and the store name utterances the same way (ids are paths "
                "relative to the audio folder, without extension)"
            )
        return np.fromiter(
            (self.index[i] for i in ids), dtype=np.int64, count=len(ids)
        )

    def vectors(self, ids=None):
        """Embeddings as a float32 tensor: all rows, or those of ``ids``.

        Arguments
        ---------
        ids : iterable of str or None

        Returns
        -------
        torch.Tensor
        """
        if ids is None:
            return torch.from_numpy(self.embeddings)
        return torch.from_numpy(self.embeddings[self.rows(ids)])

    def mean(self):
        """The mean embedding (e.g. of training utterances, subtracted
        before scoring).

        Returns
        -------
        torch.Tensor
            [D].
        """
        return torch.from_numpy(
            self.embeddings.mean(axis=0, dtype=np.float64)
        ).float()

    def save(self, folder):
        """Writes the store into ``folder`` (replacing a store there) through
        a temporary folder and a rename.

        Arguments
        ---------
        folder : str or pathlib.Path

        Example
        -------
        >>> out = getfixture("tmp_path") / "store"
        >>> EmbeddingStore(["a"], np.ones((1, 3))).save(out)
        >>> EmbeddingStore.load(out).embeddings.tolist()
        [[1.0, 1.0, 1.0]]
        """
        folder = pathlib.Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(
            tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent)
        )
        try:
            (tmp / "ids.txt").write_text(
                "".join(f"{i}\n" for i in self.ids), encoding="utf-8"
            )
            np.save(tmp / "embeddings.npy", self.embeddings)
            np.save(tmp / "durations.npy", self.durations)
            (tmp / "meta.json").write_text(
                json.dumps(self.meta, indent=2, default=str), encoding="utf-8"
            )
            old = None
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.folder = str(folder)

    @classmethod
    def load(cls, folder):
        """Reads a store folder.

        Arguments
        ---------
        folder : str or pathlib.Path

        Returns
        -------
        EmbeddingStore

        Raises
        ------
        EmbeddingStoreError
            A missing folder or file, an empty or damaged store.
        """
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise EmbeddingStoreError(
                f"No embedding store at {folder}: create it with "
                "speechbrain-unipet embed MODEL AUDIO " + str(folder)
            )
        missing = [f for f in FILES[:2] if not (folder / f).is_file()]
        if missing:
            raise EmbeddingStoreError(
                f"{folder} is not an embedding store (no {', '.join(missing)}"
                "), or it is empty: embed audio into it with "
                "speechbrain-unipet embed"
            )
        ids = (folder / "ids.txt").read_text(encoding="utf-8").splitlines()
        try:
            matrix = np.load(folder / "embeddings.npy", allow_pickle=False)
        except ValueError as err:
            raise EmbeddingStoreError(
                f"{folder / 'embeddings.npy'} is not a NumPy array file: {err}"
            ) from None
        durations = None
        if (folder / "durations.npy").is_file():
            durations = np.load(folder / "durations.npy", allow_pickle=False)
        meta = {}
        if (folder / "meta.json").is_file():
            meta = json.loads((folder / "meta.json").read_text("utf-8"))
        return cls(ids, matrix, durations, meta, folder=str(folder))

    @classmethod
    def from_dict(cls, mapping, durations=None, meta=None):
        """A store of ``id -> 1-D embedding``.

        Arguments
        ---------
        mapping : dict
        durations : dict or None
            id -> seconds.
        meta : dict or None

        Returns
        -------
        EmbeddingStore

        Example
        -------
        >>> EmbeddingStore.from_dict({"a": torch.ones(3)}).dim
        3
        """
        ids = list(mapping)
        if not ids:
            raise EmbeddingStoreError("No embeddings given")
        matrix = np.stack(
            [
                np.asarray(
                    v.detach().cpu().float() if hasattr(v, "detach") else v,
                    dtype=np.float32,
                ).reshape(-1)
                for v in mapping.values()
            ]
        )
        if durations is not None:
            durations = [durations.get(i, np.nan) for i in ids]
        return cls(ids, matrix, durations, meta)

    @classmethod
    def concat(cls, stores):
        """One store of several (ids must not repeat, dims must match).

        Arguments
        ---------
        stores : list of EmbeddingStore

        Returns
        -------
        EmbeddingStore

        Example
        -------
        >>> a = EmbeddingStore(["a"], np.ones((1, 2)))
        >>> EmbeddingStore.concat(
        ...     [a, EmbeddingStore(["b"], np.zeros((1, 2)))]
        ... ).ids
        ['a', 'b']
        """
        stores = list(stores)
        dims = {s.dim for s in stores}
        if len(dims) > 1:
            raise EmbeddingStoreError(
                "Stores of different embedding dimensions cannot be combined: "
                + ", ".join(
                    f"{s.folder or 'store'} has {s.dim}" for s in stores
                )
            )
        return cls(
            [i for s in stores for i in s.ids],
            np.concatenate([s.embeddings for s in stores]),
            np.concatenate([s.durations for s in stores]),
            stores[0].meta,
        )
