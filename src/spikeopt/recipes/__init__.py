"""The recipe zoo: named configurations, one module per application.

:data:`RECIPES` below gathers them -- the one place to look. A recipe's config is ``Config()``
with its overrides applied; users layer a YAML file and ``key=value`` overrides on top. What a
run trains is a key like any other (``trainer.task=control`` for the control recipes,
``trainer.forward_check=true`` for ``snn-forward``), so a run's ``config.yaml`` alone says how
to continue it.
"""

from __future__ import annotations

import difflib

from spikeopt.config import ConfigError
from spikeopt.recipes import check, control, events, image, language, sequence
from spikeopt.recipes.base import APPLICATIONS, Application, Recipe

RECIPES: dict[str, Recipe] = {
    r.name: r
    for module in (image, sequence, events, control, language, check)
    for r in module.RECIPES
}

FILTERS: tuple[str, ...] = ("application", "method", "architecture")


def list_recipes(**filters: str) -> list[Recipe]:
    """Recipes whose fields equal the given values, e.g. ``list_recipes(method="es")``; an
    unknown field is a ConfigError naming the ones that filter."""
    for key in filters:
        if key not in FILTERS:
            raise ConfigError(f"recipes filter by {', '.join(FILTERS)}, not {key!r}")
    return [r for r in RECIPES.values() if all(getattr(r, k) == v for k, v in filters.items())]


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; the error suggests the nearest names."""
    if name not in RECIPES:
        near = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown recipe '{name}'{hint} (`spikeopt list` shows all)")
    return RECIPES[name]


__all__ = ["APPLICATIONS", "FILTERS", "RECIPES", "Application", "Recipe", "get_recipe",
           "list_recipes"]  # fmt: skip
