"""CIFAR-10 from the Hugging Face hub, failing fast (not after minutes of retries) when offline.

``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` restrict it to the local Hugging Face cache; without
them a short TCP probe of the hub runs first, so a machine with no network gets a DataError in
about a second.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from spikeopt.tasks.readers.base import SPLITS, Arrays, DataError, Identity, make_arrays

OFFLINE_HINT = (
    "provide the data offline: data.root=/path/to/cifar10-jpg.tar.gz data.source=folder|pickle"
)


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def reachable(host: str, port: int = 443, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within about ``timeout`` seconds."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    # DNS resolution ignores the socket timeout, so the whole probe runs in a daemon thread
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.2)
    return bool(ok)


def read_hf_cifar10() -> Arrays:
    """CIFAR-10 from the Hugging Face hub (or only its local cache when HF_*_OFFLINE=1)."""
    if not _offline():
        endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        host = endpoint.hostname or "huggingface.co"
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        if not reachable(host, port):
            raise DataError(
                f"the Hugging Face hub ({host}:{port}) is unreachable (no network?); {OFFLINE_HINT}"
            )
    import datasets  # slow to import, hence only here

    if _offline() and not datasets.config.HF_HUB_OFFLINE:  # it reads the flags at import only
        raise DataError(
            "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE was set after `datasets` was imported, so it "
            f"would go online; set it before starting Python, or {OFFLINE_HINT}"
        )
    try:
        ds = datasets.load_dataset("cifar10")
    except Exception as err:  # offline miss, hub error, bad cache: all mean "not available"
        where = "the local Hugging Face cache (offline mode)" if _offline() else "the hub"
        raise DataError(f"cannot load cifar10 from {where}: {err}; {OFFLINE_HINT}") from None
    out = {}
    for split in SPLITS:
        images = [np.asarray(img.convert("RGB")) for img in ds[split]["img"]]
        out[split] = (np.stack(images).transpose(0, 3, 1, 2).copy(), ds[split]["label"])
    classes = ds["train"].features["label"].names
    return make_arrays(*out["train"], *out["test"], classes)


class HfCifar10Reader:
    """The hub reader: no data.root; the hub's own cache holds the downloaded files."""

    needs_root = False

    def identity(self, root: Path | None) -> Identity:
        """The ``hf`` format alone: the hub's dataset is taken to be fixed."""
        return Identity(["hf"], [])

    def read(self, root: Path | None) -> Arrays:
        """All 50k training and 10k test images as uint8 (N, 3, 32, 32)."""
        return read_hf_cifar10()
