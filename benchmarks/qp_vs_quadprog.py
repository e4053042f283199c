"""Batched jittable QP (all m rows of UPGrad at once) vs quadprog per row (TorchJD's way).

For m = 2, 4, …, 128 and a random Jacobian (n = 2m parameters, plus a shared component
so that tasks conflict partly), UPGrad needs the m QPs ``min_{v ≥ e_i/m} ½ vᵀGv``.

* ``jaxpareto``: :func:`jaxpareto.weighting.upgrad_weights`, jitted, all rows in one
  vmapped interior-point + active-set solve on the default device;
* ``quadprog``: ``quadprog.solve_qp`` on the host, one call per row in a Python loop
  (what TorchJD's ``_project_weight_vector`` does through ``qpsolvers``), without
  TorchJD's ``1e-4`` regularisation (the Gramian here is positive definite) so that both
  solve the same problem.

Reported per m: median wall time of each (after warm-up), the ratio quadprog / jaxpareto
(> 1: jaxpareto faster), the worst scale-free KKT residual of each (computed the same way,
by :func:`jaxpareto.weighting.qp.qp_kkt_residual`, in float64), and the largest
difference of the weights. Run: ``python -m benchmarks.qp_vs_quadprog [--repeats N]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import median_time, write

jax.config.update("jax_enable_x64", True)

from jaxpareto.weighting.qp import qp_kkt_residual  # noqa: E402
from jaxpareto.weighting.upgrad import upgrad_weights  # noqa: E402

SIZES = (2, 4, 8, 16, 32, 64, 128)


def gramian(m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 2 * m
    jac = rng.standard_normal((m, n)) + 0.5 * rng.standard_normal(n)
    return jac @ jac.T


def quadprog_rows(quadprog, gram: np.ndarray) -> np.ndarray:
    m = gram.shape[0]
    rows = np.empty((m, m))
    for i in range(m):
        rows[i] = quadprog.solve_qp(gram, np.zeros(m), np.eye(m), np.eye(m)[i] / m)[0]
    return rows


def kkt_rows(gram: np.ndarray, rows: np.ndarray) -> float:
    m = gram.shape[0]
    fn = jax.jit(jax.vmap(lambda v, u: qp_kkt_residual(gram, None, v, lower=u)))
    return float(jnp.max(fn(jnp.asarray(rows), jnp.eye(m) / m)))


def main(repeats: int = 10, sizes=SIZES) -> dict:
    try:
        import quadprog
    except ImportError:
        quadprog = None
        print("quadprog is not installed (pip install quadprog): timing jaxpareto only")
    solve = jax.jit(upgrad_weights)
    table = []
    print(f"{'m':>4} {'jaxpareto ms':>13} {'quadprog ms':>12} {'ratio':>7} "
          f"{'kkt jaxpareto':>14} {'kkt quadprog':>13} {'max |Δw|':>9} {'iters':>5}")
    for m in sizes:
        gram = gramian(m, seed=m)
        g = jnp.asarray(gram)
        t0 = time.perf_counter()
        res = jax.block_until_ready(solve(g))
        compile_s = time.perf_counter() - t0
        ours = median_time(lambda: solve(g), repeats=repeats)
        row = {
            "m": m,
            "jaxpareto_median_s": ours["median_s"],
            "jaxpareto_min_s": ours["min_s"],
            "jaxpareto_compile_s": compile_s,
            "jaxpareto_kkt": float(res.kkt_residual),
            "jaxpareto_kkt_recomputed": kkt_rows(gram, np.asarray(res.projections) / 1.0),
            "jaxpareto_converged": bool(res.converged),
            "jaxpareto_ipm_iterations": int(res.iterations),
            "repeats": repeats,
        }
        if quadprog is not None:
            rows = quadprog_rows(quadprog, gram)
            theirs = median_time(lambda: quadprog_rows(quadprog, gram), repeats=repeats,
                                 warmup=1)
            row.update(
                quadprog_median_s=theirs["median_s"],
                quadprog_min_s=theirs["min_s"],
                ratio_quadprog_over_jaxpareto=theirs["median_s"] / ours["median_s"],
                quadprog_kkt=kkt_rows(gram, rows),
                max_abs_weight_difference=float(
                    np.max(np.abs(rows.sum(0) - np.asarray(res.weights)))),
            )
        table.append(row)
        print(f"{m:>4} {1e3 * row['jaxpareto_median_s']:>13.3f} "
              f"{1e3 * row.get('quadprog_median_s', float('nan')):>12.3f} "
              f"{row.get('ratio_quadprog_over_jaxpareto', float('nan')):>7.2f} "
              f"{row['jaxpareto_kkt_recomputed']:>14.2e} {row.get('quadprog_kkt', float('nan')):>13.2e} "
              f"{row.get('max_abs_weight_difference', float('nan')):>9.1e} "
              f"{row['jaxpareto_ipm_iterations']:>5d}")
    payload = {
        "description": "UPGrad weights: all m dual-cone QPs in one jitted batched solve vs "
                       "quadprog per row in a Python loop (TorchJD). ratio > 1: jaxpareto "
                       "faster. KKT: scale-free residual, float64.",
        "quadprog_version": getattr(quadprog, "__version__", None) if quadprog else None,
        "results": table,
    }
    path = write("qp_vs_quadprog", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    main(args.repeats, tuple(args.sizes))
