"""Min-norm (MGDA) solve: jaxpareto vs the MGDA-UB reference solvers vs TorchJD.

``min_{β∈Δ_m} βᵀCβ`` on the same random Gramians for each ``m``, solved by

* ``jp64`` / ``jp32``: ``jax.jit(jp.min_norm_weights)`` (active set), float64 / float32;
* ``jp_fw64``: ``jax.jit(jp.min_norm_weights(method="frank_wolfe"))`` — the reference's
  Frank–Wolfe inside JAX, to separate algorithm from implementation;
* ``np_fw``: a faithful numpy Frank–Wolfe as in the MGDA-UB reference
  (``MinNormSolver.find_min_norm_element_FW``: best pair start, analytic two-point line
  search with its 0.999 / 0.001 clipping, stop when the L1 change < 1e-5 returning the
  previous iterate; the 250-iteration cap it declares is enforced here);
* ``np_pgd``: the reference's projected-gradient variant (``find_min_norm_element``,
  the one its training script calls), same conventions;
* ``torchjd``: ``torchjd.aggregation.MGDAWeighting()`` (its Frank–Wolfe, defaults
  ``epsilon=1e-3``, ``max_iters=100``) on a float64 CPU tensor;
* ``quadprog``: Goldfarb–Idnani dual active set (``quadprog.solve_qp``) on
  ``2C + δI`` (``δ = 1e-10 max_i C_ii``, it needs a positive definite matrix) — the
  oracle for the optimum value.

Reported: median time per call (first instance), and over all instances the worst
KKT residual (computed here in numpy, independent of jaxpareto) and the worst
objective gap ``(βᵀCβ − f*) / max_i C_ii`` against quadprog's ``f*``.

KKT residual (scale-free): with ``g = Cβ``, ``v = βᵀCβ``, ``s = max_i C_ii``:
``max(max_i (v − g_i)_+ / s, max_i β_i |g_i − v| / s, |Σβ − 1| + Σ(−β)_+)``.

Instances: ``G = s·1uᵀ + Z`` (common unit direction ``u``, ``Z ~ N(0, 1/n)``,
``s ∈ [0, 1.5]``); ``n = max(2m, 16)``, and every third instance is rank deficient
(``n = max(m // 2, 1)``).

Run: ``python -m benchmarks.min_norm [--quick] [--sizes ...] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpareto as jp
from benchmarks.timing import NOT_INSTALLED, add_threads_arg, fmt_ratio, fmt_time, median_time, peer, ratio, set_threads, write

SIZES = (2, 4, 8, 10, 16, 32, 64)
QUICK_SIZES = (2, 5)
REF_MAX_ITER = 250
REF_STOP = 1e-5


def instance(m: int, seed: int):
    rng = np.random.default_rng([m, seed, 7])
    n = max(m // 2, 1) if seed % 3 == 2 else max(2 * m, 16)
    u = rng.normal(size=n)
    u /= np.linalg.norm(u)
    g = rng.uniform(0.0, 1.5) * u[None, :] + rng.normal(size=(m, n)) / np.sqrt(n)
    return g @ g.T


def kkt(c, beta) -> float:
    """Scale-free KKT residual of ``min_{β∈Δ} βᵀCβ``, written in numpy: each task's
    dual and complementarity terms divided by ``n̄ (n_i + n̄)`` with ``n_i = √C_ii``
    and ``n̄ = Σ |β_i| n_i`` (the scale at which its condition is resolvable), so that
    rescaling one task's gradient does not change the residual."""
    c = np.asarray(c, np.float64)
    beta = np.asarray(beta, np.float64)
    g = c @ beta
    v = beta @ g
    n = np.sqrt(np.maximum(np.diag(c), 0))
    nbar = np.abs(beta) @ n
    den = np.maximum(nbar * (n + nbar), np.finfo(np.float64).tiny)
    dual = np.max(np.maximum(v - g, 0) / den)
    comp = np.max(np.abs(beta) * np.abs(g - v) / den)
    primal = abs(beta.sum() - 1) + np.sum(np.maximum(-beta, 0))
    return float(max(dual, comp, primal))


# ------------------------------------------------------- the MGDA-UB reference solvers


