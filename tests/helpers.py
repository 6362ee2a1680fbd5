"""Small helpers shared by the tests."""

from collections.abc import Callable
from typing import Any


class Crash(Exception):
    """Raised by :func:`crash_after` to interrupt a run as a kill would."""


def crash_after(epoch: int) -> Callable[[dict[str, Any]], None]:
    """A loop callback that raises :class:`Crash` once ``epoch`` is logged (and checkpointed)."""

    def cb(row: dict[str, Any]) -> None:
        if row["epoch"] == epoch:
            raise Crash

    return cb
