"""The pair-overlap cost: analytic gradient, and the CPU twin against the CUDA kernel."""

from __future__ import annotations

import numpy as np
import pytest

from compute.pair_overlap import cuda_available, pair_cost_grad_cpu


def _problem(dims, n=400, n_times=50, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 60, size=(n, dims))
    var = rng.uniform(4, 30, size=(n, dims))
    tidx = np.sort(rng.integers(0, n_times, size=n))
    from scipy.spatial import cKDTree

    pairs = cKDTree(pos).query_pairs(25.0, output_type="ndarray")
    drift = rng.normal(0, 3, size=(n_times, dims))
    return pos, var, tidx, pairs[:, 0], pairs[:, 1], drift


@pytest.mark.parametrize("dims", [2, 3])
def test_cpu_gradient_matches_finite_differences(dims):
    pos, var, tidx, i, j, drift = _problem(dims)
    anneal = np.full(dims, 9.0)
    f0, g = pair_cost_grad_cpu(pos, var, tidx, i, j, drift, anneal)
    rng = np.random.default_rng(1)
    for _ in range(6):
        t, a = int(rng.integers(0, len(drift))), int(rng.integers(0, dims))
        h = 1e-2
        dp, dm = drift.copy(), drift.copy()
        dp[t, a] += h
        dm[t, a] -= h
        num = (pair_cost_grad_cpu(pos, var, tidx, i, j, dp, anneal)[0]
               - pair_cost_grad_cpu(pos, var, tidx, i, j, dm, anneal)[0]) / (2 * h)
        assert abs(num - g[t, a]) < 2e-3 * max(1.0, abs(g[t, a])), (num, g[t, a])
    # a global shift changes nothing: the gradient sums to zero per axis
    np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-6 * len(i))  # float32 pair terms


def test_cpu_cost_matches_a_direct_sum():
    pos, var, tidx, i, j, drift = _problem(2, n=60)
    f, _ = pair_cost_grad_cpu(pos, var, tidx, i, j, drift, 0.0)
    direct = 0.0
    for a, b in zip(i, j, strict=True):
        r = (pos[a] - drift[tidx[a]]) - (pos[b] - drift[tidx[b]])
        direct -= np.exp(-0.5 * np.sum(r * r / (var[a] + var[b])))
    assert abs(f - direct) < 1e-5 * max(1.0, abs(direct))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dims", [2, 3])
def test_cuda_kernel_matches_cpu_twin(dims):
    from compute.pair_overlap import pair_cost_grad_cuda

    pos, var, tidx, i, j, drift = _problem(dims, n=5000, n_times=300, seed=dims)
    anneal = np.full(dims, 4.0)
    f_cpu, g_cpu = pair_cost_grad_cpu(pos, var, tidx, i, j, drift, anneal)
    f_gpu, g_gpu = pair_cost_grad_cuda(pos, var, tidx, i, j, drift, anneal)
    assert abs(f_cpu - f_gpu) < 1e-4 * abs(f_cpu)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-3, atol=1e-4 * np.abs(g_cpu).max())
