"""Tasks: classification datasets (and, elsewhere in this package, encoders and environments)."""

from spikeopt.tasks.datasets import DATASETS, Dataset, augment, load_dataset
from spikeopt.tasks.sources import DataError

__all__ = ["DATASETS", "DataError", "Dataset", "augment", "load_dataset"]
