"""Grid-world mechanics shared by chemotaxis and foraging, on arrays of ``n`` agents.

Coordinates are ``(x, y)`` cells with ``0 <= x, y < size`` and ``y`` growing *up*. Headings
count counter-clockwise from up: 0 up (0, +1), 1 left (-1, 0), 2 down (0, -1), 3 right
(+1, 0); the heading's allocentric angle is ``pi/2 + heading * pi/2``.

Actions are egocentric (the predecessor's rules):

* ``FORWARD`` (0) moves one cell along the heading;
* ``LEFT`` (1) / ``RIGHT`` (2) turn 90 degrees and move one cell along the new heading, in
  the same step;
* ``STAY`` (3) does nothing.

A move into a wall or into the agent's *body* -- the last ``body`` cells it left behind,
most recent first -- is cancelled, but the turn of LEFT/RIGHT still happens and the step
counts. The body only changes when the agent actually moves.

Shaping penalties (every step, before any goal bonus): ``-step_cost``; ``-revisit`` when the
agent is on the cell it occupied two steps ago; ``-0.1 * min(k - 5, 10)`` once it has been in
place (STAY or a cancelled move) for ``k > 5`` consecutive steps.
"""

from __future__ import annotations

import functools
import math

import numpy as np

FORWARD, LEFT, RIGHT, STAY = 0, 1, 2, 3
N_ACTIONS = 4
DIRS = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], dtype=np.int64)  # up, left, down, right
NOWHERE = -1000  # a cell no agent can be on: the empty body / history slots


class Agents:
    """Positions, headings, bodies and counters of ``n`` agents on a ``size`` x ``size`` grid."""

    def __init__(self, pos: np.ndarray, heading: np.ndarray, size: int, body: int) -> None:
        n = len(pos)
        self.size = size
        self.pos = pos.astype(np.int64).copy()  # (n, 2)
        self.heading = heading.astype(np.int64).copy()  # (n,)
        self.body = np.full((n, body, 2), NOWHERE, dtype=np.int64)  # cells left behind
        self.prev = np.stack([self.pos, np.full_like(self.pos, NOWHERE)], 1)  # t-1, t-2
        self.still = np.zeros(n, dtype=np.int64)  # consecutive steps in place
        self.steps = np.zeros(n, dtype=np.int64)

    def move(self, actions: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Apply ``actions`` to the ``live`` agents; returns (n,) bool: who changed cell."""
        a = np.where(live, actions, STAY)
        turn = np.select([a == LEFT, a == RIGHT], [1, -1], 0)
        self.heading = (self.heading + turn) % 4
        target = self.pos + DIRS[self.heading]
        inside = ((target >= 0) & (target < self.size)).all(1)
        in_body = (target[:, None, :] == self.body).all(2).any(1)
        moved = (a != STAY) & inside & ~in_body
        old = self.pos.copy()
        self.pos = np.where(moved[:, None], target, self.pos)
        if self.body.shape[1]:
            shifted = np.concatenate([old[:, None], self.body[:, :-1]], 1)
            self.body = np.where(moved[:, None, None], shifted, self.body)
        self.still = np.where(moved, 0, self.still + 1)
        self.steps = self.steps + live
        return moved

    def penalties(self, live: np.ndarray, step_cost: float, revisit: float) -> np.ndarray:
        """The shaping penalties of the step just taken (negative), then roll the history."""
        back = (self.pos == self.prev[:, 1]).all(1)
        stuck = np.where(self.still > 5, 0.1 * np.minimum(self.still - 5, 10), 0.0)
        pen = -step_cost - revisit * back - stuck
        rolled = np.stack([self.pos, self.prev[:, 0]], 1)
        self.prev = np.where(live[:, None, None], rolled, self.prev)
        return np.where(live, pen, 0.0)


def manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Manhattan distance between cells (..., 2)."""
    return np.abs(a - b).sum(-1)


def observe(pos: np.ndarray, heading: np.ndarray, food: np.ndarray, scale: float) -> np.ndarray:
    """(n, 2) float32: gradient strength ``tanh(max(0, 1 - d / scale))`` and the direction to
    the food minus the heading, wrapped to [-pi, pi) and divided by pi (> 0: food to the left).
    """
    d = manhattan(pos, food)
    strength = np.tanh(np.maximum(0.0, 1.0 - d / scale))
    delta = food - pos
    bearing = np.arctan2(delta[:, 1], delta[:, 0]) - (math.pi / 2 + heading * math.pi / 2)
    rel = (bearing + math.pi) % (2 * math.pi) - math.pi
    return np.stack([strength, rel / math.pi], 1).astype(np.float32)


def greedy_actions(obs: np.ndarray) -> np.ndarray:
    """Turn toward the gradient: FORWARD when the food is within 45 degrees ahead, else the
    turn (which also moves) on the food's side; food straight behind turns left."""
    rel = obs[:, 1]
    return np.where(np.abs(rel) < 0.25, FORWARD, np.where(rel >= 0, LEFT, RIGHT)).astype(np.int64)


@functools.lru_cache(maxsize=65536)  # legacy starts repeat: 4 (start, goal) pairs in all
def shortest_path(start: tuple[int, int], heading: int, goal: tuple[int, int], size: int) -> int:
    """Fewest actions from (start, heading) to ``goal`` on an empty grid (BFS over cell x
    heading); a shortest path never re-enters a cell, so the body cannot lengthen it."""
    if start == goal:
        return 0
    seen = {(start, heading)}
    frontier = [(start, heading)]
    depth = 0
    while frontier:
        depth += 1
        nxt = []
        for (x, y), h in frontier:
            for turn in (0, 1, -1):
                h2 = (h + turn) % 4
                x2, y2 = x + int(DIRS[h2][0]), y + int(DIRS[h2][1])
                if not (0 <= x2 < size and 0 <= y2 < size):
                    x2, y2 = x, y  # the move is cancelled by the wall; the turn stands
                if (x2, y2) == goal and (x2, y2) != (x, y):
                    return depth
                if ((x2, y2), h2) not in seen:
                    seen.add(((x2, y2), h2))
                    nxt.append(((x2, y2), h2))
        frontier = nxt
    return -1  # unreachable: cannot happen on an open grid of size >= 2
