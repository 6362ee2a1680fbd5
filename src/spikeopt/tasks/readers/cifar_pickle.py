"""CIFAR-10 python batches: ``data_batch_1..5`` and ``test_batch``, in a folder or a tarball.

These are pickles, and a plain ``pickle.load`` runs whatever code a file names. They are read
with :class:`BatchUnpickler`, which builds only what the official batches hold (dicts, lists,
bytes and numpy arrays) and refuses every other global, so nothing in a file can run.
"""

from __future__ import annotations

import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from spikeopt.tasks.readers.base import (
    Arrays,
    DataError,
    Identity,
    is_tarball,
    make_arrays,
    need_root,
    open_tar,
)

PICKLE_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PICKLE_HINT = (
    "set data.root to cifar-10-python.tar.gz or a folder with data_batch_1..5 and test_batch"
)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]  # fmt: skip


def pickle_dir(root: Path) -> Path | None:
    """The folder holding ``data_batch_1``: ``root`` or ``root/cifar-10-batches-py``."""
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file():
            return d
    return None


def _missing_batches(root: Path, missing: list[str]) -> DataError:
    return DataError(
        f"{root} is missing the CIFAR-10 python batches {', '.join(missing)}; {PICKLE_HINT}"
    )


def pickle_inputs(root: Path) -> list[Path]:
    """The files a pickle dataset is read from (the tarball, or the six batch files)."""
    if is_tarball(root):
        return [root]
    folder = pickle_dir(root) or root
    missing = [n for n in PICKLE_BATCHES if not (folder / n).is_file()]
    if missing:  # checked up front, so a wrong folder fails before anything is read
        raise _missing_batches(root, missing)
    return [folder / n for n in PICKLE_BATCHES]


# The globals a CIFAR-10 batch needs: numpy's array/scalar reconstructors and dtype (under
# numpy 1's and 2's module names) and the codec that protocol-2 pickles use for bytes.
SAFE_GLOBALS = frozenset(
    [(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)  # fmt: skip


class UnsafePickle(pickle.UnpicklingError):
    """A pickle that names a global a CIFAR-10 batch never needs."""


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`SAFE_GLOBALS` (no code named by the file runs)."""

    def find_class(self, module: str, name: str) -> Any:
        """The global, when it is one a CIFAR-10 batch uses; else :class:`UnsafePickle`."""
        if (module, name) not in SAFE_GLOBALS:
            raise UnsafePickle(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(fh: Any, where: str) -> tuple[np.ndarray, list[int]]:
    # The official batches are Python 2 pickles, hence encoding="bytes"
    try:
        d = BatchUnpickler(fh, encoding="bytes").load()
    except UnsafePickle as err:
        raise DataError(
            f"{where}: refused to unpickle it: it asks for {err}, which no CIFAR-10 python batch "
            "uses (nothing in the file was run); point data.root at the official "
            "cifar-10-python.tar.gz or its cifar-10-batches-py folder"
        ) from None
    except Exception as err:  # unpickling fails in many ways; all mean "not a CIFAR batch"
        raise DataError(f"{where}: not a CIFAR-10 python batch ({err!r})") from None
    try:
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    except Exception as err:  # a safe pickle of something else: not a dict with image rows
        raise DataError(f"{where}: not a CIFAR-10 python batch ({err!r})") from None
    if labels is None or len(labels) != len(x):
        raise DataError(f"{where}: {len(x)} images but labels are {labels!r:.40}")
    return x, list(labels)


def read_cifar_pickle(root: Path) -> Arrays:
    """CIFAR-10 python batches from a folder or ``cifar-10-python.tar.gz`` (no code runs)."""
    batches: dict[str, tuple[np.ndarray, list[int]]] = {}
    if is_tarball(root):
        with open_tar(root) as tf:
            for m in tf:
                name = PurePosixPath(m.name).name
                fh = tf.extractfile(m) if m.isfile() and name in PICKLE_BATCHES else None
                if fh is not None:
                    batches[name] = _unpickle(fh, f"{root}:{m.name}")
    else:
        for path in pickle_inputs(root):
            with open(path, "rb") as fh:
                batches[path.name] = _unpickle(fh, str(path))
    missing = [n for n in PICKLE_BATCHES if n not in batches]
    if missing:
        raise _missing_batches(root, missing)
    train = [batches[n] for n in PICKLE_BATCHES[:5]]
    x_tr = np.concatenate([x for x, _ in train])
    y_tr = [label for _, ys in train for label in ys]
    return make_arrays(x_tr, y_tr, *batches["test_batch"], CIFAR10_CLASSES)


class CifarPickleReader:
    """The CIFAR-10 python-batch reader: ``data.root`` is the tarball or its folder."""

    needs_root = True

    def identity(self, root: Path | None) -> Identity:
        """The ``pickle`` format and the tarball or six batch files it reads."""
        return Identity(["pickle"], pickle_inputs(need_root(root, PICKLE_HINT)))

    def read(self, root: Path | None) -> Arrays:
        """All 50k training and 10k test images as uint8 (N, 3, 32, 32)."""
        return read_cifar_pickle(need_root(root, PICKLE_HINT))
