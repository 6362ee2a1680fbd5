"""spikeopt: train spiking neural networks with surrogate gradients, evolution strategies,
hybrids of the two and REINFORCE."""

__version__ = "0.1.0"
