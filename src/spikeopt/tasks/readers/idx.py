"""MNIST and Fashion-MNIST: the four IDX files, each plain or gzipped, in one folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from spikeopt.tasks.readers.base import SPLITS, Arrays, DataError, Identity, make_arrays, need_root

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_HINT = "set data.root to a folder with the IDX files " + ", ".join(
    f"{n}[.gz]" for n in IDX_FILES.values()
)


def idx_files(root: Path) -> dict[str, Path]:
    """The four IDX files in ``root`` (each plain or .gz); DataError naming any missing."""
    found, missing = {}, []
    for key, name in IDX_FILES.items():
        candidates = [root / name, root / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{name}[.gz]")
        else:
            found[key] = path
    if missing:
        raise DataError(f"{root} is missing {', '.join(missing)}; {IDX_HINT}")
    return found


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file of unsigned bytes with ``ndim`` dimensions, every header field checked."""
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip raises these for truncated or non-gzip data
        raise DataError(f"{path}: cannot decompress ({err}); is it a complete .gz file?") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated, {len(raw)} bytes is shorter than the IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:  # 0x08 = unsigned byte, then the number of dimensions
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x} "
            f"(IDX unsigned bytes, {ndim}-d); is this the right file?"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise DataError(f"{path}: {what}, {len(raw)} bytes but dimensions {dims} need {expected}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx(files: dict[str, Path]) -> Arrays:
    """MNIST-style IDX files -> uint8 (N, 1, 28, 28) images and their labels."""
    out = {}
    for split in SPLITS:
        x = _read_idx(files[f"x_{split}"], 3)
        y = _read_idx(files[f"y_{split}"], 1)
        if x.shape[1:] != (28, 28):
            raise DataError(f"{files[f'x_{split}']}: images are {x.shape[1:]}, expected 28x28")
        if len(x) != len(y):
            raise DataError(
                f"{files[f'x_{split}']} has {len(x)} images but "
                f"{files[f'y_{split}']} has {len(y)} labels"
            )
        if y.size and y.max() > 9:
            raise DataError(f"{files[f'y_{split}']}: label {y.max()} is not a class 0-9")
        out[split] = (x[:, None], y)
    return make_arrays(*out["train"], *out["test"], [str(c) for c in range(10)])


class IdxReader:
    """The IDX reader: ``data.root`` is the folder holding the four files."""

    needs_root = True

    def identity(self, root: Path | None) -> Identity:
        """The ``idx`` format and its four files (checked up front, before anything is read)."""
        return Identity(["idx"], list(idx_files(need_root(root, IDX_HINT)).values()))

    def read(self, root: Path | None) -> Arrays:
        """Both splits of the IDX files under ``root``."""
        return read_idx(idx_files(need_root(root, IDX_HINT)))
