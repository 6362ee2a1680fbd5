"""The search object: a recipe, a metric to optimise, a space of dotted keys, and Ray Tune.

::

    from spikeopt import tune
    s = tune.Search("digits-es", metric="test_acc", mode="max")
    s.bind("optim.lr", tune.loguniform(1e-3, 3e-2))
    s.bind_model_param("hidden", tune.choice([[64], [128]]))
    s.set_num_samples(16)
    s.run()
    s.best_config()              # a Config; write_best_config(path) -> `spikeopt run --config`
    model = s.best_model()       # the best epoch's weights, loaded into a fresh model
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from torch import nn

from spikeopt import api
from spikeopt import config as C
from spikeopt.builders import Builders
from spikeopt.dist import ensure_ray
from spikeopt.train import outputs as io
from spikeopt.train.experiment import TASKS, build, planned_rows
from spikeopt.tune import memory, space
from spikeopt.tune.space import require_tune
from spikeopt.tune.trial import run_trial

SCHEDULERS: tuple[str, ...] = ("asha", "hyperband", "median", "fifo")
SEARCHERS: tuple[str, ...] = ("random", "optuna")
BUDGET_FRACTION = 0.8  # of the RAM available when the search starts


class Search:
    """A hyperparameter search over one recipe; every setter returns ``self`` (chainable).

    ``metric`` is a metrics.csv column ('' = the task's headline: ``test_acc``, or for a
    control recipe ``return``); Ray sees one report per row, so for control ``max_t`` and
    the grace periods count episodes (population methods: generations).
    """

    def __init__(self, recipe: str, metric: str = "", mode: str = "max",
                 overrides: dict[str, Any] | None = None, config_file: str | None = None,
                 storage_path: str | Path | None = None, name: str = "",
                 builders: Builders | None = None) -> None:  # fmt: skip
        self.recipe = recipe
        self.base = api.resolve(recipe, overrides, config_file)  # bad recipe/keys fail here
        C.check_choices(self.base.trainer)
        task = TASKS[self.base.trainer.task]
        self.metric = metric or task.metric  # test_acc; control: an episode's return
        self.mode = C.choose("--mode", mode, ("max", "min"))
        self.space: dict[str, Any] = {}
        self.num_samples, self.max_concurrent = 1, 0
        self.resources: dict[str, float] = {"cpu": 1.0, "gpu": 0.0}
        self.scheduler, self.scheduler_args = "asha", dict[str, Any]()
        self.searcher, self.searcher_args = "random", dict[str, Any]()
        self.memory_budget_mb = 0.0  # 0 = BUDGET_FRACTION of available RAM at run()
        self.storage_path = Path(storage_path or Path("runs") / "tune").absolute()
        self.name = name or recipe
        self.address = ""
        self.results: Any = None
        self.builders = builders  # user model/data/loss/metrics, shipped to every trial

    # -- binding keys ------------------------------------------------------------------------

    def bind(self, key: str, domain: Any) -> Search:
        """Search ``key`` (dotted, any namespace) over ``domain`` (a Tune domain or a value)."""
        space.check(self.base, key, domain)
        self.space[key] = domain
        return self

    def bind_all(self, bindings: dict[str, Any]) -> Search:
        """Bind every ``{key: domain}`` (e.g. what :func:`spikeopt.tune.space.load` returns)."""
        for key, domain in bindings.items():
            self.bind(key, domain)
        return self

    def _ns(self, namespace: str, name: str, domain: Any) -> Search:
        return self.bind(f"{namespace}.{name}", domain)

    def bind_data_param(self, name: str, domain: Any) -> Search:
        """``data.<name>`` (batch size, subset sizes, augmentation)."""
        return self._ns("data", name, domain)

    def bind_encoder_param(self, name: str, domain: Any) -> Search:
        """``encoder.<name>`` (steps, kind, gain)."""
        return self._ns("encoder", name, domain)

    def bind_model_param(self, name: str, domain: Any) -> Search:
        """``model.<name>`` (hidden sizes, readout, dropout, init)."""
        return self._ns("model", name, domain)

    def bind_neuron_param(self, name: str, domain: Any) -> Search:
        """``neuron.<name>`` (tau_m, threshold, reset)."""
        return self._ns("neuron", name, domain)

    def bind_surrogate_param(self, name: str, domain: Any) -> Search:
        """The surrogate and its annealing: ``surrogate`` or ``alpha*`` keys of ``neuron.``."""
        if name != "surrogate" and not name.startswith("alpha"):
            raise C.ConfigError(
                f"bind_surrogate_param: '{name}' is not a surrogate key; use surrogate, alpha, "
                "alpha_schedule, alpha_end or alpha_step_every"
            )
        return self._ns("neuron", name, domain)

    def bind_method_param(self, name: str, domain: Any) -> Search:
        """``es.<name>`` for population methods (sigma, population, rank), else ``method.``."""
        return self._ns("es" if hasattr(C.ESConfig, name) else "method", name, domain)

    def bind_optim_param(self, name: str, domain: Any) -> Search:
        """``optim.<name>`` (lr, weight decay, betas, clipping)."""
        return self._ns("optim", name, domain)

    def bind_sched_param(self, name: str, domain: Any) -> Search:
        """``sched.<name>``: the optimizer's LR schedule."""
        return self._ns("sched", name, domain)

    def bind_trainer_param(self, name: str, domain: Any) -> Search:
        """``trainer.<name>`` (epochs, steps per epoch, seed)."""
        return self._ns("trainer", name, domain)

    def bind_loss_param(self, loss: str, name: str, domain: Any) -> Search:
        """A parameter of loss term ``loss`` (``loss.<loss>_<name>``, e.g. rate + weight ->
        ``loss.rate_weight``), or a plain ``loss.<name>`` key when ``loss`` is ''."""
        return self._ns("loss", f"{loss}_{name}" if loss else name, domain)

    def bind_metric_param(self, name: str, domain: Any) -> Search:
        """``metric.<name>``."""
        return self._ns("metric", name, domain)

    def bind_early_stop_param(self, name: str, domain: Any) -> Search:
        """``early_stop.<name>`` (mode, patience, threshold)."""
        return self._ns("early_stop", name, domain)

    # -- how it runs -------------------------------------------------------------------------

    def set_num_samples(self, n: int) -> Search:
        """Trials to sample (each grid point is repeated ``n`` times, as in Ray Tune)."""
        if n < 1:
            raise C.ConfigError(f"num_samples must be >= 1, got {n}")
        self.num_samples = n
        return self

    def set_resources(self, cpu: float = 1.0, gpu: float = 0.0) -> Search:
        """Resources each trial reserves."""
        if cpu <= 0 or gpu < 0:
            raise C.ConfigError(f"resources need cpu > 0 and gpu >= 0, got cpu={cpu} gpu={gpu}")
        self.resources = {"cpu": float(cpu), "gpu": float(gpu)}
        return self

    def set_max_concurrent_trials(self, n: int) -> Search:
        """Trials at once (0 = as many as CPUs and the memory guard allow)."""
        if n < 0:
            raise C.ConfigError(f"max_concurrent_trials must be >= 0, got {n}")
        self.max_concurrent = n
        return self

    def set_memory_budget(self, mb: float) -> Search:
        """RAM all concurrent trials may use together (0 = 80 % of what is available)."""
        self.memory_budget_mb = float(mb)
        return self

    def set_scheduler(self, name: str = "asha", **kwargs: Any) -> Search:
        """Trial scheduler: asha (default) | hyperband | median | fifo; kwargs go to Ray's class."""
        self.scheduler = C.choose("scheduler", name, SCHEDULERS)
        self.scheduler_args = kwargs
        return self

    def set_search_alg(self, name: str = "random", **kwargs: Any) -> Search:
        """random (Ray's sampler, grids expanded) | optuna (Ray's OptunaSearch, TPE)."""
        self.searcher = C.choose("search", name, SEARCHERS)
        self.searcher_args = kwargs
        return self

    def set_address(self, address: str) -> Search:
        """Join a Ray cluster ('auto' = the one this node belongs to) instead of a local Ray."""
        self.address = address
        return self

    # -- running and results -----------------------------------------------------------------

    def memory_estimate(self) -> dict[str, float]:
        """The guard's per-trial estimate, for the largest values the space can produce."""
        return memory.trial_mb(space.largest(self.base, self.space), self.builders)

    def concurrency(self) -> int:
        """Trials at once after the memory guard (raises if the request does not fit)."""
        budget = self.memory_budget_mb or BUDGET_FRACTION * memory.available_mb()
        per_trial = self.memory_estimate()["total_mb"]
        return memory.guard(per_trial, self.max_concurrent, budget)

    def _max_t(self) -> int:
        """The most rows a trial reports (Ray's time unit here is one report)."""
        return max(planned_rows(self.base), planned_rows(space.largest(self.base, self.space)))

    def _make_scheduler(self) -> Any:
        from ray.tune import schedulers as S

        args = dict(self.scheduler_args)
        if self.scheduler == "asha":
            args = {"max_t": self._max_t(), "grace_period": 1, "reduction_factor": 2, **args}
            return S.ASHAScheduler(time_attr="training_iteration", **args)
        if self.scheduler == "hyperband":
            args = {"max_t": self._max_t(), "reduction_factor": 3, **args}
            return S.HyperBandScheduler(time_attr="training_iteration", **args)
        if self.scheduler == "median":
            args = {"grace_period": 1, "min_samples_required": 3, **args}
            return S.MedianStoppingRule(time_attr="training_iteration", **args)
        return S.FIFOScheduler()

    def _make_searcher(self) -> Any:
        if self.searcher == "random":
            return None
        if any(isinstance(d, dict) and "grid_search" in d for d in self.space.values()):
            raise C.ConfigError("optuna search cannot expand grids; use choice instead of grid")
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(**{"seed": self.base.trainer.seed, **self.searcher_args})

    def run(self) -> Any:
        """Run every trial; returns Ray's ResultGrid (also kept for the ``best_*`` methods)."""
        if not self.space:
            raise C.ConfigError("nothing to search: bind at least one key (or give --space)")
        concurrent = self.concurrency()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # One small checkpoint per improving epoch is the design, not a sync bottleneck.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        ensure_ray(self.address)
        tune = require_tune()
        trainable = functools.partial(
            run_trial, recipe=self.recipe, base=C.to_dict(self.base), metric=self.metric,
            mode=self.mode, builders=self.builders,
        )  # fmt: skip
        tuner = tune.Tuner(
            tune.with_resources(trainable, self.resources),
            param_space=dict(self.space),
            tune_config=tune.TuneConfig(
                metric=self.metric,
                mode=self.mode,
                num_samples=self.num_samples,
                max_concurrent_trials=concurrent,
                scheduler=self._make_scheduler(),
                search_alg=self._make_searcher(),
                # A reused actor reports a stale trial dir, and the loop's outputs of two
                # trials would land in one folder: one process per trial.
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=self.name,
                storage_path=str(self.storage_path),
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1,
                    checkpoint_score_attribute=self.metric,
                    checkpoint_score_order=self.mode,
                ),
            ),
        )
        self.results = tuner.fit()
        return self.results

    def best_result(self) -> Any:
        """Ray's Result of the trial whose best epoch scored best on the metric."""
        if self.results is None:
            raise C.ConfigError("no results yet: call run() first")
        ok = [r for r in self.results if r.error is None and r.metrics]
        if not ok:
            errors = "; ".join(str(e).splitlines()[0] for e in self.results.errors)
            raise C.ConfigError(f"every trial failed: {errors}")
        return self.results.get_best_result(self.metric, self.mode, scope="all")

    def best_config(self) -> C.Config:
        """The full config of the best trial: recipe defaults <- overrides <- its sample."""
        return C.apply(self.base, self.best_result().config)

    def write_best_config(self, path: str | Path) -> Path:
        """Write :meth:`best_config` as YAML that ``spikeopt run RECIPE --config`` accepts."""
        io.write_text(Path(path), C.dump_yaml(self.best_config()))
        return Path(path)

    def best_model(self) -> nn.Module:
        """A fresh model of the best config with the weights of the best trial's best epoch."""
        result = self.best_result()
        if result.checkpoint is None:
            raise C.ConfigError("the best trial saved no checkpoint")
        with result.checkpoint.as_directory() as d:
            ck = io.load_checkpoint(Path(d) / "checkpoint.pt")
        model = build(self.best_config(), self.builders).model
        model.load_state_dict(ck["method"]["model"])
        return model
