"""spikeopt: train spiking neural networks with surrogate gradients, evolution strategies,
hybrids of the two and REINFORCE."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(run_dir: str | Path, which: str = "best", device: str = "cpu") -> nn.Module:
    """The trained model of a run folder: its best epoch's (``which="best"``) or last's."""
    from spikeopt.export import load as load_run  # torch and the tasks load only when used

    return load_run(run_dir, which, device)
