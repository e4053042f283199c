"""Soak test: long float32 runs of EPO and MGDA with restarts and noisy losses.

``python -m benchmarks.soak [--steps 20000] [--restart-every 1000] [--quick]
[--problems epo_synthetic dtlz2] [--methods epo mgda] [--out PATH]``

For each problem (the EPO synthetic problem, n = 20, m = 2, and DTLZ2, m = 3, n = 12)
and each method (``jp.epo`` with a preference drawn per restart, passed at run time,
and ``jp.mgda``), ``steps`` optimizer steps run in float32 as
``optax.chain(jp.<method>, optax.sgd(lr))`` inside ``jax.lax.scan``:

* every ``restart_every`` steps the parameters restart from a random point (and EPO
  from a new preference ``r ~ U(0.1, 1)^m``); the optimizer state carries over, so the
  transform sees abrupt changes of losses and gradients;
* the losses fed to the transform are noisy, ``l ⊙ exp(σ_l ε)``, and so is the
  Jacobian, ``J + σ_g rms(J) ε`` (a stochastic-gradient regime; ``ε ~ N(0, 1)``);
* with probability ``p_bad`` a step's losses are replaced by zeros, negatives, NaN or
  inf (one each in turn), the failure modes the catalogue documents.

Reported per run (stdout table and ``benchmarks/results/soak.json``): steps, the number
of steps with a non-finite parameter or update (must be 0), the EPO LP status histogram,
the fallback / guard counts (EPO ``fallback`` and ``clipped_losses``, MGDA
``degenerate``, steps ``skipped`` by the transform), and at the end of every restart
segment the non-uniformity ``μ_r`` of the noise-free losses (EPO: against its
preference; MGDA: against ``1``, for reference) and the distance to the Pareto set.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp
from jaxpareto.weighting import INFEASIBLE, MAX_ITER, NUMERICAL_ERROR, OPTIMAL

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
STATUS_NAMES = {OPTIMAL: "optimal", INFEASIBLE: "infeasible", MAX_ITER: "max_iter",
                NUMERICAL_ERROR: "numerical_error"}


class Counts(NamedTuple):
    nonfinite_params: jax.Array
    nonfinite_updates: jax.Array
    lp_status: jax.Array  # [4] histogram
    fallback: jax.Array
    clipped_losses: jax.Array
    degenerate: jax.Array
    skipped: jax.Array
    injected: jax.Array  # steps whose losses were deliberately corrupted


def _problems():
    synth = jp.problems.epo_synthetic(20)
    dtlz = jp.problems.dtlz2(3, 12)
    return {
        "epo_synthetic": (synth, "easy", 0.2),
        "dtlz2": (dtlz, "normal", 0.2),
    }


def _segment_fn(problem, kind, lr, method, restart_every, noise_l, noise_g, p_bad):
    """Jitted ``run(key, opt_state) -> (opt_state, Counts, finals)`` over one restart."""
    m = problem.num_objectives
    agg = jp.epo(jnp.ones(m, jnp.float32)) if method == "epo" else jp.mgda(num_tasks=m)
    tx = optax.chain(agg, optax.sgd(lr))
    vjac = jp.value_and_jacobian(problem.loss_fn)
    bad_values = jnp.array([0.0, -1.0, jnp.nan, jnp.inf], jnp.float32)

    def init_state():
        return tx.init(jnp.zeros(problem.num_params, jnp.float32))

    @jax.jit
    def run(key, opt_state):
        k_init, k_pref, k_steps = jax.random.split(key, 3)
        params = problem.init_params(k_init, kind=kind, dtype=jnp.float32)
        pref = jax.random.uniform(k_pref, (m,), jnp.float32, 0.1, 1.0)

        def step(carry, k):
            params, opt_state, counts = carry
            k1, k2, k3, k4 = jax.random.split(k, 4)
            losses, jac = vjac(params)
            noisy = losses * jnp.exp(noise_l * jax.random.normal(k1, (m,), jnp.float32))
            rms = jnp.sqrt(jnp.mean(jac**2))
            jac = jac + noise_g * rms * jax.random.normal(k2, jac.shape, jnp.float32)
            inject = jax.random.uniform(k3) < p_bad
            which = jax.random.randint(k4, (), 0, 4)
            noisy = jnp.where(inject, noisy.at[0].set(bad_values[which]), noisy)
            updates, opt_state = tx.update(jac, opt_state, params, losses=noisy,
                                           **({"preference": pref} if method == "epo" else {}))
            params = optax.apply_updates(params, updates)
            inner = opt_state[0].inner
            status = getattr(inner, "lp_status", jnp.int32(OPTIMAL))
            last_skipped = opt_state[0].skipped - carry[1][0].skipped
            epo_like = method == "epo"
            counts = Counts(
                nonfinite_params=counts.nonfinite_params + ~jnp.all(jnp.isfinite(params)),
                nonfinite_updates=counts.nonfinite_updates + ~jnp.all(jnp.isfinite(updates)),
                # A skipped step keeps the previous diagnostics: count solved steps only.
                lp_status=counts.lp_status + jnp.where(
                    epo_like & (last_skipped == 0), jax.nn.one_hot(status, 4, dtype=jnp.int32), 0),
                fallback=counts.fallback + (getattr(inner, "fallback", False) & (last_skipped == 0)),
                clipped_losses=counts.clipped_losses
                + (getattr(inner, "clipped_losses", False) & (last_skipped == 0)),
                degenerate=counts.degenerate
                + (getattr(inner, "degenerate", False) & (last_skipped == 0)),
                skipped=counts.skipped + last_skipped,
                injected=counts.injected + inject,
            )
            return (params, opt_state, counts), None

        zero = jnp.zeros((), jnp.int32)
        counts = Counts(zero, zero, jnp.zeros(4, jnp.int32), zero, zero, zero, zero, zero)
        keys = jax.random.split(k_steps, restart_every)
        (params, opt_state, counts), _ = jax.lax.scan(step, (params, opt_state, counts), keys)
        losses = problem.loss_fn(params)
        r = pref if method == "epo" else jnp.ones(m, jnp.float32)
        finals = {
            "non_uniformity": jp.metrics.non_uniformity(losses, r),
            "losses": losses,
            "distance_to_pareto_set": (problem.distance_to_pareto_set(params)
                                       if problem.distance_to_pareto_set is not None
                                       else jnp.float32(jnp.nan)),
            "params_finite": jnp.all(jnp.isfinite(params)),
        }
        return opt_state, counts, finals

    return init_state, run


def soak(problem_name, method, *, steps, restart_every, noise_l, noise_g, p_bad, seed):
    problem, kind, lr = _problems()[problem_name]
    init_state, run = _segment_fn(problem, kind, lr, method, restart_every, noise_l, noise_g, p_bad)
    restarts = max(1, steps // restart_every)
    keys = jax.random.split(jax.random.PRNGKey(seed), restarts)
    opt_state = init_state()
    t0 = time.perf_counter()
    jax.block_until_ready(run(keys[0], opt_state))  # compile
    compile_s = time.perf_counter() - t0
    total = None
    finals = []
    t0 = time.perf_counter()
    for k in keys:
        opt_state, counts, fin = run(k, opt_state)
        counts = jax.tree_util.tree_map(np.asarray, counts)
        total = counts if total is None else jax.tree_util.tree_map(np.add, total, counts)
        finals.append(jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), fin))
    run_s = time.perf_counter() - t0
    nu = np.array([f["non_uniformity"] for f in finals], float)
    dist = np.array([f["distance_to_pareto_set"] for f in finals], float)
    return {
        "problem": problem.name,
        "method": method,
        "dtype": "float32",
        "steps": int(restarts * restart_every),
        "restarts": int(restarts),
        "nonfinite_params": int(total.nonfinite_params),
        "nonfinite_updates": int(total.nonfinite_updates),
        "lp_status": ({STATUS_NAMES[i]: int(c) for i, c in enumerate(total.lp_status)}
                      if method == "epo" else None),
        "lp_non_optimal": int(total.lp_status[1:].sum()) if method == "epo" else None,
        "fallback": int(total.fallback) if method == "epo" else None,
        "clipped_losses": int(total.clipped_losses) if method == "epo" else None,
        "degenerate": int(total.degenerate) if method == "mgda" else None,
        "skipped": int(total.skipped),
        "injected_bad_losses": int(total.injected),
        "final_non_uniformity": nu.tolist(),
        "final_non_uniformity_median": float(np.median(nu)),
        "final_non_uniformity_max": float(np.max(nu)),
        "final_distance_to_pareto_set_median": float(np.nanmedian(dist)) if np.isfinite(dist).any() else None,
        "final_params_finite": all(bool(f["params_finite"]) for f in finals),
        "compile_s": compile_s,
        "run_s": run_s,
        "steps_per_s": restarts * restart_every / run_s,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--restart-every", type=int, default=1_000)
    parser.add_argument("--noise-losses", type=float, default=0.1, help="σ_l (log-normal)")
    parser.add_argument("--noise-grads", type=float, default=0.1, help="σ_g relative to rms(J)")
    parser.add_argument("--p-bad", type=float, default=0.002,
                        help="probability of a corrupted (0 / negative / NaN / inf) loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 steps in 3 restarts")
    parser.add_argument("--problems", nargs="+", default=list(_problems()),
                        choices=list(_problems()))
    parser.add_argument("--methods", nargs="+", default=["epo", "mgda"], choices=["epo", "mgda"])
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.restart_every = 300, 100
        args.p_bad = max(args.p_bad, 0.05)  # make sure the guards fire in a short run
    if args.steps < 1 or args.restart_every < 1:
        parser.error("--steps and --restart-every must be >= 1")

    runs = []
    for problem_name in args.problems:
        for method in args.methods:
            res = soak(problem_name, method, steps=args.steps, restart_every=args.restart_every,
                       noise_l=args.noise_losses, noise_g=args.noise_grads, p_bad=args.p_bad,
                       seed=args.seed)
            runs.append(res)
            print(f"{res['problem']:<24} {method:<5} steps={res['steps']:>6} "
                  f"nonfinite={res['nonfinite_params'] + res['nonfinite_updates']} "
                  f"lp={res['lp_status']} fallback={res['fallback']} "
                  f"clipped={res['clipped_losses']} degenerate={res['degenerate']} "
                  f"skipped={res['skipped']}/{res['injected_bad_losses']} injected "
                  f"μ_final median={res['final_non_uniformity_median']:.2e} "
                  f"max={res['final_non_uniformity_max']:.2e} "
                  f"({res['steps_per_s']:.0f} steps/s)", flush=True)
    try:
        from benchmarks.timing import machine

        info = machine()
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the metadata
        info = {"backend": jax.default_backend(), "jax": jax.__version__, "error": repr(exc)}
    payload = {
        "benchmark": "soak",
        "machine": info,
        "settings": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "total_steps": int(sum(r["steps"] for r in runs)),
        "total_nonfinite": int(sum(r["nonfinite_params"] + r["nonfinite_updates"] for r in runs)),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"total steps {payload['total_steps']}, non-finite {payload['total_nonfinite']} "
          f"-> {args.out}")
    return payload


if __name__ == "__main__":
    sys.exit(0 if main()["total_nonfinite"] == 0 else 1)