def _two_point(v1v1, v1v2, v2v2):
    """``min_γ ‖γ x₁ + (1−γ) x₂‖²`` with the reference's 0.999 / 0.001 clipping."""
    if v1v2 >= v1v1:
        return 0.999, v1v1
    if v1v2 >= v2v2:
        return 0.001, v2v2
    gamma = -(v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2)
    return gamma, v2v2 + gamma * (v1v2 - v2v2)


def _best_pair(c):
    m = c.shape[0]
    best, sol = np.inf, None
    for i in range(m):
        for j in range(i + 1, m):
            gamma, cost = _two_point(c[i, i], c[i, j], c[j, j])
            if cost < best:
                best = cost
                sol = np.zeros(m)
                sol[i], sol[j] = gamma, 1 - gamma
    return sol


def np_frank_wolfe(c):
    """``find_min_norm_element_FW`` of the MGDA-UB reference, on the Gramian."""
    sol = _best_pair(c)
    if c.shape[0] < 3:
        return sol
    for _ in range(REF_MAX_ITER):
        t = int(np.argmin(c @ sol))
        gamma, _ = _two_point(sol @ c @ sol, sol @ c[:, t], c[t, t])
        new = gamma * sol
        new[t] += 1 - gamma
        if np.sum(np.abs(new - sol)) < REF_STOP:
            return sol
        sol = new
    return sol


def _project_simplex(y):
    m = len(y)
    ys = np.sort(y)[::-1]
    tau = (np.sum(y) - 1) / m
    acc = 0.0
    for i in range(m - 1):
        acc += ys[i]
        t = (acc - 1) / (i + 1)
        if t > ys[i + 1]:
            tau = t
            break
    return np.maximum(y - tau, 0)


def np_projected_gradient(c):
    """``find_min_norm_element`` of the MGDA-UB reference, on the Gramian."""
    sol = _best_pair(c)
    m = c.shape[0]
    if m < 3:
        return sol
    for _ in range(REF_MAX_ITER):
        grad = -(c @ sol)
        proj = grad - grad.sum() / m
        t = 1.0
        neg, pos = proj < 0, proj > 0
        t1 = -sol[neg] / proj[neg]
        t2 = (1 - sol[pos]) / proj[pos]
        if np.any(t1 > 1e-7):
            t = np.min(t1[t1 > 1e-7])
        if np.any(t2 > 1e-7):
            t = min(t, np.min(t2[t2 > 1e-7]))
        point = _project_simplex(sol + t * proj)
        gamma, _ = _two_point(sol @ c @ sol, sol @ c @ point, point @ c @ point)
        new = gamma * sol + (1 - gamma) * point
        if np.sum(np.abs(new - sol)) < REF_STOP:
            return sol
        sol = new
    return sol


def quadprog_solve(quadprog, c):
    m = c.shape[0]
    ridge = 1e-10 * float(np.max(np.diag(c)))
    cons = np.hstack([np.ones((m, 1)), np.eye(m)])
    b = np.concatenate([[1.0], np.zeros(m)])
    return quadprog.solve_qp(2 * c + ridge * np.eye(m), np.zeros(m), cons, b, 1)[0]


# ------------------------------------------------------------------ benchmark


# Module-level jitted solvers: repeated main() calls (tests) reuse their compilations.
_AUTO = jax.jit(jp.min_norm_weights)
_FW = jax.jit(functools.partial(jp.min_norm_weights, method="frank_wolfe"))
_FLOOR = jax.jit(lambda c: c[0, 0])


