"""Evaluate P perturbed copies of a model in batched tensor ops (DESIGN.md: population).

``evaluate(model, perturbation, batch, loss) -> fitness (P,)`` runs every member on the same
minibatch; ``estimate(params, perturbation, weights) -> gradient`` regenerates the same noise to
turn shaped fitness into a search-gradient. Nothing population-sized is ever stored.
"""

from spikeopt.population.evaluate import (
    DEFAULT_MEMORY_MB,
    Source,
    chunk_size,
    evaluate,
    evaluate_samples,
    full_rank,
    members_of,
    members_per_pass,
)
from spikeopt.population.layers import Context, snn_forward, supports
from spikeopt.population.node import (
    NodeNoise,
    NodePerturbation,
    block_sizes,
    coarse,
    layer_params,
    split_pairs,
)
from spikeopt.population.noise import (
    MODES,
    PAIRS_PER_BLOCK,
    Noise,
    Offsets,
    Perturbation,
    estimate,
    materialize,
    perturbed,
)
from spikeopt.population.shaping import SHAPINGS, Shaping, get_shaping, tie_fraction
from spikeopt.population.vmap import RANDOMNESS

__all__ = [
    "DEFAULT_MEMORY_MB",
    "MODES",
    "PAIRS_PER_BLOCK",
    "RANDOMNESS",
    "SHAPINGS",
    "Context",
    "NodeNoise",
    "NodePerturbation",
    "Noise",
    "Offsets",
    "Perturbation",
    "Shaping",
    "Source",
    "block_sizes",
    "chunk_size",
    "coarse",
    "estimate",
    "evaluate",
    "evaluate_samples",
    "full_rank",
    "get_shaping",
    "layer_params",
    "materialize",
    "members_of",
    "members_per_pass",
    "perturbed",
    "snn_forward",
    "split_pairs",
    "supports",
    "tie_fraction",
]
