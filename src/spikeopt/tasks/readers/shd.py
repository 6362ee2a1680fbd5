"""Spiking Heidelberg Digits: ``shd_train.h5`` / ``shd_test.h5``, plain, .zip or .gz, in one folder.

The HDF5 layout (Cramer et al. 2020): ``spikes/times`` (seconds) and ``spikes/units`` (channel
0..699) as variable-length arrays, one per recording, ``labels`` (0..19) and optionally
``extra/keys`` (the class names). Read with h5py here rather than through ``tonic.datasets.SHD``:
Tonic's class reads only an unzipped file under ``<root>/SHD/`` and reopens it for every sample.
The events are converted as Tonic does (times to microseconds, polarity 1) and binned by its
``ToFrame``.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikeopt.tasks.readers.base import SPLITS, DataError
from spikeopt.tasks.readers.events import EventReader, EventSource, check_labels, make_events

SHD_URL = "https://zenkelab.org/datasets/"
SHD_PAGE = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"
SHD_HINT = (
    f"set data.root to a folder with shd_train.h5 and shd_test.h5 (or their .zip / .gz), "
    f"from {SHD_URL}shd_train.h5.zip and {SHD_URL}shd_test.h5.zip (see {SHD_PAGE})"
)
SHD_CHANNELS = 700
SHD_CLASSES = 20


def shd_files(root: Path) -> dict[str, Path]:
    """The train and test files under ``root``; DataError naming each one missing."""
    found, missing = {}, []
    for split in SPLITS:
        name = f"shd_{split}.h5"
        path = next((p for p in (root / name, root / f"{name}.zip", root / f"{name}.gz")
                     if p.is_file()), None)  # fmt: skip
        if path is None:
            missing.append(f"{name}[.zip|.gz] ({SHD_URL}{name}.zip)")
        else:
            found[split] = path
    if missing:
        raise DataError(f"{root} is missing {', '.join(missing)}; {SHD_HINT}")
    return found


def _open(path: Path) -> Any:
    """An open h5py file for a plain, zipped or gzipped SHD file (decompressed in memory)."""
    import h5py

    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".h5")]
                if not names:
                    raise DataError(f"{path}: no .h5 file inside this zip; {SHD_HINT}")
                return h5py.File(io.BytesIO(zf.read(names[0])), "r")
        if path.suffix == ".gz":
            with gzip.open(path) as fh:
                return h5py.File(io.BytesIO(fh.read()), "r")
        return h5py.File(path, "r")
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"{path}: damaged or not an SHD file ({err}); download it again: {SHD_HINT}"
        ) from None


def read_split(path: Path) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """Labels, per-recording spike times (s) and units, and class names of one SHD file."""
    with _open(path) as f:
        try:
            times, units = list(f["spikes/times"][:]), list(f["spikes/units"][:])
            labels = f["labels"][:]
            keys = f["extra/keys"][:] if "extra/keys" in f else None
        except KeyError as err:
            raise DataError(f"{path}: not an SHD file, {err}; it needs spikes/times, "
                            f"spikes/units and labels; {SHD_HINT}") from None  # fmt: skip
    if not len(times) == len(units) == len(labels):
        raise DataError(
            f"{path}: {len(times)} spike-time arrays, {len(units)} unit arrays and "
            f"{len(labels)} labels; a complete file has one of each per recording"
        )
    for u in units:
        if len(u) and (np.min(u) < 0 or np.max(u) >= SHD_CHANNELS):
            raise DataError(f"{path}: unit {np.max(u)} is not a channel 0-{SHD_CHANNELS - 1}")
    names = [k.decode() if isinstance(k, bytes) else str(k) for k in keys] if keys is not None \
        else [str(c) for c in range(SHD_CLASSES)]  # fmt: skip
    return check_labels(labels, len(names), path), times, units, names


class ShdReader(EventReader):
    """SHD: samples ``(T, 700)`` spike counts per 1-D cochlea channel and bin."""

    fmt = "shd"
    sensor = (SHD_CHANNELS, 1, 1)
    window_ms = 1000.0  # recordings last up to ~1.4 s; the digits' energy lies in the first 1 s
    hint = SHD_HINT

    def files(self, root: Path) -> list[Path]:
        """``shd_train.h5`` and ``shd_test.h5`` (plain, .zip or .gz)."""
        return list(shd_files(root).values())

    def source(self, root: Path, split: str) -> EventSource:
        """One SHD file's labels and its recordings as events."""
        labels, times, units, names = read_split(shd_files(root)[split])

        def events(idx: np.ndarray) -> Iterator[np.ndarray]:
            for i in idx:
                t = np.asarray(times[i], np.float64) * 1e6  # seconds -> microseconds, as Tonic
                yield make_events(units[i], np.zeros(len(t)), t, np.zeros(len(t)))

        return EventSource(labels, events, tuple(names))
