"""Datasets as tensors: ``load_dataset(cfg.data)`` -> :class:`Dataset`, plus image augmentation.

The pipeline is: pick the reader for ``cfg.name``/``cfg.source`` from the registry in
``readers/`` -> its decoded arrays, cached on disk as .npz keyed by what it read -> fixed
class-balanced subsets -> float32 tensors -> optional standardisation with training-set
statistics. The cache and subsets wrap every reader the same way, here. Nothing falls back to
synthetic data: a missing or unreadable dataset is a :class:`DataError` that says how to provide it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from spikeopt.config import ConfigError, DataConfig, check_choices
from spikeopt.tasks.readers import (
    DATASET_READERS,
    READERS,
    SPLITS,
    Arrays,
    DataError,
    EventReader,
    Reader,
    SubsetReader,
)

__all__ = ["AUGMENTATIONS", "CACHE_VERSION", "DATASETS", "EVENT_DATASETS", "DataError", "Dataset",
           "as_signal",
           "augment", "cache_dir", "load_dataset", "standardize", "subset_indices"]  # fmt: skip

DATASETS: tuple[str, ...] = tuple(DATASET_READERS)  # digits, mnist1d, ..., cifar10, shd, ...
EVENT_DATASETS = tuple(n for n, c in DATASET_READERS.items()
                       if isinstance(READERS[c.readers[0]], EventReader))  # fmt: skip
CIFAR_SOURCES = DATASET_READERS["cifar10"].sources  # auto, pickle, folder, hf
AUGMENTATIONS = ("none", "flip", "flip-crop")
CACHE_VERSION = 1  # bump when a reader's output changes, so old cache entries are never used


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one classification dataset."""

    name: str
    x_train: torch.Tensor  # float32, (N, C, H, W) images, (N, L) sequences or (N, T, ...) frames
    y_train: torch.Tensor  # int64 class indices
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    sequence: bool  # True when the last axis of a sample is time (MNIST-1D)
    frames: bool = False  # True when the first axis of a sample is time (binned event frames)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])


def as_signal(data: Dataset) -> Dataset:
    """Vector samples (L,) as one-channel 1-D signals (1, 1, L), the shape conv layers take."""
    return dataclasses.replace(
        data, x_train=data.x_train[:, None, None, :], x_test=data.x_test[:, None, None, :]
    )


def load_dataset(cfg: DataConfig, steps: int = 0) -> Dataset:
    """Load ``cfg.name`` as float32 tensors, subset and normalised as ``cfg`` asks; event
    recordings binned into ``steps`` frames (``encoder.steps``)."""
    try:
        check_choices(cfg)
    except ConfigError as err:  # a dataset that cannot be named fails like one not found
        raise DataError(str(err)) from None
    arrays = _read(cfg, steps)
    for split in SPLITS:
        if len(arrays[f"x_{split}"]) == 0:
            where = f" at {cfg.root}" if cfg.root else ""
            raise DataError(
                f"the {cfg.name} {split} split{where} holds 0 samples; point data.root at "
                "files that hold the dataset"
            )
    # when the reader already decoded only the subset, this picks all of it: the identity
    picks = {s: subset_indices(arrays[f"y_{s}"], _n(cfg, s), cfg.subset_seed, s)
             for s in SPLITS}  # fmt: skip
    arrays = _take(arrays, picks)
    x_train, x_test = _to_float(arrays["x_train"]), _to_float(arrays["x_test"])
    if cfg.normalize:
        x_train, x_test = standardize(x_train, x_test)
    return Dataset(
        name=cfg.name,
        x_train=x_train,
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        n_classes=len(arrays["classes"]),
        sequence=cfg.name == "mnist1d",
        frames=cfg.name in EVENT_DATASETS,
    )


# ---------------------------------------------------------------- locating and reading


def _read(cfg: DataConfig, steps: int) -> Arrays:
    """Decoded arrays for ``cfg``, from the cache when the reader's input is unchanged."""
    reader, root = _reader(cfg)
    if isinstance(reader, EventReader):  # the binning is part of what it reads (and caches)
        reader = reader.configured(steps, cfg.window, cfg.downsample)
    ident = reader.identity(root)
    key = [cfg.name, *ident.key]
    full = cache_path(cfg, key, ident.files)
    # the whole dataset, cached or from a reader that cannot pick, serves every subset
    if not isinstance(reader, SubsetReader) or not (cfg.n_train or cfg.n_test) or full.is_file():
        return _cached(full, lambda: reader.read(root))

    # A reader that can decode only the subset does (60k JPEGs take ~15 s); its own cache entry
    def pick(split: str, y: np.ndarray) -> np.ndarray:
        return subset_indices(y, _n(cfg, split), cfg.subset_seed, split)

    subset = [*key, "subset", cfg.n_train, cfg.n_test, cfg.subset_seed]
    return _cached(cache_path(cfg, subset, ident.files), lambda: reader.read_subset(root, pick))


