"""IBM's original DVS128 Gesture release: AEDAT 3.1 recordings cut at their label files.

The extracted ``DvsGesture/`` folder holds ``user<NN>_<lighting>.aedat`` recordings, beside each
a ``user<NN>_<lighting>_labels.csv`` (``class,startTime_usec,endTime_usec``, classes 1..11), and
``trials_to_train.txt`` / ``trials_to_test.txt`` listing the recordings of each split (Amir et
al. 2017). Every labelled interval is one sample, its events timed from the interval's start.

AEDAT 3.1 (iniVation's format): ``#``-prefixed text header lines up to ``#!END-HEADER``, then
packets of a 28-byte little-endian header (int16 type, int16 source, int32 event size, int32
timestamp offset, int32 timestamp overflow, int32 capacity, int32 number, int32 valid) and
``capacity`` events of ``event size`` bytes. Polarity events (type 1) are ``uint32 data,
int32 timestamp [us]``: bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x; a timestamp's
high bits are ``overflow << 31``. Other packet types are skipped. (``tonic.io.read_dvs_ibm``
would do this, but in Tonic 1.6 it unpacks its header reader's three values into two.)
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spikeopt.tasks.readers.base import DataError
from spikeopt.tasks.readers.events import EventSource, check_labels, make_events

ORIGINAL = "DvsGesture"
TRIALS = {"train": "trials_to_train.txt", "test": "trials_to_test.txt"}
HEADER = struct.Struct("<hhiiiiii")
POLARITY = np.dtype([("data", "<u4"), ("t", "<i4")])
N_CLASSES = 11


def read_aedat31(path: Path) -> np.ndarray:
    """The valid polarity events of one AEDAT 3.1 file, as spikeopt's event array."""
    raw = path.read_bytes()
    end = raw.find(b"#!END-HEADER")
    if not raw.startswith(b"#!AER-DAT3") or end < 0:
        raise DataError(f"{path}: not an AEDAT 3.x file (no #!AER-DAT3 ... #!END-HEADER header)")
    pos = raw.index(b"\n", end) + 1
    parts = []
    while pos + HEADER.size <= len(raw):
        kind, _, size, _, overflow, capacity, _, _ = HEADER.unpack_from(raw, pos)
        pos += HEADER.size
        body = size * capacity
        if size <= 0 or capacity < 0 or pos + body > len(raw):
            raise DataError(f"{path}: truncated or damaged packet at byte {pos - HEADER.size}")
        if kind == 1 and size == POLARITY.itemsize:
            ev = np.frombuffer(raw, POLARITY, capacity, pos)
            ev = ev[(ev["data"] & 1) == 1]
            t = (np.int64(overflow) << 31) | ev["t"].astype(np.int64)
            parts.append(
                (ev["data"] >> 17 & 0x1FFF, ev["data"] >> 2 & 0x1FFF, t, ev["data"] >> 1 & 1)
            )
        pos += body
    if not parts:
        return make_events([], [], [], [])
    x, y, t, p = (np.concatenate(c) for c in zip(*parts))
    return make_events(x, y, t, p)


def _intervals(csv_path: Path) -> list[tuple[int, int, int]]:
    """(label 0..10, start us, end us) rows of one labels file."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path} is missing: every recording needs its _labels.csv")
    rows = []
    with csv_path.open(newline="") as fh:
        for row in csv.reader(fh):
            if not row or not row[0].strip().isdigit():
                continue  # the header line
            try:
                cls, start, end = (int(v) for v in row[:3])
            except ValueError:
                raise DataError(f"{csv_path}: bad row {row}; expected class,start,end") from None
            rows.append((cls - 1, start, end))
    return rows


def original_source(folder: Path, split: str) -> EventSource:
    """One split of the extracted original release: a sample per labelled interval."""
    listing = folder / TRIALS[split]
    if not listing.is_file():
        raise DataError(f"{folder} is missing {TRIALS[split]} (IBM's DvsGesture release)")
    trials = [n.strip() for n in listing.read_text().split() if n.strip().endswith(".aedat")]
    samples: list[tuple[Path, int, int]] = []
    labels = []
    for name in trials:
        rec = folder / name
        if not rec.is_file():
            raise DataError(f"{rec} is missing ({TRIALS[split]} lists it)")
        for label, start, end in _intervals(folder / name.replace(".aedat", "_labels.csv")):
            samples.append((rec, start, end))
            labels.append(label)
    checked = check_labels(np.array(labels, np.int64), N_CLASSES, listing)

    def events(idx: np.ndarray) -> Iterator[np.ndarray]:
        last: tuple[Path | None, np.ndarray | None] = (None, None)
        for i in idx:  # sorted, so each recording is decoded once
            rec, start, end = samples[i]
            if last[0] != rec:
                last = (rec, read_aedat31(rec))
            ev = last[1]
            assert ev is not None
            cut = ev[(ev["t"] >= start) & (ev["t"] < end)].copy()
            cut["t"] -= start
            yield cut

    return EventSource(checked, events)
