"""Pair-overlap cost and gradient for drift estimation (COMET-style), CPU twin and fused CUDA kernel.

For a pair of localizations (i, j) with positions p (nm), per-axis variances v (nm²) and time indices t,
and a drift table d[t] (nm, one row per time index), the residual is

    r_ij = (p_i - d[t_i]) - (p_j - d[t_j])

and the pair contributes  -exp(-½ Σ_a r_a² / s_a²)  with  s_a² = v_i,a + v_j,a + anneal_a  to the cost.
The gradient with respect to d[t] is accumulated per time index: d cost / d d[t_i] = -g_ij and
d cost / d d[t_j] = +g_ij with g_ij = e_ij r_ij / s².

The CPU twin works on undirected pairs (i < j) and is vectorised numpy. The CUDA kernel works on directed
pairs sorted by time index of their first member (every unordered pair appears twice) so that each pair
only writes to its own time index: a block does a segmented reduction in shared memory and writes one
value per time index it covers (atomics only where a time index straddles a block edge, at most two per
block), and one atomic per block for the cost. Both return the same numbers (tested against each other).
"""

from __future__ import annotations

import numpy as np


def cuda_available() -> bool:
    """True when CuPy imports and sees a CUDA device (never raises)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


class PairSetCPU:
    """Undirected pairs with their constant parts precomputed, for repeated cost/gradient evaluations.

    Per axis a: dpos[a] = p_i,a - p_j,a (nm) and inv_s2[a] = 1/s_a² (1/nm²), float32 1-D arrays;
    ti, tj: time indices; the gradient is scattered to time indices by bincounts (+ at tj, - at ti).
    Reductions are in float64.
    """

    def __init__(self, dpos, vsum, anneal_var, ti, tj, n_times: int):
        self.dpos = [np.ascontiguousarray(a, dtype=np.float32) for a in dpos]
        self.vsum = [np.ascontiguousarray(a, dtype=np.float32) for a in vsum]
        self.set_anneal(anneal_var)
        self.ti = np.asarray(ti, dtype=np.intp)
        self.tj = np.asarray(tj, dtype=np.intp)
        self.n_times = int(n_times)

    @classmethod
    def build(
        cls,
        pos: np.ndarray,
        var: np.ndarray,
        tidx: np.ndarray,
        i: np.ndarray,
        j: np.ndarray,
        anneal_var: np.ndarray | float,
        n_times: int,
    ) -> PairSetCPU:
        """Pairs (i, j) of localizations with positions `pos` (N, D) nm, variances `var` (N, D) nm²."""
        d = pos.shape[1]
        dpos = [pos[i, a] - pos[j, a] for a in range(d)]
        vsum = [var[i, a] + var[j, a] for a in range(d)]
        return cls(dpos, vsum, anneal_var, tidx[i], tidx[j], n_times)

    def set_anneal(self, anneal_var: np.ndarray | float) -> None:
        """Kernel widths s² = v_i + v_j + anneal_var (per axis, nm²) for the next evaluations."""
        anneal = np.broadcast_to(np.asarray(anneal_var, dtype=np.float64), (len(self.vsum),))
        self.inv_s2 = [(1.0 / (v + np.float32(anneal[a]))).astype(np.float32) for a, v in enumerate(self.vsum)]

    def scaled_distance2(self, drift_t: np.ndarray) -> np.ndarray:
        """Σ_a r_a² / s_a² per pair for the current kernel widths (for pruning)."""
        d = np.asarray(drift_t, dtype=np.float32).T
        out = np.zeros(len(self.ti), dtype=np.float32)
        for a in range(len(self.dpos)):
            da = np.ascontiguousarray(d[a])
            r = self.dpos[a] - (da[self.ti] - da[self.tj])
            out += r * r * self.inv_s2[a]
        return out

    def __len__(self) -> int:
        return len(self.ti)

    def residuals(self, drift_t: np.ndarray) -> np.ndarray:
        """r_ij (P, D) nm for the drift table `drift_t` (n_times, D) nm."""
        d = np.asarray(drift_t, dtype=np.float32).T
        return np.stack([self.dpos[a] - (d[a][self.ti] - d[a][self.tj]) for a in range(len(self.dpos))], 1)

    def cost_grad(self, drift_t: np.ndarray, curvature: bool = False):
        """Cost (sum over pairs) and its gradient (n_times, D) with respect to the drift table.

        With `curvature`, also the per-pair, per-axis curvature weights (P, D) of the cost along r,
        e (1/s² - r²/s⁴), floored at 0 so that the Hessian built from them is positive semi-definite.
        """
        d = np.ascontiguousarray(np.asarray(drift_t, dtype=np.float32).T)
        q = np.zeros(len(self.ti), dtype=np.float32)
        rs = []
        for a in range(len(self.dpos)):
            r = self.dpos[a] - (d[a][self.ti] - d[a][self.tj])
            ra = r * self.inv_s2[a]
            q += r * ra
            rs.append(ra)
        q *= -0.5
        e = np.exp(q)
        g = np.empty((len(self.ti), len(rs)), dtype=np.float32)
        for a, ra in enumerate(rs):
            np.multiply(ra, e, out=g[:, a])
        # scatter to time indices: +g at tj, -g at ti (two bincounts per axis, float64 sums)
        grad = np.empty((self.n_times, len(rs)))
        for a in range(len(rs)):
            grad[:, a] = np.bincount(self.tj, g[:, a], self.n_times) - np.bincount(self.ti, g[:, a], self.n_times)
        cost = -float(e.sum(dtype=np.float64))
        if not curvature:
            return cost, grad
        h = np.empty_like(g)
        for a, ra in enumerate(rs):
            # e/s² · (1 - r²/s²) = e·inv_s2 - e·(r·inv_s2)²
            np.clip(e * self.inv_s2[a] - e * ra * ra, 0.0, None, out=h[:, a])
        return cost, grad, h


def pair_cost_grad_cpu(
    pos: np.ndarray,
    var: np.ndarray,
    tidx: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    drift_t: np.ndarray,
    anneal_var: np.ndarray | float = 0.0,
) -> tuple[float, np.ndarray]:
    """Reference CPU cost and gradient for undirected pairs (i, j); see the module docstring."""
    ps = PairSetCPU.build(pos, var, tidx, i, j, anneal_var, len(drift_t))
    return ps.cost_grad(drift_t)


def directed_pairs(i: np.ndarray, j: np.ndarray, tidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every undirected pair, sorted by the time index of the first member."""
    rows = np.concatenate([i, j])
    cols = np.concatenate([j, i])
    order = np.argsort(tidx[rows], kind="stable")
    return rows[order].astype(np.int32), cols[order].astype(np.int32)


