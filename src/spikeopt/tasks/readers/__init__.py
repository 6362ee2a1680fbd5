"""The registry of dataset readers, one per format, and which reader each ``data.name`` uses.

To add a format: write ``readers/<format>.py`` with a class satisfying :class:`Reader` (see
``base.py``), register an instance in :data:`READERS`, and map a dataset name to it in
:data:`DATASET_READERS`. ``datasets.load_dataset`` wraps the cache and subsets around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spikeopt.tasks.readers.base import (
    SPLITS,
    Arrays,
    DataError,
    Identity,
    Pick,
    Reader,
    SubsetReader,
    is_tarball,
    open_tar,
)
from spikeopt.tasks.readers.cifar_pickle import PICKLE_BATCHES, CifarPickleReader, pickle_dir
from spikeopt.tasks.readers.dvsgesture import GESTURE_HINT, DvsGestureReader
from spikeopt.tasks.readers.events import EventReader
from spikeopt.tasks.readers.generated import DigitsReader, Mnist1dReader
from spikeopt.tasks.readers.hf import HfCifar10Reader
from spikeopt.tasks.readers.idx import IDX_HINT, IdxReader
from spikeopt.tasks.readers.images import IMAGE_EXTS, ImageFolderReader
from spikeopt.tasks.readers.nmnist import NMNIST_HINT, NmnistReader
from spikeopt.tasks.readers.shd import SHD_HINT, ShdReader

__all__ = ["DATASET_READERS", "READERS", "SPLITS", "Arrays", "DataError", "DatasetReaders",
           "EventReader", "Identity", "Pick", "Reader", "SubsetReader",
           "detect_cifar_source"]  # fmt: skip

# format -> its reader; the cifar10 names double as the data.source values that choose them
READERS: dict[str, Reader] = {
    "digits": DigitsReader(),
    "mnist1d": Mnist1dReader(),
    "idx": IdxReader(),
    "pickle": CifarPickleReader(),
    "folder": ImageFolderReader(),
    "hf": HfCifar10Reader(),
    # event recordings, binned into frames (readers/events.py; the loader sets the binning)
    "shd": ShdReader(),
    "nmnist": NmnistReader(),
    "dvsgesture": DvsGestureReader(),
}

CIFAR_HINT = (
    "set data.root=/path/to/cifar10-jpg.tar.gz (an image folder or tarball laid out "
    "train|test/<class>/*.jpg) or to the python batches (cifar-10-python.tar.gz or its folder), "
    "or data.source=hf to download from the Hugging Face hub"
)


def detect_cifar_source(root: Path) -> str:
    """'pickle' or 'folder' for a CIFAR-10 root, judged by the files it holds."""
    if is_tarball(root):
        with open_tar(root) as tf:
            for m in tf:  # stop at the first member that tells the two layouts apart
                name = PurePosixPath(m.name).name
                if name in PICKLE_BATCHES:
                    return "pickle"
                if name.lower().endswith(IMAGE_EXTS):
                    return "folder"
        raise DataError(f"{root}: neither CIFAR-10 python batches nor images in this tarball")
    return "pickle" if pickle_dir(root) is not None else "folder"


@dataclass(frozen=True)
class DatasetReaders:
    """The readers one ``data.name`` can be read with."""

    readers: tuple[str, ...]  # keys of READERS; with more than one, data.source chooses
    hint: str = ""  # how to provide data.root, for the errors when it is missing
    detect: Callable[[Path], str] | None = None  # data.source=auto: the reader a root needs

    @property
    def sources(self) -> tuple[str, ...]:
        """The valid ``data.source`` values, 'auto' first when the files can tell."""
        return ("auto", *self.readers) if self.detect else self.readers


# data.name -> its readers, in the order DATASETS lists the names
DATASET_READERS: dict[str, DatasetReaders] = {
    "digits": DatasetReaders(("digits",)),
    "mnist1d": DatasetReaders(("mnist1d",)),
    "mnist": DatasetReaders(("idx",), IDX_HINT),
    "fashion": DatasetReaders(("idx",), IDX_HINT),
    "cifar10": DatasetReaders(("pickle", "folder", "hf"), CIFAR_HINT, detect_cifar_source),
    "shd": DatasetReaders(("shd",), SHD_HINT),
    "nmnist": DatasetReaders(("nmnist",), NMNIST_HINT),
    "dvsgesture": DatasetReaders(("dvsgesture",), GESTURE_HINT),
}
