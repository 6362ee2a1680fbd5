"""Hyperparameter search on Ray Tune over any recipe's dotted config keys (docs/tuning.md).

Importing this package does not import Ray; Ray is needed once a space is built or a search
runs, and a missing Ray is a ConfigError naming ``pip install 'spikeopt[ray]'``.
"""

from spikeopt.tune.memory import guard, trial_mb
from spikeopt.tune.search import SCHEDULERS, SEARCHERS, Search
from spikeopt.tune.space import KINDS, choice, grid, load, loguniform, parse, randint, uniform

__all__ = [
    "KINDS",
    "SCHEDULERS",
    "SEARCHERS",
    "Search",
    "choice",
    "grid",
    "guard",
    "load",
    "loguniform",
    "parse",
    "randint",
    "trial_mb",
    "uniform",
]