def bench_size(m, instances, repeats, torch, torchjd, quadprog):
    cases = [instance(m, k) for k in range(instances)]
    solvers = {"jp64": (_AUTO, jnp.float64), "jp32": (_AUTO, jnp.float32),
               "jp_fw64": (_FW, jnp.float64)}
    row = {"m": m, "instances": instances}
    runners = {}
    for name, (fn, dt) in solvers.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jnp.asarray(cases[0], dt)))
        row[f"compile_{name}_s"] = time.perf_counter() - t0
        runners[name] = (lambda c, fn=fn, dt=dt: fn(jnp.asarray(c, dt)),
                         lambda out: np.asarray(out.weights, np.float64))
    runners["np_fw"] = (np_frank_wolfe, lambda out: out)
    runners["np_pgd"] = (np_projected_gradient, lambda out: out)
    if torchjd is not None:
        weighting = torchjd.aggregation.MGDAWeighting()
        runners["torchjd"] = (lambda c: weighting(torch.as_tensor(c, dtype=torch.float64)),
                              lambda out: out.numpy().astype(np.float64))
    if quadprog is not None:
        runners["quadprog"] = (lambda c: quadprog_solve(quadprog, c), lambda out: out)

    best = []
    for c in cases:
        if quadprog is not None:
            x = quadprog_solve(quadprog, c)
            best.append(float(x @ c @ x))
        else:
            best.append(None)
    kkts, gaps = {}, {}
    for name, (run, to_np) in runners.items():
        ks, gs = [], []
        for c, f_star in zip(cases, best):
            beta = to_np(run(c))
            ks.append(kkt(c, beta))
            if f_star is not None:
                gs.append((float(beta @ c @ beta) - f_star) / float(np.max(np.diag(c))))
        kkts[name] = float(max(ks))
        gaps[name] = float(max(gs)) if gs else NOT_INSTALLED
    for name in ("torchjd", "quadprog"):
        if name not in runners:
            kkts[name] = gaps[name] = NOT_INSTALLED
    row["kkt_max"] = kkts
    row["gap_max"] = gaps

    c0 = cases[0]
    t = {}
    for name, (run, _) in runners.items():
        t[name] = median_time(lambda run=run: run(c0), repeats, warmup=2)["median_s"]
    for name in ("torchjd", "quadprog"):
        t.setdefault(name, NOT_INSTALLED)
    c0j = jnp.asarray(c0)
    t["jit_floor"] = median_time(lambda: _FLOOR(c0j), repeats)["median_s"]
    row["time_s"] = t
    row["ratio"] = {f"{k}/jp64": ratio(t[k], t["jp64"])
                    for k in ("jp32", "jp_fw64", "np_fw", "np_pgd", "torchjd", "quadprog")}
    return row


def format_rows(rows) -> str:
    cols = ["jp64", "jp32", "jp_fw64", "np_fw", "np_pgd", "torchjd", "quadprog"]
    lines = [f"{'m':>3} " + " ".join(f"{c:>9}" for c in cols) + "   | worst KKT residual: "
             + " ".join(f"{c:>8}" for c in cols)]
    for r in rows:
        t, k = r["time_s"], r["kkt_max"]
        lines.append(f"{r['m']:>3} " + " ".join(f"{fmt_time(t[c]):>9}" for c in cols) + "   |"
                     + " " * 21 + " ".join(
                         f"{k[c]:8.1e}" if isinstance(k[c], float) else f"{'n/a':>8}" for c in cols))
    lines.append("ratios vs jp64: " + "; ".join(
        f"m={r['m']}: np_fw {fmt_ratio(r['ratio']['np_fw/jp64'])}, torchjd "
        f"{fmt_ratio(r['ratio']['torchjd/jp64'])}" for r in rows))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="min-norm solve: jaxpareto vs reference FW vs TorchJD")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="results directory")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    jax.config.update("jax_enable_x64", True)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    instances = args.instances or (3 if args.quick else 20)
    repeats = args.repeats or (10 if args.quick else 30)
    torch, torchjd, quadprog = peer("torch"), peer("torchjd.aggregation"), peer("quadprog")
    if torchjd is not None:
        torchjd = peer("torchjd")
    rows = [bench_size(m, instances, repeats, torch, torchjd, quadprog) for m in sizes]
    print(format_rows(rows))
    payload = {
        "benchmark": "min_norm",
        "description": "min-norm QP per-call solve time, worst KKT residual and objective gap",
        "quick": args.quick,
        "repeats": repeats,
        "threads": threads,
        "peers": {
            "torchjd": NOT_INSTALLED if torchjd is None else "torchjd.aggregation.MGDAWeighting()",
            "quadprog": NOT_INSTALLED if quadprog is None else "quadprog.solve_qp (oracle)",
            "reference": "numpy re-implementation of MGDA-UB min_norm_solvers (FW and PGD)",
        },
        "rows": rows,
    }
    path = write("min_norm" + ("_quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
