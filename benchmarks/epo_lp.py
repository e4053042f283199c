"""EPO LP solve (Mahapatra & Rajan 2020, eq. 24): jaxpareto vs the reference approach vs HiGHS.

For each number of tasks ``m`` the same random instances (Gramian ``C``, losses ``l``,
preference ``r``) are solved by

* ``jp64`` / ``jp32``: ``jax.jit(jp.epo_weights)`` in float64 / float32, per call;
* ``jp_batch64``: ``jax.jit(jax.vmap(jp.epo_weights))`` over 64 preferences at once
  (float64; reported per batch and per preference);
* ``cvxpy_resolve``: the reference code's approach (``EPO_LP`` of dbmptr/EPOSearch,
  re-written here): a cvxpy ``Problem`` built once with ``Parameter``s, re-solved each
  call after assigning the parameters, with the solver the reference uses (GLPK via
  cvxopt) when installed, else cvxpy's default LP solver (the JSON says which);
* ``cvxpy_build_solve``: the same, but the problem is built (and canonicalised) anew
  on every call;
* ``highs``: ``scipy.optimize.linprog(method="highs")`` on the LP data.

The per-call times of the peers include the numpy work of forming ``a``, ``C a`` and
the right-hand side, as jaxpareto's include the same work in JAX.

Objective check. The LP data are rebuilt here in numpy from the paper's formulas
(:func:`lp_data`, independent of jaxpareto's code): ``l̂ = r⊙l/Σ r⊙l``,
``μ = Σ l̂ log(m l̂)``, ``a = r ⊙ (log(m l̂) − μ)``; balance (``μ > eps``): maximise
``βᵀ(Ca)`` s.t. ``Cβ ≥ rhs`` with ``rhs = Ca``, ``rhs[J] = −∞`` (``J = {(Ca)_j > 0}``),
``rhs[J*] = 0`` (or ``rhs = 0`` when ``J = ∅``); descent (``μ ≤ eps``, relaxed):
maximise ``βᵀ(C1)`` s.t. ``Cβ ≥ 0``; always ``β ∈ Δ_m``. All solvers must reach the same
optimum value: the relative gap ``|obj − obj_highs| / max_j |c_j|`` is reported (and
jaxpareto's weights are also checked for feasibility against these rows).

Instances: ``G = s·1uᵀ + Z`` with a common unit direction ``u`` and ``Z ~ N(0, 1/n)``,
``n = max(2m, 16)``, ``s ∈ [0, 1.5]`` (from conflicting to aligned tasks), ``l ~ U(0.1,
1)``, ``r ~ U(0.2, 1)``; every fifth instance lies on the ray (``r ⊙ l ∝ 1``), which
exercises the descent LP. Timing uses the first (balance-mode) instance.

Run: ``python -m benchmarks.epo_lp [--quick] [--sizes 2 4 ...] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog

import jaxpareto as jp

from benchmarks.timing import NOT_INSTALLED, add_threads_arg, fmt_ratio, fmt_time, median_time, peer, ratio, set_threads, write

SIZES = (2, 4, 8, 10, 16, 32, 64)
QUICK_SIZES = (2, 3)
BATCH = 64
EPS = 1e-4


# ------------------------------------------------------------------ instances, LP data


def instance(m: int, seed: int, on_ray: bool = False):
    """A random (C, l, r) with partly conflicting gradients (see the module docstring)."""
    rng = np.random.default_rng([m, seed])
    n = max(2 * m, 16)
    u = rng.normal(size=n)
    u /= np.linalg.norm(u)
    s = rng.uniform(0.0, 1.5)
    g = s * u[None, :] + rng.normal(size=(m, n)) / np.sqrt(n)
    c = g @ g.T
    r = rng.uniform(0.2, 1.0, size=m)
    losses = (1.0 / r) * rng.uniform(0.5, 1.0) if on_ray else rng.uniform(0.1, 1.0, size=m)
    return c, losses, r


def lp_data(c, losses, r, eps: float = EPS):
    """The LP (24) from the paper's formulas, in numpy (independent of jaxpareto).

    Returns ``(obj [m], rows [k, m], rhs [k], balance)``: maximise ``objᵀβ`` over
    ``β ∈ Δ_m`` subject to ``rows β ≥ rhs``; rows with ``rhs = −∞`` are dropped.
    """
    m = len(losses)
    rl = r * losses
    l_hat = rl / rl.sum()
    log_ml = np.log(m * l_hat)
    mu = float(np.sum(l_hat * log_ml))
    a = r * (log_ml - mu)
    ca = c @ a
    if mu > eps:
        in_j = ca > 0
        if in_j.any():
            rhs = ca.copy()
            rhs[in_j] = -np.inf
            rhs[rl == rl.max()] = 0.0
        else:
            rhs = np.zeros(m)
        obj = ca
    else:
        rhs = np.zeros(m)
        obj = c.sum(axis=1)
    keep = np.isfinite(rhs)
    return obj, c[keep], rhs[keep], mu > eps


def highs_solve(c, losses, r):
    """numpy LP data + ``scipy.optimize.linprog(method="highs")``: ``(β, objective)``."""
    obj, rows, rhs, _ = lp_data(c, losses, r)
    m = len(losses)
    res = linprog(-obj, A_ub=-rows if len(rhs) else None, b_ub=-rhs if len(rhs) else None,
                  A_eq=np.ones((1, m)), b_eq=[1.0], bounds=[(0, None)] * m, method="highs")
    if res.status != 0:
        return None, float("nan")
    return res.x, float(obj @ res.x)


# ------------------------------------------------------------------ the reference approach


class ReferenceEpoLP:
    """The EPO search reference code's LP, re-written: one cvxpy problem per mode with
    ``Parameter``s, built once and re-solved (balance; relaxed descent, which is the LP
    (24) itself — the reference's default ``restricted`` variant adds one row)."""

    def __init__(self, cp, m: int, solver: str | None, eps: float = EPS):
        self.cp, self.m, self.solver, self.eps = cp, m, solver, eps
        self.c = cp.Parameter((m, m))
        self.ca = cp.Parameter(m)
        self.rhs = cp.Parameter(m)
        self.alpha = cp.Variable(m)
        simplex = [self.alpha >= 0, cp.sum(self.alpha) == 1]
        self.prob_bal = cp.Problem(cp.Maximize(self.alpha @ self.ca),
                                   simplex + [self.c @ self.alpha >= self.rhs])
        self.prob_rel = cp.Problem(cp.Maximize(cp.sum(self.alpha @ self.c)),
                                   simplex + [self.c @ self.alpha >= 0])

    def solve(self, c, losses, r):
        """``(β, objective)`` as the reference's ``get_alpha``: numpy data, then cvxpy."""
        m = self.m
        rl = r * losses
        l_hat = rl / rl.sum()
        mu = float(np.sum(l_hat * np.log(m * l_hat)))
        a = r * (np.log(m * l_hat) - mu)
        self.c.value = c
        self.ca.value = c @ a
        kwargs = {} if self.solver is None else {"solver": self.solver}
        if mu > self.eps:
            in_j = self.ca.value > 0
            if in_j.any():
                rhs = self.ca.value.copy()
                rhs[in_j] = -np.inf
                rhs[rl == rl.max()] = 0
            else:
                rhs = np.zeros(m)
            self.rhs.value = rhs
            value = self.prob_bal.solve(**kwargs)
        else:
            value = self.prob_rel.solve(**kwargs)
        return self.alpha.value, float(value)


def reference_solver(cp) -> str | None:
    """GLPK (what the reference code passes to cvxpy) if installed, else cvxpy's default."""
    if "GLPK" in cp.installed_solvers():
        try:
            import cvxopt

            cvxopt.glpk.options["msg_lev"] = "GLP_MSG_OFF"  # as the reference does
        except Exception:  # noqa: BLE001
            pass
        return "GLPK"
    return None


# ------------------------------------------------------------------ benchmark

# Module-level jitted functions: repeated main() calls (tests) reuse their compilations.
_EPO = jax.jit(functools.partial(jp.epo_weights, eps=EPS))
_EPO_BATCH = jax.jit(jax.vmap(lambda rr, c, l: jp.epo_weights(c, l, rr, eps=EPS),
                              in_axes=(0, None, None)))
_FLOOR = jax.jit(lambda c, l, r: c[0, 0] + l[0] + r[0])


def _rel_gap(value, ref, obj):
    scale = max(float(np.max(np.abs(obj))), 1e-300)
    return abs(float(value) - ref) / scale


def _feasibility(weights, obj, rows, rhs):
    """Largest violation of ``rows β ≥ rhs`` and the simplex, relative to ``max |c|``."""
    w = np.asarray(weights, np.float64)
    scale = max(float(np.max(np.abs(rows))) if rows.size else 1.0, 1e-300)
    viol = np.max(np.maximum(rhs - rows @ w, 0)) / scale if len(rhs) else 0.0
    return max(viol, abs(w.sum() - 1), float(np.max(np.maximum(-w, 0))))


def bench_size(m, instances, repeats, cp, solver, dtypes):
    row = {"m": m, "instances": instances}
    cases = [instance(m, k, on_ray=(k % 5 == 4)) for k in range(instances)]
    jitted = _EPO
    ref = ReferenceEpoLP(cp, m, solver) if cp is not None else None

    # First call = trace + compile (+ one run), per dtype.
    for dt in dtypes:
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*(jnp.asarray(x, dt) for x in cases[0])))
        row[f"compile_{dt}_s"] = time.perf_counter() - t0

    # Agreement on every instance.
    gaps = {k: [] for k in ("jp64", "jp32", "cvxpy")}
    feas, statuses, balance = [], [], 0
    for c, l, r in cases:
        obj, rows, rhs, bal = lp_data(c, l, r)
        balance += bool(bal)
        _, best = highs_solve(c, l, r)
        for dt in dtypes:
            res = jitted(*(jnp.asarray(x, dt) for x in (c, l, r)))
            key = "jp64" if dt == "float64" else "jp32"
            statuses.append(int(res.lp_status))
            # jaxpareto's own objective, and its weights evaluated on the numpy LP data.
            gaps[key].append(max(_rel_gap(res.objective, best, obj),
                                 _rel_gap(obj @ np.asarray(res.weights, np.float64), best, obj)))
            if dt == "float64":
                feas.append(_feasibility(res.weights, obj, rows, rhs))
        if ref is not None:
            _, value = ref.solve(c, l, r)
            gaps["cvxpy"].append(_rel_gap(value, best, obj))
    row["balance_instances"] = balance
    row["jp_lp_status_nonzero"] = int(sum(s != 0 for s in statuses))
    for key, vals in gaps.items():
        row[f"gap_{key}"] = float(max(vals)) if vals else (NOT_INSTALLED if key == "cvxpy" else None)
    row["jp64_max_infeasibility"] = float(max(feas)) if feas else None

    # Timing on the first (balance-mode) instance.
    c, l, r = cases[0]
    t = {}
    for dt in dtypes:
        args = tuple(jnp.asarray(x, dt) for x in (c, l, r))
        key = "jp64" if dt == "float64" else "jp32"
        t[key] = median_time(lambda args=args: jitted(*args), repeats)["median_s"]
    # The dispatch floor of a jitted call with the same arguments (what no solver beats).
    floor = _FLOOR
    args64 = tuple(jnp.asarray(x) for x in (c, l, r))
    t["jit_floor"] = median_time(lambda: floor(*args64), repeats)["median_s"]

    prefs = jnp.asarray(np.random.default_rng([m, 999]).uniform(0.2, 1.0, size=(BATCH, m)))
    batched = _EPO_BATCH
    cb, lb = jnp.asarray(c), jnp.asarray(l)
    t0 = time.perf_counter()
    batch_res = jax.block_until_ready(batched(prefs, cb, lb))
    row["compile_batch_s"] = time.perf_counter() - t0
    t["jp_batch64"] = median_time(lambda: batched(prefs, cb, lb), repeats)["median_s"]
    t["jp_batch64_per_pref"] = t["jp_batch64"] / BATCH
    # The batch must agree with HiGHS too (every preference).
    bgaps = []
    for k in range(BATCH):
        rk = np.asarray(prefs[k])
        obj, _, _, _ = lp_data(c, l, rk)
        _, best = highs_solve(c, l, rk)
        bgaps.append(_rel_gap(batch_res.objective[k], best, obj))
    row["gap_jp_batch64"] = float(max(bgaps))

    t["highs"] = median_time(lambda: highs_solve(c, l, r), repeats, warmup=1)["median_s"]
    if cp is not None:
        t["cvxpy_resolve"] = median_time(lambda: ref.solve(c, l, r), repeats, warmup=1)["median_s"]
        t["cvxpy_build_solve"] = median_time(
            lambda: ReferenceEpoLP(cp, m, solver).solve(c, l, r), repeats, warmup=1)["median_s"]
    else:
        t["cvxpy_resolve"] = t["cvxpy_build_solve"] = NOT_INSTALLED
    row["time_s"] = t
    base = t.get("jp64")
    row["ratio"] = {
        "cvxpy_build_solve/jp64": ratio(t["cvxpy_build_solve"], base),
        "cvxpy_resolve/jp64": ratio(t["cvxpy_resolve"], base),
        "highs/jp64": ratio(t["highs"], base),
        "jp64/jp32": ratio(base, t.get("jp32")),
        "jp64/jp_batch64_per_pref": ratio(base, t["jp_batch64_per_pref"]),
        "highs/jp_batch64_per_pref": ratio(t["highs"], t["jp_batch64_per_pref"]),
        "jp64/jit_floor": ratio(base, t["jit_floor"]),
    }
    return row


