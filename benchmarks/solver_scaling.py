"""Weight solvers from m = 2 to 256 tasks: time, scale-free residual, overhead ratio.

Three tables, on Gramians ``C = G Gᵀ`` of random Jacobians whose per-task gradient
norms are drawn from ``10^U(−spread, spread)`` (default spread 4: norms spanning 1e8):

1. **Scaling**: median time of one jitted call of every weight solver (``min_norm``,
   ``upgrad``, ``dualproj``, ``imtl_g``, ``nash_mtl``, ``cagrad``, ``aligned_mtl``,
   ``pcgrad``, ``epo``) at each ``m``, float64 and float32, with the worst scale-free
   residual over the instances, computed here in numpy from the Gramian (not from the
   solver's own report):

   * ``min_norm`` (Sener & Koltun 2018, eq. 3): the KKT residual of the simplex QP on
     each task's own scale, ``slack_i = ((Cβ)_i − βᵀCβ) / (n̄ (n_i + n̄))`` with
     ``n_i = √C_ii``, ``n̄ = βᵀn``: ``max(max(−slack), max(β_i n_i / n̄ · |slack_i|))``;
   * ``upgrad`` / ``dualproj`` (Quinton & Rey 2024): the worst conflict of the update
     ``d = Gᵀw`` with a task, ``max(0, −min_i (Cw)_i / (n_i √(wᵀCw)))`` (a cosine);
   * ``epo`` (Mahapatra & Rajan 2020, descent step on the preference ray): the same
     conflict measure;
   * the others: ``nan`` (no residual defined here).

   TorchJD 0.18's ``MGDAWeighting`` and ``UPGradWeighting`` run side by side on the same
   Gramians (torch float64 / float32 tensors), with the same residuals. Warm start
   (``warm_time_s``): MGDA from the previous step's weights (``init=``; here the
   solution for the same gradients each rescaled by ``1 + 5 %`` noise); the other
   solvers take no previous point (``"n/a"``).
2. **Overhead** (small m, the training-step case): each jitted solver's median time
   divided by that of an empty jitted call with the same argument
   (``jax.jit(lambda c: c[0])``), at ``m = 2, 4, 10``.

Timing: :func:`benchmarks.timing.interleaved_times` (the methods of one ``m`` and
dtype interleaved round by round, medians). On a shared machine the absolute numbers
move; the ratios within one round are the meaningful output.

Run: ``python -m benchmarks.solver_scaling [--quick] [--sizes ...] [--repeats N]
[--threads 1]``; the full run (m = 2 … 256) takes several minutes on one core.
"""

from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import (
    NOT_INSTALLED,
    add_threads_arg,
    fmt_time,
    interleaved_times,
    peer,
    set_threads,
    write,
)

SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
QUICK_SIZES = (2, 8, 32)
OVERHEAD_SIZES = (2, 4, 10)
SOLVERS = ("min_norm", "upgrad", "dualproj", "imtl_g", "nash_mtl", "cagrad", "aligned_mtl",
           "pcgrad", "epo")
DTYPES = {"f64": np.float64, "f32": np.float32}


