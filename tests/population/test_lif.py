"""The population LIF loops: spikes equal the plain model's, projected spikes equal spikes @ W."""

import pytest
import torch

from spikeopt.functional.neuron import LIFParams, lif_sequence
from spikeopt.functional.surrogate import get_surrogate
from spikeopt.population.lif import TILE_ELEMENTS, lif_project, lif_run

FN = get_surrogate("fast_sigmoid")


def _current(static: bool, members: int = 5, steps: int = 7, rows: int = 3, n: int = 6):
    torch.manual_seed(0)
    shape = (members, rows, n) if static else (members, steps, rows, n)
    return 1.5 * torch.rand(shape, dtype=torch.float64), steps


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_run_equals_the_plain_neuron(static, reset):
    cur, steps = _current(static)
    p = LIFParams(beta=0.8, v_threshold=1.0, v_reset=-0.1, v_rest=0.05, reset=reset)
    spikes, mems = lif_run(cur, p, FN, steps, keep_mems=True)
    for m in range(cur.shape[0]):  # plain layout (B, T, N) vs time-major (T, B, N)
        s, v = lif_sequence(cur[m] if static else cur[m].transpose(0, 1), p, FN, steps)
        torch.testing.assert_close(spikes[m], s.transpose(0, 1), rtol=0, atol=0)
        torch.testing.assert_close(mems[m], v.transpose(0, 1), rtol=0, atol=0)
    assert 0 < spikes.mean() < 1


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_projected_spikes_equal_spikes_times_weights(static, reset):
    cur, steps = _current(static)
    p = LIFParams(beta=0.8, v_threshold=1.0, v_rest=0.05, reset=reset)
    w = torch.randn(cur.shape[0], cur.shape[-1], 4, dtype=torch.float64)  # (c, N, K)
    spikes, _ = lif_run(cur, p, FN, steps)  # (c, T, B, N)
    z = lif_project(cur, p, steps, w)  # (T, c, B, K)
    torch.testing.assert_close(z.transpose(0, 1), spikes @ w.unsqueeze(1))


def test_projection_tiles_members_and_matches_one_tile():
    rows = TILE_ELEMENTS // 2  # two members per tile: five members take three tiles
    # double: a one-member bmm may sum the rows in another order than a two-member one
    cur = torch.rand(5, 1, rows, dtype=torch.float64) * 1.2
    w = torch.randn(5, rows, 2, dtype=torch.float64)
    p = LIFParams(beta=0.9)
    whole = lif_project(cur, p, 3, w)
    for m in range(5):
        torch.testing.assert_close(
            whole[:, m : m + 1], lif_project(cur[m : m + 1], p, 3, w[m : m + 1])
        )
