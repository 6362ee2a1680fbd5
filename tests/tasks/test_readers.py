"""The reader registry: the expected formats, and every registered reader rejects bad input."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import pytest

from spikeopt.tasks import DATASETS
from spikeopt.tasks.readers import (
    DATASET_READERS,
    READERS,
    DataError,
    Reader,
    SubsetReader,
    generated,
)
from spikeopt.tasks.readers.cifar_pickle import read_cifar_pickle
from tests.tasks.test_datasets import make_pickles


def test_registry_lists_the_expected_formats() -> None:
    assert sorted(READERS) == [
        "digits",
        "dvsgesture",
        "folder",
        "hf",
        "idx",
        "mnist1d",
        "nmnist",
        "pickle",
        "shd",
    ]
    assert tuple(DATASET_READERS) == DATASETS
    for choice in DATASET_READERS.values():
        assert set(choice.readers) <= set(READERS)  # every dataset resolves to registered readers
    assert DATASET_READERS["cifar10"].sources == ("auto", "pickle", "folder", "hf")
    assert DATASET_READERS["fashion"].readers == DATASET_READERS["mnist"].readers == ("idx",)
    # the image and event readers decode a subset alone; the others are subset after reading
    subset = [n for n, r in READERS.items() if isinstance(r, SubsetReader)]
    assert subset == ["folder", "shd", "nmnist", "dvsgesture"]


def _no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(package: str) -> str:
        raise PackageNotFoundError(package)

    monkeypatch.setattr(generated, "version", missing)


def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused at once


# readers that read no files under data.root fail in their own way: name it here
NO_ROOT_FAILURES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "digits": (_no_package, "scikit-learn package, which is not installed"),
    "mnist1d": (_no_package, "mnist1d package, which is not installed"),
    "hf": (_no_hub, r"127\.0\.0\.1:9\) is unreachable"),
}


def _identify_and_read(reader: Reader, root: Path | None) -> None:
    reader.identity(root)
    reader.read(root)


@pytest.mark.parametrize("name", sorted(READERS))
def test_every_reader_rejects_bad_input(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = READERS[name]
    if not reader.needs_root:
        setup, message = NO_ROOT_FAILURES[name]  # a KeyError: a new reader needs a case above
        setup(monkeypatch)
        with pytest.raises(DataError, match=message):
            _identify_and_read(reader, None)
        return
    (tmp_path / "empty").mkdir()
    for root in (None, tmp_path / "nowhere", tmp_path / "empty"):
        # the message names the root it looked in, or says there is none
        message = "no data.root given" if root is None else re.escape(str(root))
        with pytest.raises(DataError, match=message):  # found before anything is read
            reader.identity(root)
        with pytest.raises(DataError, match=message):
            reader.read(root)
        if isinstance(reader, SubsetReader):
            with pytest.raises(DataError, match=message):
                reader.read_subset(root, lambda split, y: np.arange(len(y)))


class _RunsCode:
    """Unpickling this calls ``print`` -- any global outside the CIFAR allowlist must be refused."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_cifar_pickle_refuses_globals_a_batch_never_uses(tmp_path):
    make_pickles(tmp_path / "p")
    (tmp_path / "p" / "data_batch_2").write_bytes(pickle.dumps({b"data": _RunsCode()}))
    with pytest.raises(DataError, match=r"data_batch_2: refused to unpickle it: it asks for "
                       r"builtins\.print.*nothing in the file was run"):  # fmt: skip
        read_cifar_pickle(tmp_path / "p")
    # numpy scalars and Python-2 style protocol-2 pickles of the official layout still load
    with open(tmp_path / "p" / "data_batch_2", "wb") as fh:
        x = np.zeros((10, 3072), np.uint8)
        pickle.dump({b"data": x, b"labels": [np.int64(i) for i in range(10)]}, fh, protocol=2)
    assert read_cifar_pickle(tmp_path / "p")["x_train"].shape == (50, 3, 32, 32)
