"""What every reader shares: the :class:`Reader` protocol, :data:`Arrays`, :class:`DataError`.

A reader turns one on-disk or remote format into plain numpy :data:`Arrays`: ``x_train``/
``x_test`` as uint8 ``(N, C, H, W)`` images (or float ``(N, L)`` sequences), ``y_train``/
``y_test`` as int64 class indices and ``classes`` as the class names. It also says what
identifies its input (:class:`Identity`), so the loader in ``datasets.py`` can cache its output;
scaling, subsets and the cache itself live there, once, around every reader.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class DataError(RuntimeError):
    """A dataset that is missing, unreachable or malformed; the message says how to provide it."""


Arrays = dict[str, np.ndarray]
# (split, labels in file order) -> indices of the samples to decode, in the order to keep them
Pick = Callable[[str, np.ndarray], np.ndarray]

SPLITS = ("train", "test")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class Identity(NamedTuple):
    """What a reader's output depends on: cache-key parts and the files it reads."""

    key: list[Any]  # the format first (it names the cache file), e.g. ["generated", pkg, version]
    files: list[Path]  # fingerprinted by size and mtime, so a changed file is read again


class Reader(Protocol):
    """Reads one format into :data:`Arrays`; ``root`` is None for a reader that reads no files."""

    needs_root: bool  # whether it reads files under data.root

    def identity(self, root: Path | None) -> Identity:
        """Cache identity of the input at ``root``; DataError when its files are missing."""
        ...

    def read(self, root: Path | None) -> Arrays:
        """Every sample of both splits."""
        ...


@runtime_checkable
class SubsetReader(Reader, Protocol):
    """A reader that can decode only the samples a subset keeps (a big image archive)."""

    def read_subset(self, root: Path | None, pick: Pick) -> Arrays:
        """The samples ``pick`` chooses from each split's labels, decoding no others."""
        ...


def make_arrays(x_tr: np.ndarray, y_tr: Any, x_te: np.ndarray, y_te: Any, classes: Any) -> Arrays:
    """Both splits and the class names as :data:`Arrays`, labels as int64."""
    y_train, y_test = np.asarray(y_tr, np.int64), np.asarray(y_te, np.int64)
    return {"x_train": x_tr, "y_train": y_train, "x_test": x_te, "y_test": y_test,
            "classes": np.asarray(classes, dtype=str)}  # fmt: skip


def need_root(root: Path | None, hint: str) -> Path:
    """``root``, or a DataError saying how to provide it when there is none."""
    if root is None:  # the loader checks first; this guards a reader called on its own
        raise DataError(f"no data.root given; {hint}")
    return root


def is_tarball(path: Path) -> bool:
    """A file whose name says it is a (gzipped) tar archive."""
    return path.is_file() and path.name.endswith(TAR_SUFFIXES)


@contextmanager
def open_tar(root: Path) -> Iterator[tarfile.TarFile]:
    """Stream a tarball once, front to back (no extraction); corrupt archives -> DataError."""
    try:
        with tarfile.open(root, "r|*") as tf:
            yield tf
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{root}: unreadable tarball ({err}); is the file complete?") from None
