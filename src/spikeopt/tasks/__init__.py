"""Tasks: classification datasets (and, elsewhere in this package, encoders and environments)."""

from spikeopt.tasks.datasets import DATASETS, DataError, Dataset, augment, load_dataset

__all__ = ["DATASETS", "DataError", "Dataset", "augment", "load_dataset"]
