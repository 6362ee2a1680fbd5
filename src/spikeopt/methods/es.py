"""Evolution strategies: antithetic NES / OpenAI-ES, evaluated as one batched population.

One step is one generation on one minibatch that every member shares (common random numbers,
including the encoder noise the loop drew once)::

    theta_m = theta + sigma * s_m * eps_k         m = 2k, 2k+1 with s_m = +1, -1
    f_m     = -loss(theta_m; batch)               population.evaluate, chunked and batched
    w       = shaping(f)                          centered ranks by default; NaN/inf rank worst
    g       = 1 / (P sigma) * sum_m w_m s_m eps   population.estimate, noise regenerated
    p.grad  = -g                                  the torch optimizer minimises

and then the same ``apply_update`` as BPTT (clipping, weight decay, Adam/SGD, LR schedules).
``eps`` is low-rank (``A B^T``) for weight matrices unless ``es.mode=full``; the noise of
generation ``t`` is a function of ``(seed, t, member)``, so a resumed run replays it exactly.
(Wierstra et al. 2014, NES; Salimans et al. 2017, OpenAI-ES; low-rank noise as in EGGROLL.)
"""

from __future__ import annotations

from torch import Tensor

from spikeopt.config import Config
from spikeopt.methods.base import TrainState
from spikeopt.methods.strategy import Generation, Strategy, check_sigma, sigma_at
from spikeopt.population import Perturbation, estimate


class ES(Strategy):
    """Antithetic ES with fitness shaping; the estimate goes through the shared optimizer.

    Metrics beyond :class:`~spikeopt.methods.strategy.Strategy`'s: ``sigma`` of the generation.
    The task enters only through the objective (default: classification on the batch).
    """

    name = "es"

    def check(self, cfg: Config) -> None:
        """Population, sigma, rank, mode and the sigma floor fail here, before training."""
        check_sigma(cfg.es)
        self.perturbation(0)

    def perturbation(self, step: int) -> Perturbation:
        """The population of generation ``step``."""
        e = self.cfg.es
        return Perturbation(
            e.population, sigma_at(step, e), e.rank, e.mode, self.seed, step, e.table_size
        )

    def passes(self, step: int) -> tuple[int, int]:
        """The centre and every member forward; a BPTT pass when the cosine is due."""
        every = self.cfg.es.cosine_every
        extra = int(every > 0 and step % every == 0)
        return 1 + self.cfg.es.population + extra, extra

    def ask(self, state: TrainState, gen: Generation) -> Perturbation:
        """Seeds of this generation's antithetic pairs."""
        pert = self.perturbation(state.step)
        gen.metrics["sigma"] = pert.sigma
        return pert

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor]:
        """The NES estimate, negated: it points uphill in fitness = downhill in loss."""
        assert gen.fitness is not None
        return [-g for g in estimate(gen.params, gen.source, self.shaping(gen.fitness))]
