"""N-MNIST: the ``Train`` and ``Test`` folders of ``<digit>/<n>.bin`` files, or their zips.

Each .bin file is Orchard et al.'s 40-bit event format (x, y, polarity and a 23-bit
microsecond timestamp, with overflow events); an extracted folder is listed and decoded by
``tonic.datasets.NMNIST`` (made unable to download), a zip's members by ``tonic.io``'s
``read_mnist_file``. The 34x34 two-polarity events are binned by Tonic's ``ToFrame``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spikeopt.tasks.readers.base import SPLITS, DataError
from spikeopt.tasks.readers.events import (
    EventReader,
    EventSource,
    check_labels,
    make_events,
    offline,
)

NMNIST_PAGE = "https://www.garrickorchard.com/datasets/n-mnist"
NMNIST_MIRROR = "https://data.mendeley.com/datasets/468j46mzdv/1"
NMNIST_HINT = (
    "set data.root to a folder holding N-MNIST's Train/ and Test/ folders (Train/<digit>/*.bin) "
    f"or Train.zip and Test.zip, from {NMNIST_PAGE} (mirror: {NMNIST_MIRROR})"
)
FOLDERS = {"train": "Train", "test": "Test"}
MEMBER = re.compile(r"(?:.*/)?(?:Train|Test)/([0-9])/[^/]+\.bin$", re.IGNORECASE)


def nmnist_files(root: Path) -> dict[str, Path]:
    """Each split's folder (preferred) or zip under ``root``, any letter case."""
    entries = {p.name.lower(): p for p in root.iterdir()} if root.is_dir() else {}
    found, missing = {}, []
    for split, name in FOLDERS.items():
        # the extracted folder as the archives name it (Tonic lists it so), or the zip, any case
        path = root / name if (root / name).is_dir() else entries.get(f"{name.lower()}.zip")
        if path is None:
            missing.append(f"{name}/ or {name}.zip")
        else:
            found[split] = path
    if missing:
        raise DataError(f"{root} is missing {', '.join(missing)}; {NMNIST_HINT}")
    return found


def _zip_source(path: Path) -> EventSource:
    from tonic.datasets import NMNIST
    from tonic.io import read_mnist_file

    try:
        zf = zipfile.ZipFile(path)
        members = sorted(n for n in zf.namelist() if MEMBER.match(n))
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: damaged zip ({err}); download it again: {NMNIST_HINT}") from None
    labels = np.array([int(MEMBER.match(n).group(1)) for n in members], np.int64)  # type: ignore[union-attr]

    def events(idx: np.ndarray) -> Iterator[np.ndarray]:
        with zf:
            for i in idx:
                try:
                    raw = zf.read(members[i])
                except (OSError, zipfile.BadZipFile, EOFError) as err:
                    raise DataError(f"{path}: {members[i]} is damaged ({err}); "
                                    f"download it again: {NMNIST_HINT}") from None  # fmt: skip
                where = f"{path}:{members[i]}"
                _check_size(len(raw), where)
                yield _checked(
                    read_mnist_file(io.BytesIO(raw), NMNIST.dtype, is_stream=True), where
                )

    return EventSource(labels, events, tuple(NMNIST.classes))


def _check_size(size: int, where: str) -> None:
    """Refuse a file that is not a whole number of 40-bit events (a truncated download)."""
    if size % 5:
        raise DataError(f"{where}: {size} bytes is not a whole number of 5-byte (40-bit) "
                        f"N-MNIST events; the file is truncated: {NMNIST_HINT}")  # fmt: skip


def _checked(ev: np.ndarray, where: str) -> np.ndarray:
    """``ev`` as (x, y, t, p) events, refusing events off the 34x34 sensor."""
    if len(ev) and (ev["x"].max() >= 34 or ev["y"].max() >= 34):
        raise DataError(f"{where}: event at x={ev['x'].max()}, y={ev['y'].max()} is off the "
                        "34x34 sensor; is this an N-MNIST file?")  # fmt: skip
    return make_events(ev["x"], ev["y"], ev["t"], ev["p"])


def _folder_source(root: Path, folder: Path) -> EventSource:
    from tonic.datasets import NMNIST
    from tonic.io import read_mnist_file

    ds = offline(NMNIST, root, NMNIST_HINT, train=folder.name == "Train")
    files = [Path(p) for p in ds.data]
    labels = check_labels(np.asarray(ds.targets), 10, folder)

    def events(idx: np.ndarray) -> Iterator[np.ndarray]:
        for i in idx:
            _check_size(files[i].stat().st_size, str(files[i]))
            yield _checked(read_mnist_file(str(files[i]), NMNIST.dtype), str(files[i]))

    return EventSource(labels, events, tuple(NMNIST.classes))


class NmnistReader(EventReader):
    """N-MNIST: samples ``(T, 2, 34, 34)`` event counts per polarity, pixel and bin."""

    fmt = "nmnist"
    sensor = (34, 34, 2)
    window_ms = 300.0  # three ~100 ms saccades: the length of every recording
    hint = NMNIST_HINT

    def files(self, root: Path) -> list[Path]:
        """The Train and Test folders or zips."""
        return [nmnist_files(root)[s] for s in SPLITS]

    def source(self, root: Path, split: str) -> EventSource:
        """One split's labels (from the folder names) and decoder."""
        path = nmnist_files(root)[split]
        return _folder_source(root, path) if path.is_dir() else _zip_source(path)
