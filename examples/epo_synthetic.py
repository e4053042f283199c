"""EPO search on the synthetic two-objective problem (Mahapatra & Rajan 2020, §5.1;
Lin et al. 2019, eq. 19).

``l_{1,2}(θ) = 1 − exp(−‖θ ∓ 𝟙/√n‖²)``, ``n = 20``: the Pareto set is the segment
``θ = t 𝟙/√n, t ∈ [−1, 1]`` and the front is concave. For five preference rays the
script runs

* EPO search with plain SGD from initialisations inside ("easy") and outside ("hard")
  the box ``[−1/√n, 1/√n]^n``;
* Pareto MTL (PMTL) with the reference vectors ``u ∝ 1/r`` for 200 iterations;
* linear scalarization with weights ``r``;

and reports per preference the final losses, the cosine between ``r ⊙ l`` and ``𝟙``
(1 = exactly on the ray), the distance of ``θ`` to the Pareto set and the min-norm
stationarity ``min_{β∈Δ} ‖Σ β_i ∇l_i‖``; it writes a PNG of the loss trajectories over
the analytic front and a JSON of the table.

Run: ``python -m examples.epo_synthetic [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp

EPO_STEPS = 150
PMTL_STEPS = 200
LINEAR_STEPS = 200
EPO_LR = 0.5
PMTL_LR = 0.5
LINEAR_LR = 0.5


def preferences(num: int = 5) -> np.ndarray:
    """Rays ``r = (cos φ, sin φ)``, ``φ ∈ [π/20, 9π/20]`` as in the EPO code's
    ``circle_points``."""
    phi = np.linspace(np.pi / 20, 9 * np.pi / 20, num)
    return np.stack([np.cos(phi), np.sin(phi)], axis=1)


def _run(tx, loss_fn, theta0, steps, preference=None):
    """``steps`` jitted updates in ``lax.scan``; returns the final θ and the loss path."""
    state = tx.init(theta0)

    def body(carry, _):
        theta, s = carry
        losses, jac = jp.value_and_jacobian(loss_fn)(theta)
        updates, s = tx.update(jac, s, theta, losses=losses, preference=preference)
        return (optax.apply_updates(theta, updates), s), losses

    (theta, _), path = jax.lax.scan(body, (theta0, state), None, length=steps)
    return theta, jnp.concatenate([path, loss_fn(theta)[None]])


def _stationarity(loss_fn, theta):
    _, jac = jp.value_and_jacobian(loss_fn)(theta)
    res = jp.min_norm_weights(jp.gramian(jac))
    return jnp.sqrt(jnp.maximum(res.objective, 0.0))


def run(
    *,
    num_preferences: int = 5,
    n: int = 20,
    seed: int = 0,
    epo_steps: int = EPO_STEPS,
    pmtl_steps: int = PMTL_STEPS,
    linear_steps: int = LINEAR_STEPS,
) -> dict:
    """Runs every method for every preference; returns rows and loss paths."""
    problem = jp.problems.epo_synthetic(n=n)
    loss_fn = problem.loss_fn
    prefs = preferences(num_preferences)
    key_easy, key_hard = jax.random.split(jax.random.PRNGKey(seed))
    inits = {
        "easy": problem.init_params(key_easy, "easy"),
        "hard": problem.init_params(key_hard, "hard"),
    }
    pmtl_refs = 1.0 / prefs
    pmtl_refs = pmtl_refs / np.linalg.norm(pmtl_refs, axis=1, keepdims=True)

    epo_tx = optax.chain(jp.aggregate(jp.weighting.epo(), num_tasks=2), optax.sgd(EPO_LR))
    epo_run = jax.jit(lambda t0, r: _run(epo_tx, loss_fn, t0, epo_steps, r))
    lin_tx = optax.chain(jp.aggregate(jp.weighting.linear(), num_tasks=2), optax.sgd(LINEAR_LR))
    lin_run = jax.jit(lambda t0, r: _run(lin_tx, loss_fn, t0, linear_steps, r))
    stationarity = jax.jit(lambda t: _stationarity(loss_fn, t))

    rows, paths = [], {}
    for i, r in enumerate(prefs):
        r_j = jnp.asarray(r)
        runs = {}
        for init_name, theta0 in inits.items():
            runs[f"epo_{init_name}"] = epo_run(theta0, r_j)
        pmtl_tx = optax.chain(
            jp.pmtl(jnp.asarray(pmtl_refs), index=i, init_steps=pmtl_steps // 5), optax.sgd(PMTL_LR)
        )
        runs["pmtl_hard"] = jax.jit(lambda t0: _run(pmtl_tx, loss_fn, t0, pmtl_steps))(inits["hard"])
        runs["linear_easy"] = lin_run(inits["easy"], r_j)
        for method, (theta, path) in runs.items():
            losses = np.asarray(path[-1])
            rows.append({
                "preference": [float(v) for v in r],
                "method": method,
                "steps": int(path.shape[0] - 1),
                "losses": [float(v) for v in losses],
                "ray_cosine": float(jp.metrics.ray_cosine(losses, r)),
                "non_uniformity": float(jp.metrics.non_uniformity(losses, r)),
                "distance_to_pareto_set": float(problem.distance_to_pareto_set(theta)),
                "stationarity": float(stationarity(theta)),
            })
            paths[(i, method)] = np.asarray(path)
    return {"rows": rows, "paths": paths, "preferences": prefs,
            "front": np.asarray(problem.pareto_front(200))}


def format_table(rows) -> str:
    head = f"{'r':>14} {'method':>12} {'l1':>7} {'l2':>7} {'cos(r⊙l,1)':>11} {'μ':>9} {'dist':>9} {'‖d*‖':>9}"
    lines = [head, "-" * len(head)]
    for row in rows:
        r = "(" + ", ".join(f"{v:.2f}" for v in row["preference"]) + ")"
        lines.append(
            f"{r:>14} {row['method']:>12} {row['losses'][0]:7.4f} {row['losses'][1]:7.4f} "
            f"{row['ray_cosine']:11.6f} {row['non_uniformity']:9.2e} "
            f"{row['distance_to_pareto_set']:9.2e} {row['stationarity']:9.2e}"
        )
    return "\n".join(lines)


def plot(result, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["epo_easy", "epo_hard", "pmtl_hard", "linear_easy"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.2), sharey=True)
    front = result["front"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(result["preferences"])))
    for ax, method in zip(axes, methods):
        ax.plot(front[:, 0], front[:, 1], "k-", lw=1.5, label="Pareto front")
        for i, r in enumerate(result["preferences"]):
            ray = 1.0 / r
            ray = ray / ray.max() * 1.05
            ax.plot([0, ray[0]], [0, ray[1]], "--", color=colors[i], lw=0.8)
            p = result["paths"][(i, method)]
            ax.plot(p[:, 0], p[:, 1], "-", color=colors[i], lw=1.0, alpha=0.8)
            ax.plot(p[-1, 0], p[-1, 1], "o", color=colors[i], ms=5)
        ax.set_title(method)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("$l_1$")
        ax.set_aspect("equal")
    axes[0].set_ylabel("$l_2$")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("EPO synthetic problem: loss trajectories, rays $r^{-1}$ dashed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results", help="output directory")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - t0
    print(format_table(result["rows"]))
    print(f"\n{len(result['rows'])} runs in {elapsed:.1f} s (including compilation)")
    plot(result, out / "epo_synthetic.png")
    (out / "epo_synthetic.json").write_text(json.dumps(
        {"rows": result["rows"], "seconds": elapsed,
         "settings": {"epo_steps": EPO_STEPS, "pmtl_steps": PMTL_STEPS, "lr": EPO_LR}}, indent=1))
    print(f"wrote {out / 'epo_synthetic.png'} and {out / 'epo_synthetic.json'}")
    return result


if __name__ == "__main__":
    main()
