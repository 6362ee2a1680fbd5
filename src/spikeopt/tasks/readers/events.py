"""Event recordings -> binned frames: what the SHD, N-MNIST and DVS Gesture readers share.

Each recording's events (x, y, t in microseconds, polarity p) inside ``[0, window)`` are counted
into ``bins`` equal time bins by Tonic's ``ToFrame``: one uint16 frame ``(P, H, W)`` per bin,
so a sample is ``(T, P, H, W)`` with time first (SHD: ``(T, 700)``). The frames, not the events,
are what the loader caches: the binning (bins, window, downsampling) is part of the cache key.

A format reader subclasses :class:`EventReader` and says which files it reads
(:meth:`EventReader.files`) and how to list and decode one split (:meth:`EventReader.source`).
Nothing here downloads: missing files are a :class:`DataError` naming each and its URL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spikeopt.tasks.readers.base import SPLITS, Arrays, DataError, Identity, Pick, need_root

EVENTS = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.float64), ("p", np.int64)])


def make_events(x: Any, y: Any, t_us: Any, p: Any) -> np.ndarray:
    """A structured event array in the (x, y, t [us], p) layout every reader converts to."""
    from tonic.io import make_structured_array

    return make_structured_array(  # type: ignore[no-any-return]
        np.asarray(x, np.int64), np.asarray(y, np.int64), np.asarray(t_us, np.float64),
        np.asarray(p, np.int64), dtype=EVENTS,
    )  # fmt: skip


def to_frames(events: np.ndarray, sensor: tuple[int, int, int], bins: int, window_us: float
              ) -> np.ndarray:  # fmt: skip
    """Counts of ``events`` in ``bins`` equal bins over ``[0, window_us)``: (bins, P, H, W) uint16.

    ``sensor`` is Tonic's (width, height, polarities). Events at or after ``window_us`` are
    dropped; counts above 65535 saturate.
    """
    from tonic.transforms import ToFrame

    w, h, p = sensor
    out = np.zeros((bins, p, h, w), np.uint16)
    events = events[(events["t"] >= 0) & (events["t"] < window_us)]
    if len(events) == 0:  # Tonic's empty-input frame is (1, P, W, H): transposed, so not used
        return out
    frames = ToFrame(sensor_size=sensor, time_window=window_us / bins, start_time=0.0,
                     end_time=window_us, include_incomplete=True)(events)  # fmt: skip
    frames = frames.reshape(len(frames), p, h, w)  # a (T, P, W) 1-D sensor gains its H=1
    n = min(bins, len(frames))  # float bin edges may add an empty last bin: cut to `bins`
    out[:n] = np.clip(frames[:n].astype(np.int64), 0, np.iinfo(np.uint16).max)
    return out


@dataclass(frozen=True)
class EventSource:
    """One split: its labels in file order and a decoder of the recordings at given indices."""

    labels: np.ndarray
    events: Callable[[np.ndarray], Iterator[np.ndarray]]  # sorted indices -> their events
    names: tuple[str, ...] = ()  # class names the files carry (else the label numbers)


@dataclass(frozen=True)
class EventReader:
    """Base of the event readers: binning settings, caching identity and frame building."""

    fmt: ClassVar[str]  # the format name (first cache-key part)
    sensor: ClassVar[tuple[int, int, int]]  # (width, height, polarities) at full resolution
    window_ms: ClassVar[float]  # default window binned into frames
    downsample_default: ClassVar[int] = 1
    hint: ClassVar[str]  # where to get the files, for every error
    needs_root = True  # not a field: unannotated

    bins: int = 0  # encoder.steps; 0 = not configured (the loader refuses)
    window: float = 0.0  # ms; 0 = the format's default
    downsample: int = 0  # spatial factor; 0 = the format's default

    def configured(self, bins: int, window_ms: float, downsample: int) -> EventReader:
        """This reader binning into ``bins`` frames over ``window_ms`` (0 = default)."""
        return dataclasses.replace(self, bins=bins, window=window_ms, downsample=downsample)

    @property
    def factor(self) -> int:
        """The spatial downsampling factor in use."""
        return self.downsample or self.downsample_default

    @property
    def frame_sensor(self) -> tuple[int, int, int]:
        """The (width, height, polarities) after downsampling."""
        w, h, p = self.sensor
        f = self.factor
        return (-(-w // f), -(-h // f), p) if h > 1 else (w, h, p)

    # ------------------------------------------------------------ per format

    def files(self, root: Path) -> list[Path]:
        """The files (or folders) the reader reads; DataError naming each one missing."""
        raise NotImplementedError

    def source(self, root: Path, split: str) -> EventSource:
        """The labels and decoder of one split."""
        raise NotImplementedError

    # ------------------------------------------------------------ the Reader protocol

    def identity(self, root: Path | None) -> Identity:
        """The format, its binning and its files (checked up front)."""
        files = self.files(need_root(root, self.hint))
        key = [self.fmt, self.bins, self.window or self.window_ms, self.factor]
        return Identity(key, files)

    def read(self, root: Path | None) -> Arrays:
        """Every recording of both splits, binned."""
        return self.read_subset(root, lambda split, y: np.arange(len(y)))

    def read_subset(self, root: Path | None, pick: Pick) -> Arrays:
        """The recordings ``pick`` chooses, binned; no other one is decoded."""
        root = need_root(root, self.hint)
        self.files(root)  # missing files first: they are the error a user can act on
        if self.bins < 1:
            raise DataError(f"{self.fmt}: event recordings are binned into encoder.steps "
                            "frames; set encoder.kind=events and encoder.steps >= 1")  # fmt: skip
        window_us = 1000.0 * (self.window or self.window_ms)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        names: tuple[str, ...] = ()
        for split in SPLITS:
            src = self.source(root, split)
            names = names or src.names
            idx = np.sort(pick(split, src.labels))
            frames = [to_frames(self._scaled(e), self.frame_sensor, self.bins, window_us)
                      for e in src.events(idx)]  # fmt: skip
            x = np.stack(frames) if frames else np.zeros((0, self.bins, 1, 1, 1), np.uint16)
            if self.sensor[1] == 1:  # a 1-D sensor (SHD's 700 channels): samples (T, channels)
                x = x.reshape(len(x), self.bins, -1)
            out[split] = (x, src.labels[idx])
        labels = np.concatenate([out["train"][1], out["test"][1]])
        classes = names or [str(c) for c in range(int(labels.max()) + 1 if labels.size else 0)]
        return {"x_train": out["train"][0], "y_train": out["train"][1].astype(np.int64),
                "x_test": out["test"][0], "y_test": out["test"][1].astype(np.int64),
                "classes": np.asarray(classes, dtype=str)}  # fmt: skip

    def _scaled(self, events: np.ndarray) -> np.ndarray:
        f = self.factor
        if f == 1 or self.sensor[1] == 1:
            return events
        out = events.copy()
        out["x"] //= f
        out["y"] //= f
        return out


def check_labels(labels: np.ndarray, n_classes: int, where: Path) -> np.ndarray:
    """``labels`` as int64, or a DataError when one is not a class 0..n_classes-1."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{where}: label {labels.max()} is not a class 0-{n_classes - 1}; "
                        "is this the right file?")  # fmt: skip
    return labels


def offline(cls: type[Any], root: Path, hint: str, **kwargs: Any) -> Any:
    """Tonic's dataset class ``cls`` reading ``root`` as it is: it can never download.

    Tonic's classes look for their files under ``<save_to>/<ClassName>/`` and download when
    too few are there (N-MNIST wants 10000); here they read ``root`` itself, the caller has
    checked the files, and ``download`` raises instead.
    """

    class Offline(cls):  # type: ignore[misc,valid-type]
        location_on_system = property(lambda self: str(root), lambda self, value: None)

        def _check_exists(self) -> bool:
            return True

        def download(self) -> None:
            raise DataError(f"{root}: {cls.__name__} files missing; {hint}")

    return Offline(str(root), **kwargs)