_KERNEL_SRC = r"""
extern "C" __global__
void pair_overlap(const float* __restrict__ pos, const float* __restrict__ var,
                  const int* __restrict__ tidx, const int* __restrict__ rows,
                  const int* __restrict__ cols, const double* __restrict__ drift,
                  const double* __restrict__ anneal, const long long n_pairs, const int D,
                  double* __restrict__ grad, double* __restrict__ cost)
{
    // One thread per directed pair. Pairs are sorted by tidx[rows[k]], so a time index occupies one
    // contiguous run; the block reduces each run in shared memory and writes it once.
    extern __shared__ unsigned char smem[];
    int* key = (int*)smem;
    double* val = (double*)(smem + ((blockDim.x * sizeof(int) + 7) / 8) * 8);
    const int tid = threadIdx.x;
    const long long k = (long long)blockIdx.x * blockDim.x + tid;
    const bool active = k < n_pairs;

    double g[3] = {0.0, 0.0, 0.0};
    double e = 0.0;
    int ti = -1;
    if (active) {
        const int i = rows[k], j = cols[k];
        ti = tidx[i];
        const int tj = tidx[j];
        double q = 0.0, r[3], is2[3];
        for (int a = 0; a < D; ++a) {
            r[a] = ((double)pos[i * D + a] - drift[ti * D + a]) - ((double)pos[j * D + a] - drift[tj * D + a]);
            is2[a] = 1.0 / ((double)var[i * D + a] + (double)var[j * D + a] + anneal[a]);
            q += r[a] * r[a] * is2[a];
        }
        e = exp(-0.5 * q);
        for (int a = 0; a < D; ++a) g[a] = -e * r[a] * is2[a];  // d cost / d drift[ti]
    }

    // cost: block reduction of -0.5 e (each unordered pair is seen twice), one atomic per block
    val[tid] = -0.5 * e;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) val[tid] += val[tid + s];
        __syncthreads();
    }
    if (tid == 0) atomicAdd(cost, val[0]);
    __syncthreads();

    // gradient: segmented inclusive scan keyed by ti, per axis
    key[tid] = ti;
    for (int a = 0; a < D; ++a) {
        val[tid] = g[a];
        __syncthreads();
        for (int off = 1; off < blockDim.x; off <<= 1) {
            double add = 0.0;
            if (tid >= off && key[tid - off] == ti) add = val[tid - off];
            __syncthreads();
            val[tid] += add;
            __syncthreads();
        }
        // the last thread of each run writes the run's sum
        const bool last = (tid == blockDim.x - 1) || (key[tid + 1] != ti);
        if (active && last) {
            int first = tid;
            while (first > 0 && key[first - 1] == ti) --first;
            const bool touches_edge = (first == 0) || (tid == blockDim.x - 1);
            if (touches_edge) atomicAdd(&grad[ti * D + a], val[tid]);
            else grad[ti * D + a] = val[tid];
        }
        __syncthreads();
    }
}
"""

