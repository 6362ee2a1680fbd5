"""Acting in batched environments: the policy actor, episode seeds, and the ES objective.

Every episode's environment seed is a function of ``(trainer.seed, stream, index)``
(:func:`episode_seed`), and action sampling draws from a generator seeded the same way, so a
run resumed at update ``u`` replays exactly what an uninterrupted run would have done.

:class:`ControlObjective` is the control task seen by population methods (ES, SNES, CMA-ES):
fitness is the mean return of ``rl.batch_episodes`` episodes per member, every member on the
same environment seeds (common random numbers), the whole population stepped as one batch
of ``P x E`` environments with one batched forward pass per time step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from spikeopt.config import Config
from spikeopt.nn.policies import policy_logits, population_logits
from spikeopt.population import Offsets, Perturbation, members_of
from spikeopt.tasks.envs import BatchEnv, Episodes, episode_stats, run_episodes

TRAIN, EVAL, GENERATION, SAMPLING = 0, 1, 2, 3  # seed streams


def episode_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for episode/generation ``index`` of ``stream`` of run ``seed``."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class PolicyActor:
    """Acts with a policy network: sampled from its softmax, or its most likely action.

    Records how often each action was taken and each layer's firing rate, over the steps of
    episodes that were still running.
    """

    def __init__(self, model: nn.Module, cfg: Config, greedy: bool, seed: int = 0) -> None:
        self.model, self.cfg, self.greedy = model, cfg, greedy
        self.gen = torch.Generator().manual_seed(seed)
        self.counts = np.zeros(0)
        self.rates: list[float] = []
        self.n = 0

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, running: np.ndarray) -> np.ndarray:
        """Actions (n,) for observations (n, D)."""
        self.model.eval()
        logits, spikes = policy_logits(self.model, obs, self.cfg)
        if self.greedy:
            actions = logits.argmax(-1)
        else:
            actions = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.gen)[:, 0]
        a = actions.numpy()
        live = torch.as_tensor(running)
        k = int(live.sum())
        if not len(self.counts):
            self.counts = np.zeros(logits.shape[-1])
            self.rates = [0.0] * len(spikes)
        self.counts += np.bincount(a[running], minlength=logits.shape[-1])
        for i, s in enumerate(spikes):
            self.rates[i] += float(s[live].mean()) * k
        self.n += k
        return a

    def stats(self) -> dict[str, float]:
        """``action_{k}`` fractions and ``layer{i}_rate`` over the steps acted so far."""
        total = max(1.0, float(self.counts.sum()))
        out = {f"action_{k}": float(c) / total for k, c in enumerate(self.counts)}
        out.update({f"layer{i}_rate": r / max(1, self.n) for i, r in enumerate(self.rates)})
        return out


def run_policy(
    env: BatchEnv, model: nn.Module, cfg: Config, seeds: list[int], greedy: bool, seed: int = 0
) -> tuple[Episodes, dict[str, float]]:
    """Episodes of the policy on ``seeds`` and its action/firing statistics."""
    actor = PolicyActor(model, cfg, greedy, seed)
    return run_episodes(env, actor, seeds), actor.stats()


class ControlObjective:
    """Fitness = mean episodic return over shared seeds; ``batch`` is the generation's seeds."""

    def __init__(self, env: BatchEnv, cfg: Config) -> None:
        self.env, self.cfg = env, cfg
        self.last: Episodes | None = None  # the centre's episodes of the latest generation

    def centre(self, model: nn.Module, batch: list[int]) -> dict[str, float]:
        """Return, success and steps of the unperturbed policy (acting greedily) on ``batch``."""
        ep, acts = run_policy(self.env, model, self.cfg, batch, greedy=True)
        self.last = ep
        stats = episode_stats(ep)
        return {"loss": -stats["return"], **stats, **acts}

    def fitness(self, model: nn.Module, source: Perturbation | Offsets, batch: list[int]) -> Tensor:
        """(P,) float64 mean return of every member, all members' episodes in one batch."""
        noise = members_of(model, source)
        pop, e = source.population, len(batch)
        chunk = self.cfg.es.chunk if self.cfg.es.chunk > 0 else pop
        fitness = torch.empty(pop, dtype=torch.float64)
        for m0 in range(0, pop, chunk):
            m1 = min(pop, m0 + chunk)
            members = noise.members(m0, m1)

            def act(
                obs: np.ndarray, running: np.ndarray, c: int = m1 - m0, m: Any = members
            ) -> np.ndarray:
                logits = population_logits(model, m, obs.reshape(c, e, -1), self.cfg)
                return logits.argmax(-1).reshape(-1).numpy()

            ep = run_episodes(self.env, act, list(batch) * (m1 - m0))
            fitness[m0:m1] = torch.as_tensor(ep.returns.reshape(m1 - m0, e).mean(1))
        return fitness

    def gradient(self, model: nn.Module, batch: list[int]) -> list[Tensor] | None:
        """No differentiable loss: episodic return has no surrogate gradient here."""
        return None