def format_rows(rows) -> str:
    cols = ["jp64", "jp32", "jp_batch64_per_pref", "cvxpy_resolve", "cvxpy_build_solve", "highs"]
    head = (f"{'m':>3} " + " ".join(f"{c[:14]:>14}" for c in cols)
            + f" {'cvx-re/jp':>10} {'cvx-bld/jp':>10} {'highs/jp':>9} {'max gap':>9}")
    lines = [head]
    for r in rows:
        t, q = r["time_s"], r["ratio"]
        gap = max(v for k, v in r.items() if k.startswith("gap_") and isinstance(v, float))
        lines.append(
            f"{r['m']:>3} " + " ".join(f"{fmt_time(t.get(c, '–')):>14}" for c in cols)
            + f" {fmt_ratio(q['cvxpy_resolve/jp64']):>10} {fmt_ratio(q['cvxpy_build_solve/jp64']):>10}"
            f" {fmt_ratio(q['highs/jp64']):>9} {gap:9.1e}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="EPO LP solve: jaxpareto vs cvxpy vs HiGHS")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--instances", type=int, default=None, help="agreement instances per m")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"],
                        choices=["float64", "float32"])
    parser.add_argument("--out", default=None, help="results directory")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    jax.config.update("jax_enable_x64", True)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    instances = args.instances or (3 if args.quick else 20)
    repeats = args.repeats or (10 if args.quick else 30)
    cp = peer("cvxpy")
    solver = reference_solver(cp) if cp is not None else None
    rows = [bench_size(m, instances, repeats, cp, solver, args.dtypes) for m in sizes]
    print(format_rows(rows))
    payload = {
        "benchmark": "epo_lp",
        "description": "EPO LP (eq. 24) per-call solve time; objective gap vs HiGHS",
        "quick": args.quick,
        "repeats": repeats,
        "threads": threads,
        "batch": BATCH,
        "eps": EPS,
        "peers": {
            "cvxpy": NOT_INSTALLED if cp is None else cp.__version__,
            "cvxpy_solver": (NOT_INSTALLED if cp is None
                             else (solver or "cvxpy default (GLPK not installed)")),
            "highs": "scipy.optimize.linprog(method='highs')",
        },
        "rows": rows,
    }
    path = write("epo_lp" + ("_quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
