"""NIR export and import of spikeopt's spiking networks (``to_nir`` / ``from_nir``).

NIR (the Neuromorphic Intermediate Representation, ``nir`` package) describes neurons by
continuous-time ODEs; spikeopt's neurons are discrete (:mod:`spikeopt.functional.neuron`)::

    u[t] = v_rest + beta * (v[t-1] - v_rest) + I[t],   s[t] = H(u[t] - v_threshold)

NIR's LIF is ``tau dv/dt = (v_leak - v) + r I``; one forward-Euler step of length ``dt`` is
``v[t] = (1 - dt/tau) v[t-1] + dt/tau v_leak + dt/tau r I[t]``. That equals spikeopt's step
exactly when::

    tau = dt / (1 - beta)      r = tau / dt = 1 / (1 - beta)      v_leak = v_rest

(the input gain ``dt/tau * r`` is 1), the convention snnTorch's NIR export uses too; ``dt``
is the step in the graph's time unit (snnTorch's import assumes ``dt = 1e-4``; Norse's
``dt = 1e-3``). ``v_threshold`` is the threshold, ``v_reset`` the value after a spike.

Resets. ``neuron.reset=zero`` is NIR's LIF (``v = v_reset`` after a spike). NIR has no
subtractive reset, so ``neuron.reset=subtract`` is written with standard nodes only: an
``LI`` (the pre-reset membrane ``u``), a ``Threshold`` (``z = H(u - v_threshold)``) and a
``Scale(-beta * v_threshold)`` from ``z`` back into the LI -- a recurrent edge acts one step
later, so ``u[t+1] = beta (u[t] - v_threshold s[t]) + ...``, the subtraction exactly. A
recurrent layer adds a ``Linear(W_rec)`` from its spikes back into its neurons. NIR fires
at ``v > v_threshold``, spikeopt at ``u >= v_threshold``: they differ only when a membrane
lands exactly on the threshold. ``from_nir`` reads what ``to_nir`` writes (and graphs of
the same shape), so ``from_nir(to_nir(m, dt))`` gives ``m``'s spikes bit for bit. The
graph's ``metadata["dt"]`` records ``dt``. See docs/nir.md.
"""

from spikeopt.nir.read import from_nir
from spikeopt.nir.write import NIRError, to_nir

__all__ = ["NIRError", "from_nir", "to_nir"]