_kernel_cache: dict[str, object] = {}


class PairSetCUDA:
    """Directed pairs resident on the GPU; `cost_grad(drift_t)` runs the fused kernel.

    Memory per unordered pair is 16 bytes (two directed int32 pairs) plus 4·(2D+1) bytes per
    localization, so 10⁷ localizations with ~20 neighbours each take about 1.7 GB.
    """

    def __init__(self, pos, var, tidx, i, j, anneal_var, n_times: int, block: int = 256):
        import cupy as cp

        if "k" not in _kernel_cache:
            _kernel_cache["k"] = cp.RawKernel(_KERNEL_SRC, "pair_overlap")
        self._cp = cp
        self._kernel = _kernel_cache["k"]
        rows, cols = directed_pairs(np.asarray(i), np.asarray(j), np.asarray(tidx))
        self.D = pos.shape[1]
        self.n_times = int(n_times)
        self.block = block
        self.pos = cp.asarray(np.ascontiguousarray(pos, dtype=np.float32))
        self.var = cp.asarray(np.ascontiguousarray(var, dtype=np.float32))
        self.tidx = cp.asarray(np.asarray(tidx, dtype=np.int32))
        self.rows = cp.asarray(rows)
        self.cols = cp.asarray(cols)
        self.anneal = cp.asarray(np.broadcast_to(np.asarray(anneal_var, np.float64), (self.D,)).copy())

    def set_anneal(self, anneal_var) -> None:
        self.anneal = self._cp.asarray(np.broadcast_to(np.asarray(anneal_var, np.float64), (self.D,)).copy())

    def cost_grad(self, drift_t: np.ndarray) -> tuple[float, np.ndarray]:
        cp = self._cp
        n = int(self.rows.size)
        grad = cp.zeros((self.n_times, self.D), dtype=cp.float64)
        cost = cp.zeros(1, dtype=cp.float64)
        drift = cp.asarray(np.ascontiguousarray(drift_t, dtype=np.float64))
        if n:
            grid = (n + self.block - 1) // self.block
            smem = ((self.block * 4 + 7) // 8) * 8 + self.block * 8
            self._kernel(
                (grid,), (self.block,),
                (self.pos, self.var, self.tidx, self.rows, self.cols, drift, self.anneal,
                 np.int64(n), np.int32(self.D), grad, cost),
                shared_mem=smem,
            )
        return float(cost.get()[0]), cp.asnumpy(grad)


def pair_cost_grad_cuda(
    pos: np.ndarray,
    var: np.ndarray,
    tidx: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    drift_t: np.ndarray,
    anneal_var: np.ndarray | float = 0.0,
) -> tuple[float, np.ndarray]:
    """GPU cost and gradient, same contract as `pair_cost_grad_cpu` (needs CuPy and a CUDA device)."""
    return PairSetCUDA(pos, var, tidx, i, j, anneal_var, len(drift_t)).cost_grad(drift_t)
