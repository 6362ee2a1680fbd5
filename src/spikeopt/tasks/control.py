"""Control: a policy acting in batched environments, one metrics row per episode.

An epoch is one update. REINFORCE: the current policy samples ``rl.batch_episodes``
episodes, the method trains on them and each becomes a row. Population methods (``es``,
``snes``, ``cma``): one generation scores the population on ``rl.batch_episodes`` shared
episode seeds (:class:`ControlObjective`) and the centre policy's episodes make the row. At
the end: the evaluation episodes, the preset's random and greedy baselines and the session
metrics (:mod:`spikeopt.tasks.control_metrics`), DESIGN.md's control summary keys.

Every episode's environment seed is a function of ``(trainer.seed, stream, index)``
(:func:`episode_seed`) and action sampling draws from a generator seeded the same way, so a
run resumed at update ``u`` replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from spikeopt import config as C
from spikeopt.nn.policies import build_policy, input_dim, policy_logits, readout
from spikeopt.nn.policies import encode as encode_obs
from spikeopt.nn.quant import apply_hw
from spikeopt.population import Context, Source, members_of, perturbed, snn_forward, supports
from spikeopt.population.noise import ChunkNoise
from spikeopt.population.quant import quantised_members
from spikeopt.population.vmap import VmapForward
from spikeopt.tasks.base import Batch, ModelFn, Row, Step, call_factory, check_model
from spikeopt.tasks.control_metrics import session_metrics
from spikeopt.tasks.envs import BatchEnv, Episodes, baselines, episode_stats, make_env, run_episodes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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

    def __init__(self, model: nn.Module, cfg: C.Config, greedy: bool, seed: int = 0) -> None:
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
    env: BatchEnv, model: nn.Module, cfg: C.Config, seeds: list[int], greedy: bool, seed: int = 0
) -> tuple[Episodes, dict[str, float]]:
    """Episodes of the policy on ``seeds`` and its action/firing statistics."""
    actor = PolicyActor(model, cfg, greedy, seed)
    return run_episodes(env, actor, seeds), actor.stats()


@torch.no_grad()
def population_logits(
    model: nn.Module, noise: ChunkNoise, obs: np.ndarray, cfg: C.Config
) -> Tensor:
    """Logits (c, B, A) of the ``c`` members in ``noise``, member ``i`` seeing ``obs[i]`` (B, D).

    Built-in SNNs take the batched low-rank path; any other module (the MLP baseline) runs
    on the population's ``vmap`` fallback over its materialised member weights.
    """
    x = encode_obs(obs, cfg.policy, cfg.encoder.steps)  # (c, B, T, D')
    if supports(model):
        with quantised_members(model) as exact:  # quantised weights: each member's, rounded
            ctx = Context(exact(noise))
            spikes, mems = snn_forward(model, x, ctx, keep_hidden=False, per_member=True)  # type: ignore[arg-type]
    else:
        forward = VmapForward(model, perturbed(model), x, cfg.es.vmap_randomness, per_member=True)
        spikes, mems = forward(noise)
    return readout(spikes, mems, cfg.policy)


class ControlObjective:
    """Fitness = mean episodic return over shared seeds; ``batch`` is the generation's seeds.

    Every member acts greedily on the same seeds (common random numbers); the population's
    ``P x E`` environments are stepped as one batch with one batched forward per time step.
    """

    def __init__(self, env: BatchEnv, cfg: C.Config) -> None:
        self.env, self.cfg = env, cfg
        self.last: Episodes | None = None  # the centre's latest episodes, for inspection

    def centre(self, model: nn.Module, batch: list[int]) -> dict[str, float]:
        """Return, success, steps and optimal steps of the unperturbed policy (acting
        greedily) on ``batch``: everything a generation's row reports."""
        ep, acts = run_policy(self.env, model, self.cfg, batch, greedy=True)
        self.last = ep
        stats = episode_stats(ep)
        return {"loss": -stats["return"], **stats, "optimal_steps": float(np.mean(ep.optimal)),
                **acts}  # fmt: skip

    def fitness(self, model: nn.Module, source: Source, batch: list[int]) -> Tensor:
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

    def chunk_for(self, model: nn.Module, source: Any, batch: list[int]) -> int:
        """``es.chunk``, or 0: a member's return does not depend on how members are batched."""
        return min(self.cfg.es.chunk, source.population)

    def chunked(self, chunk: int) -> ControlObjective:
        """This objective stepping ``chunk`` members' environments at a time."""
        cfg = dataclasses.replace(self.cfg, es=dataclasses.replace(self.cfg.es, chunk=chunk))
        return ControlObjective(self.env, cfg)


