"""Distributed ES: one generation's population evaluated in shards on Ray actors.

:class:`RayObjective` wraps the :class:`~spikeopt.tasks.base.Objective` a population method
already uses (every method on :class:`~spikeopt.methods.strategy.Strategy`: the base wraps it
when ``es.workers > 0``) and replaces only its ``fitness`` call, and the per-sample losses of
node perturbation; the estimator, shaping and optimizer update stay in the driver, untouched.
Per generation::

    driver:  ref = ray.put(centre state_dict, batch, torch RNG state)     one object, once
             shard j = members [m_j, m_j+1) of Perturbation(seed, generation, sigma, ...)
    actor j: load centre, regenerate member noise from (seed, generation, member), evaluate
             -> fitness scalars (m_j+1 - m_j,) float64 back
    driver:  concatenate -> the same (P,) vector the in-process evaluation returns

What travels out is the centre (once per generation, through the object store: one copy per
node, not per actor), the batch, and a handful of integers per shard; no noise ever does.
The OpenAI-ES variant that also keeps the centre on every actor (applying the same update
from the fitness vector) would ship even less, but needs the optimizer, clipping, update cap
and LR schedule replicated on every actor and re-synchronised after a failure; at the model
sizes spikeopt trains (~10^4-10^6 parameters) the centre is small next to the work of a shard.

Exactness: shard boundaries sit on the chunk boundaries of the in-process evaluation and
every actor uses the same chunk size, so each member's loss is computed by the same tensor
ops on the same shapes; dropout masks come from the torch RNG, whose state travels with the
centre and is handed back. Fitness and final parameters are bit-identical to one process.

Fault tolerance: a shard whose actor died (``ray.kill``, a lost node) is re-submitted to a
live actor, a replacement actor is started, and the generation completes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.functional.composite import Composite
from spikeopt.population import Offsets, Source, members_of, perturbed
from spikeopt.population.noise import ChunkNoise

INSTALL_HINT = "install the Ray extra: pip install 'spikeopt[ray]'"


def require_ray() -> ModuleType:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"this feature runs on Ray, which is not installed; {INSTALL_HINT}"
        ) from None
    return ray


# The "ray" logger's level for this process: INFO as Ray's own default, ERROR under --quiet.
# Ray resets the logger when it is imported and again in ray.init, so it is passed to init.
_RAY_LOG_LEVEL = [logging.INFO]


def quiet_ray(quiet: bool = True) -> None:
    """Let Ray's INFO and WARNING console lines through (False) or only its errors (True)."""
    _RAY_LOG_LEVEL[0] = logging.ERROR if quiet else logging.INFO
    if "ray" in sys.modules:
        logging.getLogger("ray").setLevel(_RAY_LOG_LEVEL[0])


def ensure_ray(address: str = "") -> ModuleType:
    """``ray``, initialised: joins ``address`` ('auto' = a running cluster) or starts locally."""
    ray = require_ray()
    if not ray.is_initialized():
        logging.getLogger("ray").setLevel(_RAY_LOG_LEVEL[0])  # its lines before init's setup
        try:
            ray.init(
                address=address or None,
                log_to_driver=False,
                include_dashboard=False,
                logging_level=_RAY_LOG_LEVEL[0],
            )
        except ConnectionError as err:  # a named or 'auto' cluster that is not there
            raise ConfigError(
                f"es.ray_address={address}: no Ray cluster answered ({err}); start one with "
                "`ray start --head` (and give its address), or leave es.ray_address empty to "
                "start a local Ray"
            ) from None
        if not address:
            _start_watchdog()
    return ray


_WATCHDOG: list[subprocess.Popen[bytes]] = []  # one per driver process, kept so it is not reaped