def instance(m: int, seed: int, spread: float = 4.0):
    """``(gram, losses, preference)``: unit random directions in ``ℝ^{m+8}`` scaled by
    ``10^U(−spread, spread)``; losses on the preference ray (an EPO descent step)."""
    rng = np.random.default_rng([m, seed, 16])
    g = rng.standard_normal((m, m + 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g *= (10.0 ** rng.uniform(-spread, spread, m))[:, None]
    pref = rng.uniform(0.5, 2.0, m)
    return g @ g.T, 1.3 / pref, pref


@functools.cache
def _solver(name: str):
    """One jitted function per solver (a new ``jax.jit`` per call would compile again
    for every instance: that, not the solves, made the full run take an hour)."""
    from jaxpareto import weighting as W

    fns = {
        "min_norm": lambda c, l, r: W.min_norm_weights(c).weights,
        "upgrad": lambda c, l, r: W.upgrad_weights(c).weights,
        "dualproj": lambda c, l, r: W.dualproj_weights(c).weights,
        "imtl_g": lambda c, l, r: W.imtl_g_weights(c).weights,
        "nash_mtl": lambda c, l, r: W.nash_mtl_weights(c).weights,
        "cagrad": lambda c, l, r: W.cagrad_weights(c, 0.5).weights,
        "aligned_mtl": lambda c, l, r: W.aligned_mtl_weights(c).weights,
        "pcgrad": lambda c, l, r: W.pcgrad_weights(c).weights,
        "epo": lambda c, l, r: W.epo_weights(c, l, r).weights,
    }
    return jax.jit(fns[name])


def min_norm_residual(gram, beta):
    """Scale-free KKT residual of ``argmin_{β∈Δ} βᵀCβ`` (module docstring)."""
    n = np.sqrt(np.maximum(np.diag(gram), 0))
    nbar = max(beta @ n, 1e-300)
    slack = (gram @ beta - beta @ gram @ beta) / (nbar * (n + nbar))
    return float(max(np.max(-slack), np.max(beta * n / nbar * np.abs(slack)),
                     abs(beta.sum() - 1)))


def conflict(gram, w):
    """``max(0, −min_i ⟨g_i, d⟩ / (‖g_i‖ ‖d‖))`` for ``d = Gᵀw``, from the Gramian."""
    n = np.sqrt(np.maximum(np.diag(gram), 0))
    dn = math.sqrt(max(w @ gram @ w, 0.0))
    if dn == 0:
        return 0.0
    return float(max(0.0, -np.min(gram @ w / (np.where(n > 0, n, 1) * dn))))


RESIDUALS = {"min_norm": min_norm_residual, "upgrad": conflict, "dualproj": conflict,
             "epo": conflict, "torchjd_mgda": min_norm_residual, "torchjd_upgrad": conflict}


def bench_size(m, dtype_name, instances, repeats, torch, torchjd):
    dtype = DTYPES[dtype_name]
    data = [instance(m, s) for s in range(instances)]
    args = [tuple(jnp.asarray(x, dtype) for x in d) for d in data]
    fns = {name: functools.partial(_solver(name), *args[0]) for name in SOLVERS}
    outs = {name: [np.asarray(_solver(name)(*a), np.float64) for a in args] for name in SOLVERS}
    if torchjd is not None:
        tdtype = torch.float64 if dtype == np.float64 else torch.float32
        peers = {"torchjd_mgda": torchjd.aggregation.MGDAWeighting(),
                 "torchjd_upgrad": torchjd.aggregation.UPGradWeighting()}
        tgrams = [torch.as_tensor(np.asarray(d[0], dtype), dtype=tdtype) for d in data]
        for name, weighting in peers.items():
            fns[name] = functools.partial(weighting, tgrams[0])
            outs[name] = [weighting(t).detach().numpy().astype(np.float64) for t in tgrams]
    # Warm start (MGDA): the previous training step's weights, here the solution for the
    # same gradients each rescaled by 1 + 5 % noise.
    from jaxpareto import weighting as W

    warm_fn = jax.jit(lambda c, init: W.min_norm_weights(c, init=init).weights)
    d = 1 + 0.05 * np.random.default_rng([m, 99]).standard_normal(m)
    prev = [warm_fn(jnp.asarray(x[0] * np.outer(d, d), dtype), None) for x in data]
    fns["min_norm_warm"] = functools.partial(warm_fn, args[0][0], prev[0])
    outs["min_norm_warm"] = [np.asarray(warm_fn(a[0], p), np.float64)
                             for a, p in zip(args, prev)]
    times = interleaved_times(fns, repeats=repeats)
    row = {"m": m, "dtype": dtype_name, "time_s": {}, "warm_time_s": {}, "residual": {}}
    for name in fns:
        if name == "min_norm_warm":
            continue
        row["time_s"][name] = times[name]["median_s"]
        row["warm_time_s"][name] = (times["min_norm_warm"]["median_s"] if name == "min_norm"
                                    else "n/a")
        res = RESIDUALS.get(name)
        row["residual"][name] = (
            float("nan") if res is None else max(res(d[0], w) for d, w in zip(data, outs[name])))
    row["warm_residual"] = {"min_norm": max(
        min_norm_residual(x[0], w) for x, w in zip(data, outs["min_norm_warm"]))}
    return row


def bench_overhead(m, dtype_name, repeats):
    dtype = DTYPES[dtype_name]
    args = tuple(jnp.asarray(x, dtype) for x in instance(m, 0))
    empty = jax.jit(lambda c, l, r: c[0])
    fns = {"empty": functools.partial(empty, *args)}
    fns.update({name: functools.partial(_solver(name), *args) for name in SOLVERS})
    times = interleaved_times(fns, repeats=repeats)
    base = times["empty"]["median_s"]
    return {"m": m, "dtype": dtype_name, "empty_s": base,
            "ratio": {name: times[name]["median_s"] / base for name in SOLVERS}}


def format_rows(rows, overhead):
    names = list(rows[0]["time_s"]) if rows else []
    lines = ["m  dtype " + " ".join(f"{n:>15}" for n in names) + "  min_norm warm"]
    for r in rows:
        cells = [f"{fmt_time(r['time_s'][n]):>8}/{r['residual'][n]:6.0e}" for n in names]
        warm = r["warm_time_s"].get("min_norm", "n/a")
        warm = fmt_time(warm) if isinstance(warm, float) else warm
        lines.append(f"{r['m']:<3}{r['dtype']:>5} " + " ".join(f"{c:>15}" for c in cells)
                     + f"  {warm:>13}")
    lines.append("overhead (solver time / empty jitted call)")
    for r in overhead:
        lines.append(f"m={r['m']:<3}{r['dtype']} " + " ".join(
            f"{n} {v:.1f}x" for n, v in r["ratio"].items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="weight solvers from m = 2 to 256 tasks")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="results directory")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    jax.config.update("jax_enable_x64", True)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    instances = args.instances or (2 if args.quick else 5)
    repeats = args.repeats or (5 if args.quick else 15)
    torch, torchjd = peer("torch"), peer("torchjd.aggregation")
    if torchjd is not None:
        torchjd = peer("torchjd")
    rows = [bench_size(m, d, instances, repeats, torch, torchjd)
            for m in sizes for d in args.dtypes]
    overhead = [bench_overhead(m, d, repeats) for m in OVERHEAD_SIZES for d in args.dtypes]
    print(format_rows(rows, overhead))
    payload = {
        "benchmark": "solver_scaling",
        "description": "weight solvers: time and scale-free residual at m = 2..256 (norm "
                       "spread 1e8), TorchJD MGDA/UPGrad side by side; overhead vs an "
                       "empty jitted call at m = 2, 4, 10",
        "quick": args.quick,
        "repeats": repeats,
        "instances": instances,
        "threads": threads,
        "peers": {"torchjd": NOT_INSTALLED if torchjd is None
                  else "torchjd.aggregation.MGDAWeighting(), UPGradWeighting()"},
        "rows": rows,
        "overhead": overhead,
    }
    path = write("solver_scaling" + ("_quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