class Rollout(NamedTuple):
    """What a REINFORCE batch was rolled out from: the rows report it episode by episode."""

    numbers: range  # training-episode numbers (0-based)
    episodes: Episodes
    acts: dict[str, float]  # action fractions and firing rates while acting


class ControlTask:
    """Closed-loop control on the :class:`~spikeopt.tasks.base.Task` protocol."""

    kind = "control"
    sections = ("env", "policy", "rl", "encoder")  # the config sections it reads
    metric = "return"
    key = "episode"
    shown: tuple[str, ...] = ("return", "success", "steps")
    steps = 1  # one update per epoch
    loss = None  # episodic return is not differentiable

    def __init__(
        self, cfg: C.Config, device: torch.device, population: bool, model_fn: ModelFn | None = None
    ) -> None:
        """Environment, policy and objective; every bad setting raises here."""
        if device.type != "cpu":
            raise C.ConfigError("control runs step environments on the CPU; set trainer.device=cpu")
        r = cfg.rl
        if r.batch_episodes < 1 or r.episodes < 1 or r.generations < 1 or r.eval_episodes < 0:
            raise C.ConfigError(
                "rl.batch_episodes, rl.episodes and rl.generations must be >= 1 and "
                "rl.eval_episodes >= 0"
            )
        if r.converge_window < 1 or not 0 < r.converge_level <= 1 or r.baseline_episodes < 0:
            raise C.ConfigError(
                "rl.converge_window must be >= 1, rl.converge_level in (0, 1] and "
                "rl.baseline_episodes >= 0"
            )
        if cfg.model.init == "fluct":
            raise C.ConfigError(
                "model.init=fluct fits the weights to batches of real inputs, which a control "
                "task does not have before it acts; use model.init=default | kaiming | xavier"
            )
        self.cfg, self.population = cfg, population
        self.env = make_env(cfg.env)
        torch.manual_seed(cfg.trainer.seed)
        if model_fn:  # a user policy: the readout must have one neuron per action
            C.check_choices(cfg.policy)
            shape = (input_dim(cfg.policy, self.env.obs_dim),)
            self.model = call_factory(model_fn, cfg, shape, self.env.n_actions)
            check_model(self.model, self.example(2), self.env.n_actions)
        else:
            self.model = build_policy(cfg, self.env.obs_dim, self.env.n_actions)
        apply_hw(self.model, cfg)
        self.objective = ControlObjective(make_env(cfg.env), cfg)  # its own batch of envs
        self.epochs = r.generations if population else math.ceil(r.episodes / r.batch_episodes)

    @staticmethod
    def planned_rows(cfg: C.Config, population: bool) -> int:
        """The metrics rows a full run writes: one per generation, or one per episode."""
        return cfg.rl.generations if population else cfg.rl.episodes

    def example(self, n: int) -> Tensor:
        """The policy's input (n, T, D') for the first observations of ``n`` episodes."""
        if self.cfg.encoder.steps < 1:
            raise C.ConfigError(f"encoder.steps must be >= 1, got {self.cfg.encoder.steps}")
        obs = self.env.reset([episode_seed(self.cfg.trainer.seed, EVAL, i) for i in range(n)])
        return encode_obs(obs, self.cfg.policy, self.cfg.encoder.steps)

    def batches(self, epoch: int) -> Iterator[Batch]:
        """REINFORCE: the current policy's sampled episodes; population methods: the seeds."""
        r, seed = self.cfg.rl, self.cfg.trainer.seed
        if self.population:
            yield Batch([episode_seed(seed, GENERATION, epoch * 10_000 + i)
                         for i in range(r.batch_episodes)])  # fmt: skip
            return
        first = epoch * r.batch_episodes
        index = range(first, min(first + r.batch_episodes, r.episodes))
        seeds = [episode_seed(seed, TRAIN, i) for i in index]
        ep, acts = run_policy(self.env, self.model, self.cfg, seeds, False,
                              episode_seed(seed, SAMPLING, epoch))  # fmt: skip
        yield Batch([ep.episode(i) for i in range(len(seeds))], Rollout(index, ep, acts))

    def evaluate(self, epoch: int, steps: list[Step], head: Row) -> list[Row]:
        """One row per episode trained on (population methods: one per generation), each
        with the loop's ``lr`` and ``alpha`` unless the method reported its own."""
        [(rollout, metrics)] = steps
        if self.population:
            m = dict(metrics)
            rows = [{"episode": (epoch + 1) * self.cfg.rl.batch_episodes, "update": epoch + 1,
                     "success": m.pop("success_rate"), "optimal_steps": m.pop("optimal_steps"),
                     **m}]  # fmt: skip
        else:
            ep = rollout.episodes
            rows = []
            for j, i in enumerate(rollout.numbers):
                n, optimal = int(ep.lengths[j]), float(ep.optimal[j])
                rows.append({"episode": i + 1, "update": epoch + 1, "return": float(ep.returns[j]),
                             "steps": n, "success": float(ep.success[j]),
                             "optimal_steps": optimal, "steps_ratio": n / optimal,
                             **rollout.acts, **metrics})  # fmt: skip
        for row in rows:
            for k, v in head.items():
                if k != "step":  # "update" numbers the steps already
                    row.setdefault(k, v)
        return rows

    def summary(self, rows: list[Row]) -> Row:
        """Session metrics, evaluation episodes and baselines: DESIGN.md's control keys."""
        cfg, r, seed = self.cfg, self.cfg.rl, self.cfg.trainer.seed
        col = {k: [row[k] for row in rows] for k in ("success", "steps", "optimal_steps", "return")}
        session = session_metrics(col["success"], col["steps"], col["optimal_steps"],
                                  col["return"], r.converge_window, r.converge_level)  # fmt: skip
        eval_seeds = [episode_seed(seed, EVAL, i) for i in range(r.eval_episodes)]
        ev: dict[str, float] = {}
        if eval_seeds:  # population methods trained a greedy policy: evaluate it greedily
            ep, _ = run_policy(self.env, self.model, cfg, eval_seeds,
                               r.eval_greedy or self.population,
                               episode_seed(seed, SAMPLING, 10**9))  # fmt: skip
            ev = {f"eval_{k}": v for k, v in episode_stats(ep).items()}
        base = baselines(self.env, r.baseline_episodes, seed) if r.baseline_episodes > 0 else {}
        grid = cfg.env.name in ("chemotaxis", "foraging")
        return {
            "env": cfg.env.name,
            "preset": cfg.env.preset if grid else cfg.env.name,
            **session,
            **ev,
            **base,
            "episodes": rows[-1]["episode"] if self.population else len(rows),
            # every episode an environment ran for training (population: P members + centre)
            "env_episodes": len(rows) * r.batch_episodes * (cfg.es.population + 1)
            if self.population
            else len(rows),
        }

    def curves(self, rows: list[Row], summary: Row, title: str) -> Figure:
        """Return, success and steps per episode (population methods: per generation), with the
        random/greedy baselines as lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        # a population method logs one row per generation (its mean over members), a
        # REINFORCE run one per episode: the x axis says which
        along = "update" if self.population else "episode"
        for ax, key in zip(axes, ("return", "success", "steps")):
            _plot_rows(ax, rows, key, along)
            for who, style in (("random", ":"), ("greedy", "--")):
                ref = summary.get(f"{who}_{'success_rate' if key == 'success' else key}")
                if isinstance(ref, float) and math.isfinite(ref):
                    ax.axhline(ref, ls=style, color="grey", lw=1, label=who)
            ax.legend(fontsize=7)
        fig.suptitle(title or self.cfg.env.name)
        fig.tight_layout()
        return fig


def _plot_rows(ax: Any, rows: list[Row], key: str, along: str, window: int = 10) -> None:
    """One metric per row and its running mean over ``window`` rows, against ``along``
    (``episode``, or ``update``: one generation of a population method)."""
    x = [r[along] for r in rows]
    y = np.array([float(r.get(key, math.nan)) for r in rows])
    ax.plot(x, y, lw=0.8, alpha=0.5, label=key)
    unit = "generation" if along == "update" else "episode"
    if len(y) >= window:
        smooth = np.convolve(y, np.ones(window) / window, "valid")
        ax.plot(x[window - 1 :], smooth, lw=1.8, label=f"{key} (mean of {window} {unit}s)")
    ax.set_xlabel(unit)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