def _reader(cfg: DataConfig) -> tuple[Reader, Path | None]:
    """The registered reader for ``cfg.name`` (and ``cfg.source``), and the root it reads."""
    choice = DATASET_READERS[cfg.name]
    source = choice.readers[0]  # a dataset with one reader ignores data.source
    if len(choice.readers) > 1:
        if cfg.source not in choice.sources:
            valid = ", ".join(choice.sources)
            raise DataError(f"unknown data.source={cfg.source!r}; valid: {valid}")
        source = cfg.source
    if source != "auto" and not READERS[source].needs_root:
        return READERS[source], None
    root = _root(cfg, choice.hint)
    if source == "auto" and choice.detect is not None:
        source = choice.detect(root)
    return READERS[source], root


def _root(cfg: DataConfig, hint: str) -> Path:
    if not cfg.root:
        raise DataError(f"data.name={cfg.name} needs data.root: {hint}")
    root = Path(cfg.root).expanduser().resolve()
    if not root.exists():
        raise DataError(f"data.root={cfg.root} does not exist; {hint}")
    return root


def _n(cfg: DataConfig, split: str) -> int:
    return int(cfg.n_train if split == "train" else cfg.n_test)


def _to_float(x: np.ndarray) -> torch.Tensor:
    # images are cached as uint8 (4x smaller than float32) and scaled to [0, 1] here
    out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype == np.uint8:
        out /= 255.0  # in place: a full CIFAR-10 float copy is 0.7 GB
    return torch.from_numpy(out)


# ---------------------------------------------------------------- disk cache


def cache_dir(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``$SPIKEOPT_CACHE``, else ``~/.cache/spikeopt``."""
    default = Path.home() / ".cache" / "spikeopt"
    return Path(cfg.cache_dir or os.environ.get("SPIKEOPT_CACHE") or default).expanduser()


def _fingerprint(paths: list[Path]) -> list[Any]:
    """Path, size and mtime of every file read, so a changed or replaced file is re-read."""
    out: list[Any] = []
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            st = f.stat()
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def cache_path(cfg: DataConfig, key: list[Any], paths: list[Path]) -> Path:
    """The .npz file caching the arrays identified by ``key`` and the files in ``paths``."""
    ident = json.dumps([CACHE_VERSION, key, _fingerprint(paths)], sort_keys=True, default=str)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_dir(cfg) / f"{key[0]}-{key[1]}-{digest}.npz"


def _cached(path: Path, read: Callable[[], Arrays]) -> Arrays:
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # a damaged entry (e.g. disk full earlier) is simply read again
    arrays = read()
    _write_atomic(path, arrays)
    return arrays


def _write_atomic(path: Path, arrays: Arrays) -> None:
    # temp file in the same folder + os.replace: readers never see a half-written entry
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **cast(dict[str, Any], arrays))  # cast: numpy stubs mistype **kw
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache dir needs read access
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache costs speed, not correctness
        warnings.warn(f"could not write the dataset cache {path}: {err}", stacklevel=3)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- subsets and normalisation


def subset_indices(y: np.ndarray, n: int, seed: int, split: str = "train") -> np.ndarray:
    """Sorted indices of a fixed class-balanced subset of ``n`` samples (all when n <= 0).

    Classes get equal shares; the remainder goes to classes in a seed-chosen order, and a
    class with too few samples passes its shortfall on to the others.
    """
    if n <= 0:
        return np.arange(len(y))
    if n > len(y):
        raise DataError(f"data.n_{split}={n} but the {split} split has only {len(y)} samples")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    classes, counts = np.unique(y, return_counts=True)
    quota = np.zeros_like(counts)
    order = rng.permutation(len(classes))
    left = n
    while left:
        open_ = order[quota[order] < counts[order]]
        share = left // len(open_)
        if share == 0:
            quota[open_[:left]] += 1
            break
        add = np.minimum(share, counts[open_] - quota[open_])
        quota[open_] += add
        left -= int(add.sum())
    picks = [rng.choice(np.flatnonzero(y == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def _take(arrays: Arrays, idx: dict[str, np.ndarray]) -> Arrays:
    out = dict(arrays)
    for split, i in idx.items():
        out[f"x_{split}"], out[f"y_{split}"] = arrays[f"x_{split}"][i], arrays[f"y_{split}"][i]
    return out


def standardize(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise both splits with the training set's mean/std: per channel for (N, C, H, W),
    one scalar for (N, L)."""
    dims = (0, 2, 3) if x_train.ndim == 4 else tuple(range(x_train.ndim))
    mean = x_train.mean(dims, keepdim=True)
    std = x_train.std(dims, keepdim=True).clamp_min(1e-8)  # a constant input stays finite
    return (x_train - mean) / std, (x_test - mean) / std


# ---------------------------------------------------------------- augmentation


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip ('flip'), plus a 4-pixel zero-pad random crop ('flip-crop').

    ``x`` is a batch (B, C, H, W); every random draw comes from ``generator``, so the same
    generator state gives the same output. 'none' returns ``x`` unchanged.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown data.augment={kind!r}; valid: {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return x
    if x.ndim != 4:
        raise ValueError(f"data.augment={kind} needs image batches (B, C, H, W), got {x.shape}")
    b, c, h, w = x.shape
    dev = generator.device  # draw on the generator's device, then move: same numbers anywhere
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if kind == "flip-crop":
        pad = 4
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        top = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
        left = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
        # per-sample windows as two gathers: rows first, then columns
        rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        x = padded.gather(2, rows.expand(b, c, h, w + 2 * pad))
        cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = x.gather(3, cols.expand(b, c, h, w))
    return x
