"""The :class:`Recipe`: a name, an application, a summary and the overrides that make its config.

What a recipe trains with (``method``) and on what (``architecture``) are read from its
config, so the table ``spikeopt list`` prints can never disagree with what ``spikeopt run``
does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from spikeopt.config import Config, apply

Application = Literal["image", "sequence", "events", "control", "language", "check"]
APPLICATIONS: tuple[Application, ...] = (
    "image", "sequence", "events", "control", "language", "check",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """A named, documented starting configuration."""

    name: str
    application: Application
    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self) -> Config:
        """The recipe's resolved default config."""
        return apply(Config(), self.overrides)

    @cached_property
    def method(self) -> str:
        """The training method of the recipe's config (``method.name``)."""
        return self.config().method.name

    @cached_property
    def architecture(self) -> str:
        """The model architecture of the recipe's config (``model.arch``)."""
        return self.config().model.arch
