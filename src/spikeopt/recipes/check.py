"""Check recipes: runs that test a pipeline rather than train it."""

from __future__ import annotations

from spikeopt.recipes.base import Recipe
from spikeopt.recipes.common import DIGITS

RECIPES: list[Recipe] = [
    Recipe(
        "snn-forward",
        "check",
        "one forward pass: prints every layer's (B, T, N) shape and checks the loss is finite",
        {**DIGITS, "trainer.forward_check": True},
    ),
]
