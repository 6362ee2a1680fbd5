"""CIFAR-10 python batches: ``data_batch_1..5`` and ``test_batch``, in a folder or a tarball.

These are pickles: reading them runs whatever code they contain, so only point ``data.root``
at the official files or others you trust.
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


def _unpickle(fh: Any, where: str) -> tuple[np.ndarray, list[int]]:
    # The official batches are Python 2 pickles, hence encoding="bytes"
    try:
        d = pickle.load(fh, encoding="bytes")
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    except Exception as err:  # unpickling fails in many ways; all mean "not a CIFAR batch"
        raise DataError(f"{where}: not a CIFAR-10 python batch ({err!r})") from None
    if labels is None or len(labels) != len(x):
        raise DataError(f"{where}: {len(x)} images but labels are {labels!r:.40}")
    return x, list(labels)


def read_cifar_pickle(root: Path) -> Arrays:
    """CIFAR-10 python batches from a folder or ``cifar-10-python.tar.gz`` (trusted files only)."""
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
