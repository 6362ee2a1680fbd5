"""Run outputs, every one written atomically: a reader never sees half a file.

``config.yaml``, ``metrics.csv``, ``summary.json``, ``curves.png``, ``checkpoint.pt`` and
TensorBoard events under ``tb/``. Each file is written to a temporary name in the same
directory and renamed over the old one (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from spikeopt.config import ConfigError

try:  # POSIX; elsewhere runs are not locked (see run_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"  # held (flock) by the process writing a run folder


TMP_PREFIX = ".tmp-"  # atomic_open's temp files; run_lock removes ones a killed run left


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it: set and restore at once
    os.umask(mask)
    return mask


# read once at import: setting it later, while TensorBoard's or Ray's threads create files,
# would give those files the wrong mode for that instant
UMASK = _read_umask()


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on error it is removed.

    The file gets the mode a plain ``open`` would (0666 less the umask): ``mkstemp``'s 0600
    would otherwise survive the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~UMASK)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically write ``data`` as indented JSON (NaN/inf become null)."""
    write_text(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write ``rows`` as CSV; the header is the union of keys in first-seen order."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a payload of tensors and plain values (weights_only-loadable)."""
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: is this the --out folder of a run?")
    try:
        ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, overwritten or not a checkpoint: all unreadable
        raise ConfigError(
            f"{path} cannot be read as a spikeopt checkpoint ({type(err).__name__}: "
            f"{str(err)[:120]}); it is damaged -- start a new run, or restore the file"
        ) from None
    return ck


def write_figure(path: Path, fig: Any) -> None:
    """Atomically save a matplotlib figure as a PNG, then close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
    finally:
        plt.close(fig)


_GROUP = re.compile(r"(train|test|layer\d+)_(.+)")  # metrics.csv prefixes that name a group


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics column: ``train_loss`` -> ``train/loss``,
    ``layer0_rate`` -> ``layer0/rate``; other names stay whole (``wall_s``, ``optimal_steps``)."""
    m = _GROUP.fullmatch(key)
    return f"{m[1]}/{m[2]}" if m else key


class TensorBoard:
    """Scalars to TensorBoard event files under ``out/tb`` (lazy import: it is slow)."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Readers replay event files in name order, and a name is the second it was opened,
        # then host, pid and a per-process counter: a file opened in the same second as the
        # last one (a quick resume) could sort before it and have its purge undone. Wait
        # for the next second instead (at most 1 s, only then).
        stamps = [int(f.name.split(".")[3]) for f in logdir.glob("events.out.tfevents.*")
                  if f.name.split(".")[3].isdigit()]  # fmt: skip
        while stamps and int(time.time()) <= max(stamps):
            time.sleep(0.05)
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def log(self, row: dict[str, Any], step: int) -> None:
        """Every finite numeric value of ``row`` as a scalar at ``step``, under :func:`tag`."""
        for key, value in row.items():
            if isinstance(value, (int, float)) and math.isfinite(value) and key != "epoch":
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class FolderTaken(ConfigError):
    """The run folder is being written by another process, or already holds a run."""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s run lock while the block runs, so two runs never mix their files.

    The lock is an exclusive ``flock`` on ``folder/.lock``: a second process fails at once
    with :class:`FolderTaken`, and the OS releases it when the holder dies (``kill -9``
    included), so nothing stale blocks ``--resume``; the temp files a killed writer left are
    removed once the lock is held. The lock file goes when the block ends, and a folder the
    block created and left empty (the run failed before writing) goes too, with the parents
    it created (``runs/``): bad input writes nothing.
    """
    # the folders this call creates (default runs/<name>: runs/ too), removed if left empty
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderTaken(
                f"{folder} is being written by another run (pid {holder}); wait for it to "
                "finish, or choose another --out"
            ) from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for tmp in folder.rglob(f"{TMP_PREFIX}*"):  # half-written files of a killed run
            tmp.unlink()
        yield
    finally:
        # removed while still held: a process that opened it meanwhile sees the inode change
        # above and retries, so the folder is left exactly as the run wrote it
        path.unlink(missing_ok=True)
        for d in created:  # innermost first; stops at the first one the run wrote into
            if any(d.iterdir()):
                break
            d.rmdir()
        os.close(fd)
