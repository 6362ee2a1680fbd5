"""DVS128 Gesture, in Tonic's preprocessed release: ``ibmGestureTrain`` / ``ibmGestureTest``.

Each split is ``user<NN>_<lighting>/<label>.npy`` files of (x, y, p, t [ms]) rows, one per
gesture (IBM's AEDAT recordings already cut at the labels), extracted or as the
``ibmGesture{Train,Test}.tar.gz`` archives Tonic downloads from figshare. A folder is listed and
decoded by ``tonic.datasets.DVSGesture`` (made unable to download); an archive is streamed once.
IBM's original AEDAT 3.1 release is read too, as its extracted ``DvsGesture/`` folder
(:mod:`spikeopt.tasks.readers.aedat`); its ``DvsGesture.tar.gz`` must be extracted first.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spikeopt.tasks.readers.aedat import ORIGINAL, TRIALS, original_source
from spikeopt.tasks.readers.base import SPLITS, DataError, open_tar
from spikeopt.tasks.readers.events import (
    EventReader,
    EventSource,
    check_labels,
    make_events,
    offline,
)

GESTURE_URLS = {
    "train": "https://figshare.com/ndownloader/files/38022171",
    "test": "https://figshare.com/ndownloader/files/38020584",
}
GESTURE_PAGE = "https://research.ibm.com/interactive/dvsgesture/"
NAMES = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}
GESTURE_HINT = (
    "set data.root to a folder holding ibmGestureTrain/ and ibmGestureTest/ "
    "(user<NN>_<lighting>/<label>.npy) or ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz, "
    f"Tonic's release of DVS128 Gesture ({GESTURE_URLS['train']}, {GESTURE_URLS['test']}"
    f"), or IBM's original release extracted as {ORIGINAL}/ ({GESTURE_PAGE})"
)
MEMBER = re.compile(r"(?:.*/)?user\d+_[^/]+/(\d+)\.npy$")
N_CLASSES = 11


def gesture_files(root: Path) -> dict[str, Path]:
    """Each split's folder (preferred) or tarball under ``root``, or IBM's original folder for
    both; DataError naming any missing."""
    original = root / ORIGINAL if (root / ORIGINAL).is_dir() else root
    if all((original / t).is_file() for t in TRIALS.values()):
        return {split: original for split in SPLITS}
    if (root / f"{ORIGINAL}.tar.gz").is_file():
        raise DataError(
            f"{root / (ORIGINAL + '.tar.gz')}: extract it (tar xzf) so that {ORIGINAL}/ holds "
            "the .aedat recordings; the archive itself is not streamed"
        )
    found, missing = {}, []
    for split, name in NAMES.items():
        folder, tarball = root / name, root / f"{name}.tar.gz"
        path = folder if folder.is_dir() else tarball if tarball.is_file() else None
        if path is None:
            missing.append(f"{name}/ or {name}.tar.gz ({GESTURE_URLS[split]})")
        else:
            found[split] = path
    if missing:
        raise DataError(f"{root} is missing {', '.join(missing)}; {GESTURE_HINT}")
    return found


def _events(rows: np.ndarray, where: str) -> np.ndarray:
    """(x, y, p, t [ms]) rows -> events, as Tonic converts them (t to microseconds)."""
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise DataError(f"{where}: shape {rows.shape}, expected (events, 4) rows x, y, p, t")
    if len(rows) and (rows[:, :2].min() < 0 or rows[:, :2].max() >= 128):
        raise DataError(f"{where}: an event is off the 128x128 sensor; is this DVS Gesture?")
    return make_events(rows[:, 0], rows[:, 1], rows[:, 3].astype(np.float64) * 1000.0,
                       rows[:, 2] > 0)  # fmt: skip


def _load(raw: bytes | str, where: str) -> np.ndarray:
    try:
        return _events(np.load(io.BytesIO(raw) if isinstance(raw, bytes) else raw), where)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{where}: damaged .npy ({err}); {GESTURE_HINT}") from None


def _folder_source(root: Path, split: str) -> EventSource:
    from tonic.datasets import DVSGesture

    ds = offline(DVSGesture, root, GESTURE_HINT, train=split == "train")
    order = np.argsort(ds.data, kind="stable")  # Tonic lists in os.walk order: sort by path
    files = [ds.data[i] for i in order]
    labels = check_labels(np.asarray(ds.targets)[order], N_CLASSES, root / NAMES[split])

    def events(idx: np.ndarray) -> Iterator[np.ndarray]:
        for i in idx:
            yield _load(files[i], files[i])

    return EventSource(labels, events, tuple(DVSGesture.classes))


def _tar_source(path: Path) -> EventSource:
    """One pass over the tarball: every recording decoded, sorted by member name."""
    from tonic.datasets import DVSGesture

    found: dict[str, np.ndarray] = {}
    with open_tar(path) as tf:
        for m in tf:
            if m.isfile() and MEMBER.match(m.name):
                fh = tf.extractfile(m)
                found[m.name] = _load(fh.read() if fh else b"", f"{path}:{m.name}")
    names = sorted(found)
    labels = np.array([int(MEMBER.match(n).group(1)) for n in names], np.int64)  # type: ignore[union-attr]
    labels = check_labels(labels, N_CLASSES, path)

    def events(idx: np.ndarray) -> Iterator[np.ndarray]:
        for i in idx:
            yield found[names[i]]

    return EventSource(labels, events, tuple(DVSGesture.classes))


class DvsGestureReader(EventReader):
    """DVS Gesture: samples ``(T, 2, 32, 32)`` counts (the 128x128 sensor downsampled 4x)."""

    fmt = "dvsgesture"
    sensor = (128, 128, 2)
    window_ms = 6000.0  # the recordings last ~6 s
    downsample_default = 4
    hint = GESTURE_HINT

    def files(self, root: Path) -> list[Path]:
        """The two split folders or tarballs."""
        return [gesture_files(root)[s] for s in SPLITS]

    def source(self, root: Path, split: str) -> EventSource:
        """One split's labels and decoder."""
        path = gesture_files(root)[split]
        if (path / TRIALS[split]).is_file():
            return original_source(path, split)
        return _folder_source(root, split) if path.is_dir() else _tar_source(path)