def _start_watchdog() -> None:
    """Start :mod:`spikeopt.watchdog` beside this driver: it kills what is left of the local
    Ray this process started if the process dies without shutting it down (Linux only)."""
    if _WATCHDOG or not sys.platform.startswith("linux"):
        return
    script = Path(__file__).with_name("watchdog.py")
    _WATCHDOG.append(
        subprocess.Popen(
            [sys.executable, str(script), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the driver's group leaves it to clean up
        )
    )


class Shard(Offsets):
    """Members ``m0 .. m1-1`` of a seeded population (weight or node noise), on the interface
    ``evaluate`` reads for explicit offsets (``params``, ``population``, ``members``) -- the
    noise itself is regenerated from seeds, exactly as the whole population's would be."""

    def __init__(self, model: nn.Module, source: Source, m0: int, m1: int) -> None:
        self.params, self.population = [p for _, p in perturbed(model)], m1 - m0
        self.m0, self._noise = m0, members_of(model, source)

    def members(self, m0: int, m1: int) -> ChunkNoise:
        """Noise of shard members ``m0 .. m1-1`` (population members ``self.m0 + m``)."""
        return self._noise.members(self.m0 + m0, self.m0 + m1)


def shards(population: int, chunk: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous member ranges on chunk boundaries, as even in size as whole chunks allow."""
    n_chunks = math.ceil(population / chunk)
    k = min(workers, n_chunks)
    bounds = [round(i * n_chunks / k) for i in range(k + 1)]
    return [(bounds[i] * chunk, min(bounds[i + 1] * chunk, population)) for i in range(k)]


# What an actor can compute for a shard: the objective's method of that name.
KINDS: tuple[str, ...] = ("fitness", "sample_losses")


class Evaluator:
    """What runs inside one actor: a copy of the model and the objective, reloaded per call."""

    def __init__(self, model: nn.Module, objective: Any, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model, self.objective = model, objective
        loss = getattr(objective, "loss", None)
        if isinstance(loss, Composite) and loss.params:  # its params: this actor's centre
            self.objective = copy.copy(objective)
            self.objective.loss = dataclasses.replace(loss, params=tuple(model.parameters()))

    def run(
        self, kind: str, centre: dict[str, Any], source: Source, m0: int, m1: int
    ) -> tuple[Any, Tensor]:
        """``kind`` (fitness or per-sample losses) of members ``m0 .. m1-1`` and the torch RNG
        state after evaluating them."""
        self.model.load_state_dict(centre["state"])
        self.model.train(centre["training"])
        torch.set_rng_state(centre["rng"])
        shard = Shard(self.model, source, m0, m1)
        out = getattr(self.objective, kind)(self.model, shard, centre["batch"])
        return out, torch.get_rng_state()


class RayObjective:
    """An Objective whose population is evaluated on ``workers`` Ray actors.

    ``centre`` and ``gradient`` run in the driver through ``inner``; ``fitness`` (and the
    per-sample losses node perturbation reads) of a seeded population -- a
    :class:`Perturbation` or a :class:`NodePerturbation` -- is sharded across the actors;
    explicit :class:`Offsets` hold the whole population in memory and are evaluated in the
    driver.
    """

    def __init__(
        self, inner: Any, workers: int, address: str = "", cpus_per_worker: float = 1.0
    ) -> None:
        if workers < 1:
            raise ConfigError(f"es.workers must be >= 0 (0 = in process), got {workers}")
        if cpus_per_worker <= 0:
            raise ConfigError(f"es.worker_cpus must be > 0, got {cpus_per_worker}")
        self.inner, self.workers, self.address = inner, workers, address
        self.cpus = cpus_per_worker
        # Ray queues an actor it cannot place and waits forever: check before any is started
        # (and before the run writes anything), against the cluster this run joins.
        have = float(ensure_ray(address).cluster_resources().get("CPU", 0.0))
        if workers * cpus_per_worker > have:
            raise ConfigError(
                f"es.workers={workers} x es.worker_cpus={cpus_per_worker:g} asks Ray for "
                f"{workers * cpus_per_worker:g} CPUs but the cluster has {have:g}; lower "
                "es.workers or es.worker_cpus (each actor holds its CPUs for the whole run), or "
                "join a larger cluster with es.ray_address"
            )
        self.actors: list[Any] = []
        self.restarts = 0  # actors replaced after dying; a metric for the curious
        self._model_ref: Any = None
        self._chunk = 0

    # -- the Objective protocol -------------------------------------------------------------

    def centre(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """The inner objective's centre metrics (computed in the driver)."""
        return dict(self.inner.centre(model, batch))

    def gradient(self, model: nn.Module, batch: Any) -> list[Tensor] | None:
        """The inner objective's surrogate gradient (computed in the driver)."""
        return self.inner.gradient(model, batch)  # type: ignore[no-any-return]

    @property
    def last(self) -> Any:
        """The inner objective's latest centre episodes (control objectives), for inspection."""
        return getattr(self.inner, "last", None)

    def chunk_for(self, model: nn.Module, source: Source, batch: Any) -> int:
        """The inner objective's chunk size."""
        return int(self.inner.chunk_for(model, source, batch))

    def chunked(self, chunk: int) -> RayObjective:
        """Shards already run in the inner objective's chunks: this objective itself."""
        return self

    def fitness(self, model: nn.Module, source: Source, batch: Any) -> Tensor:
        """Fitness (P,) float64 of every member, bit-identical to the in-process evaluation."""
        if isinstance(source, Offsets):
            return self.inner.fitness(model, source, batch)  # type: ignore[no-any-return]
        parts = self._sharded("fitness", model, source, batch)
        return torch.cat(parts)

    def sample_losses(
        self, model: nn.Module, source: Source, batch: Any, activity: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample losses (P, B) and the batch-level rest (P,) of every member, sharded
        (the members' currents stay on the workers: no ``activity``)."""
        if activity is not None:
            raise ValueError("activity is recorded in process only (nodepert.credit=noise)")
        if isinstance(source, Offsets):
            return self.inner.sample_losses(model, source, batch)  # type: ignore[no-any-return]
        parts = self._sharded("sample_losses", model, source, batch)
        return torch.cat([s for s, _ in parts]), torch.cat([r for _, r in parts])

    def _sharded(self, kind: str, model: nn.Module, source: Source, batch: Any) -> list[Any]:
        """``kind`` of every shard, in member order."""
        ray = ensure_ray(self.address)
        chunk = self.inner.chunk_for(model, source, batch)
        if chunk <= 0:  # any grouping gives the same results: one shard per worker
            chunk = max(2, 2 * math.ceil(source.population / (2 * self.workers)))
        if not self.actors or self._chunk != chunk:
            self._start(model, chunk)
        centre = ray.put(
            {
                "state": model.state_dict(),
                "training": model.training,
                "rng": torch.get_rng_state(),
                "batch": batch,
            }
        )
        todo = shards(source.population, chunk, len(self.actors))
        results = self._run(ray, kind, centre, source, todo)
        torch.set_rng_state(results[todo[0]][1])  # as if the driver had evaluated them
        return [results[s][0] for s in todo]

    # -- the actor pool ---------------------------------------------------------------------

    def _new_actor(self) -> Any:
        ray = require_ray()
        remote = ray.remote(num_cpus=self.cpus, max_restarts=0)(Evaluator)
        threads = max(1, int(self.cpus))
        return remote.remote(self._model_ref, self.inner.chunked(self._chunk), threads)

    def _start(self, model: nn.Module, chunk: int) -> None:
        """(Re)start the pool: the model structure is shipped once, at actor creation."""
        ray = require_ray()
        self.close()
        self._chunk = chunk
        self._model_ref = ray.put(model)
        self.actors = [self._new_actor() for _ in range(self.workers)]

    def _run(
        self, ray: ModuleType, kind: str, centre: Any, source: Source, todo: list[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[Any, Tensor]]:
        """Evaluate every shard; a shard whose actor died goes to a live (or new) actor."""
        died = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
        pending = {
            actor.run.remote(kind, centre, source, m0, m1): (i, (m0, m1))
            for i, (actor, (m0, m1)) in enumerate(zip(self.actors, todo))
        }
        results: dict[tuple[int, int], tuple[Any, Tensor]] = {}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            slot, shard = pending.pop(ref)
            try:
                results[shard] = ray.get(ref)
            except died:
                self.actors[slot] = self._new_actor()  # keep the pool at its size
                self.restarts += 1
                other = (slot + 1) % len(self.actors)  # re-run elsewhere: a live actor
                retry = self.actors[other].run.remote(kind, centre, source, *shard)
                pending[retry] = (other, shard)
        return results

    def close(self) -> None:
        """Stop the actors (the Ray instance itself is left running)."""
        if self.actors:
            ray = require_ray()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors = []

    def __getstate__(self) -> dict[str, Any]:
        # Actor handles do not travel (e.g. into a checkpoint or a Tune trial): start afresh.
        return {**self.__dict__, "actors": [], "_model_ref": None, "_chunk": 0}
