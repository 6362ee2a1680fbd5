"""Search spaces over dotted config keys: constructors, YAML files, validation.

A space maps dotted keys (``optim.lr``, ``model.hidden``) to Ray Tune domains or fixed
values. The YAML form uses the same keys, one kind per key::

    optim.lr: {loguniform: [1.0e-3, 1.0e-1]}
    model.hidden: {choice: [[64], [128], [256]]}
    es.sigma: {uniform: [0.02, 0.1]}
    es.population: {grid: [64, 128]}
    trainer.seed: {randint: [0, 1000]}
    encoder.steps: 8                       # a plain value: fixed in every trial

Every key is checked against the config (unknown key -> ConfigError with the nearest keys)
and every value a domain can produce against the key's type, before any trial starts.
"""

from __future__ import annotations

from typing import Any

from spikeopt import config as C
from spikeopt.dist import require_ray

KINDS: tuple[str, ...] = ("choice", "grid", "uniform", "loguniform", "randint")


def require_tune() -> Any:
    """``ray.tune``, or a ConfigError naming the install command."""
    require_ray()
    import ray.tune

    return ray.tune


def choice(values: list[Any]) -> Any:
    """One of ``values``, sampled uniformly (``ray.tune.choice``)."""
    return require_tune().choice(values)


def grid(values: list[Any]) -> Any:
    """Every one of ``values``, each in its own trial(s) (``ray.tune.grid_search``)."""
    return require_tune().grid_search(values)


def uniform(low: float, high: float) -> Any:
    """A float uniform in [low, high]."""
    return require_tune().uniform(low, high)


def loguniform(low: float, high: float) -> Any:
    """A float whose log is uniform in [log low, log high] (learning rates, sigmas)."""
    return require_tune().loguniform(low, high)


def randint(low: int, high: int) -> Any:
    """An integer in [low, high) (seeds, counts)."""
    return require_tune().randint(low, high)


def _bounds(key: str, kind: str, args: Any, cast: type) -> tuple[Any, Any]:
    if not isinstance(args, list) or len(args) != 2:
        raise C.ConfigError(f"space {key}: {kind} needs [low, high], got {args!r}")
    try:
        low, high = cast(args[0]), cast(args[1])  # PyYAML reads 1e-3 as a string
    except (TypeError, ValueError):
        raise C.ConfigError(f"space {key}: {kind} bounds must be numbers, got {args!r}") from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise C.ConfigError(f"space {key}: {kind} needs 0 < low < high (log) or low < high")
    return low, high


def domain(key: str, spec: Any) -> Any:
    """A YAML value -> a Ray Tune domain (``{kind: args}``) or the plain value itself."""
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        if isinstance(spec, dict):
            raise C.ConfigError(
                f"space {key}: expected one of {{{', '.join(KINDS)}}}: ARGS or a plain value, "
                f"got {spec!r}"
            )
        return spec
    ((kind, args),) = spec.items()
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise C.ConfigError(f"space {key}: {kind} needs a non-empty list, got {args!r}")
        return choice(args) if kind == "choice" else grid(args)
    if kind == "randint":
        return randint(*_bounds(key, kind, args, int))
    low, high = _bounds(key, kind, args, float)
    return uniform(low, high) if kind == "uniform" else loguniform(low, high)


def parse(data: dict[str, Any]) -> dict[str, Any]:
    """A YAML mapping (dotted or nested by namespace) -> {dotted key: domain or value}."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        nested = isinstance(value, dict) and "." not in name and next(iter(value), "") not in KINDS
        if nested:
            out.update({f"{name}.{k}": domain(f"{name}.{k}", v) for k, v in value.items()})
        else:
            out[name] = domain(name, value)
    return out


def load(path: str) -> dict[str, Any]:
    """Read a YAML space file (see the module docstring)."""
    data = C.load_yaml(path)
    if not data:
        raise C.ConfigError(f"space file {path} binds no keys; e.g. `optim.lr: {{choice: [...]}}`")
    return parse(data)


def candidates(space: Any) -> list[Any]:
    """Values a domain can produce that are worth type-checking (a few samples for ranges)."""
    if isinstance(space, dict) and set(space) == {"grid_search"}:
        return list(space["grid_search"])
    if not type(space).__module__.startswith("ray."):
        return [space]  # a plain value
    from ray.tune.search import sample

    if isinstance(space, sample.Categorical):
        return list(space.categories)
    if isinstance(space, sample.Integer):
        return [space.lower, space.upper - 1]  # randint's upper bound is exclusive
    if isinstance(space, sample.Float):
        return [space.lower, space.upper]
    return [space.sample()]


def check(cfg: C.Config, key: str, space: Any) -> None:
    """Raise ConfigError unless ``key`` exists and every candidate value has its type."""
    probe = C.copy_config(cfg)
    for value in candidates(space):
        C.set_key(probe, key, value)


def largest(cfg: C.Config, space: dict[str, Any]) -> C.Config:
    """``cfg`` with each bound key at its largest numeric (or longest list) candidate: the
    config the memory guard sizes a trial by."""
    out = C.copy_config(cfg)
    for key, dom in space.items():
        values = [v for v in candidates(dom) if _size(v) is not None]
        if values:
            C.set_key(out, key, max(values, key=lambda v: _size(v) or 0.0))
    return out


def _size(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return float(sum(v)) + 1e-6 * len(v)
    return None
