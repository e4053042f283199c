"""Preference-conditioned hypernetworks on problems with known Pareto fronts.

One hypernetwork ``h_φ(r)`` is trained per update rule (linear scalarization, Chebyshev,
EPO) with preferences ``r ~ Dir(α)`` sampled at every step, then asked for the models
of a grid of test preferences, with no further training:

* (a) the EPO / PMTL synthetic problem ``l_{1,2}(θ) = 1 − exp(−‖θ ∓ 𝟙/√n‖²)``, ``n = 20``
  (concave front): 25 test rays ``circle_points(25, 0.1, π/2 − 0.1)`` normalised to
  sum 1 (PHN's evaluation grid);
* (b) DTLZ2 with ``m = 3`` (``n = 12``, front = positive unit sphere octant, concave):
  test preferences are the interior points of a Das–Dennis lattice.

The "target network" of these problems is the parameter vector θ itself. Reported per
problem and rule: hypervolume (reference point stated in the table), IGD to a dense
sample of the analytic front, the mean non-uniformity ``μ`` of ``r ⊙ l`` (0 = every
model on its ray ``r⁻¹``), the largest distance of a generated θ to the analytic
Pareto set, the largest Pareto-stationarity ``min_{β∈Δ} ‖Σ β_i ∇l_i‖``, training time and
the parameter counts of ``φ`` and of the target. The same metrics for the exact
solutions on the test rays (``r ⊙ l ∝ 𝟙`` on the front) give the best achievable values.

Run: ``python -m examples.hypernetwork_synthetic [--problem epo|dtlz2|both]
[--steps N] [--rules linear,chebyshev,epo] [--chunk-size C] [--full] [--out results]``.
Writes ``results/hypernetwork_synthetic.json`` and ``results/hypernetwork_{epo,dtlz2}.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpareto import hypernetwork, metrics, problems

RULES = ("linear", "chebyshev", "epo")
RULE_LABELS = {"linear": "LS", "chebyshev": "Chebyshev", "epo": "EPO"}


# ---------------------------------------------------------------------------
# Problems and their test preferences.


def epo_test_preferences(num: int = 25) -> np.ndarray:
    """PHN's evaluation rays: ``circle_points(num, 0.1, π/2 − 0.1)``, normalised to sum 1."""
    r = np.asarray(metrics.circle_points(num, 0.1, math.pi / 2 - 0.1))
    return r / r.sum(axis=1, keepdims=True)


def interior_das_dennis(m: int, num_partitions: int) -> np.ndarray:
    """Das–Dennis points with every entry ``>= 1/H`` (strictly positive preferences)."""
    w = np.asarray(metrics.das_dennis(m, num_partitions))
    return w[np.all(w > 0.5 / num_partitions, axis=1)]


def exact_epo_synthetic(preferences: np.ndarray) -> np.ndarray:
    """Front points with ``r ⊙ l ∝ 𝟙`` for the synthetic problem (bisection on ``t``).

    On the front ``l(t) = (1 − e^{−(1−t)²}, 1 − e^{−(1+t)²})``; ``r₁l₁ − r₂l₂`` decreases
    strictly in ``t`` on ``[−1, 1]`` and changes sign, so bisection finds the root.
    """
    out = []
    for r in preferences:
        lo, hi = -1.0, 1.0
        f = lambda t: r[0] * -math.expm1(-((1 - t) ** 2)) - r[1] * -math.expm1(-((1 + t) ** 2))  # noqa: E731
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if f(mid) > 0:
                lo = mid
            else:
                hi = mid
        t = 0.5 * (lo + hi)
        out.append([-math.expm1(-((1 - t) ** 2)), -math.expm1(-((1 + t) ** 2))])
    return np.asarray(out)


def exact_dtlz2(preferences: np.ndarray) -> np.ndarray:
    """DTLZ2 front points on the rays: ``l ∝ 1/r`` with ``‖l‖₂ = 1``."""
    inv = 1.0 / preferences
    return inv / np.linalg.norm(inv, axis=1, keepdims=True)


def setup(name: str, full: bool) -> dict:
    if name == "epo":
        problem = problems.epo_synthetic(n=20)
        prefs = epo_test_preferences(25)
        return dict(
            problem=problem, prefs=prefs, exact=exact_epo_synthetic(prefs),
            front=np.asarray(problem.pareto_front(2000)), reference=np.array([1.0, 1.0]),
            embed_dim=32, hidden=(32,), steps=3000 if full else 600, lr=1e-2, alpha=1.0,
        )
    if name == "dtlz2":
        problem = problems.dtlz2(m=3)
        prefs = interior_das_dennis(3, 12 if full else 9)
        return dict(
            problem=problem, prefs=prefs, exact=exact_dtlz2(prefs),
            front=np.asarray(problem.pareto_front(5000)), reference=np.array([1.1, 1.1, 1.1]),
            embed_dim=48, hidden=(48, 48), steps=4000 if full else 1500, lr=1e-2, alpha=1.0,
        )
    raise ValueError(f"unknown problem {name!r}")


# ---------------------------------------------------------------------------
# Training and evaluation.


def stationarity(loss_fn, theta) -> jax.Array:
    """``min_{β∈Δ} ‖Σ β_i ∇l_i(θ)‖``, exact by enumerating the faces of the simplex (small m)."""
    jac = jax.jacrev(loss_fn)(theta)
    gram = jac @ jac.T
    m = gram.shape[0]
    best = jnp.min(jnp.diag(gram))
    for size in range(2, m + 1):
        for face in itertools.combinations(range(m), size):
            idx = np.asarray(face)
            g = gram[np.ix_(idx, idx)]
            # Minimiser on the affine hull of the face: β ∝ G⁻¹𝟙 (pinv for rank deficiency).
            b = jnp.linalg.pinv(g) @ jnp.ones(size)
            b = b / jnp.sum(b)
            val = jnp.where(jnp.all(b >= 0), b @ g @ b, jnp.inf)
            best = jnp.minimum(best, val)
    return jnp.sqrt(jnp.maximum(best, 0.0))


def train(problem, rule: str, cfg: dict, *, seed: int, num_preferences: int):
    """Trains one hypernetwork; returns (φ, seconds of training after compilation)."""
    key = jax.random.PRNGKey(seed)
    k_template, k_init, k_train = jax.random.split(key, 3)
    template = problem.init_params(k_template)
    hparams = hypernetwork.init(
        k_init, template, embed_dim=cfg["embed_dim"], hidden=cfg["hidden"],
        num_tasks=problem.num_objectives, chunk_size=cfg.get("chunk_size"),
    )
    optimizer = optax.adam(optax.cosine_decay_schedule(cfg["lr"], cfg["steps"]))
    step = hypernetwork.train_step(
        problem.loss_fn, optimizer, rule=rule, num_preferences=num_preferences, alpha=cfg["alpha"]
    )

    def loop(h, s, k):
        def body(carry, kk):
            h, s = carry
            h, s, info = step(h, s, kk)
            return (h, s), (jnp.mean(info.non_uniformity), info.skipped)

        (h, s), trace = jax.lax.scan(body, (h, s), jax.random.split(k, cfg["steps"]))
        return h, trace

    opt_state = optimizer.init(hparams)
    compiled = jax.jit(loop).lower(hparams, opt_state, k_train).compile()
    t0 = time.perf_counter()
    hparams, (nu_trace, skipped) = compiled(hparams, opt_state, k_train)
    jax.block_until_ready(hparams)
    seconds = time.perf_counter() - t0
    return hparams, template, seconds, int(np.sum(skipped))


def assess(problem, hparams, cfg: dict) -> dict:
    prefs = jnp.asarray(cfg["prefs"])
    ev = hypernetwork.evaluate(hparams, problem.loss_fn, prefs, reference=jnp.asarray(cfg["reference"]))
    thetas = hypernetwork.generate(hparams, prefs)
    dist = jax.vmap(problem.distance_to_pareto_set)(thetas)
    stat = jax.vmap(lambda t: stationarity(problem.loss_fn, t))(thetas)
    losses = np.asarray(ev.losses)
    return {
        "losses": losses,
        "hypervolume": float(ev.hypervolume),
        "igd": float(metrics.igd(losses, cfg["front"])),
        "mean_non_uniformity": float(ev.mean_non_uniformity),
        "max_distance_to_pareto_set": float(jnp.max(dist)),
        "max_stationarity": float(jnp.max(stat)),
        "max_error_to_exact": float(np.max(np.linalg.norm(losses - cfg["exact"], axis=1))),
    }


def run(problem_names=("epo", "dtlz2"), rules=RULES, *, full=False, steps=None,
        num_preferences=8, seed=0, chunk_size=None) -> dict:
    out = {}
    for name in problem_names:
        cfg = setup(name, full)
        cfg["chunk_size"] = chunk_size
        if steps is not None:
            cfg["steps"] = steps
        problem = cfg["problem"]
        exact = cfg["exact"]
        rows = [{
            "rule": "exact (on rays)",
            "hypervolume": float(metrics.hypervolume(exact, cfg["reference"])),
            "igd": float(metrics.igd(exact, cfg["front"])),
            "mean_non_uniformity": float(jnp.mean(metrics.non_uniformity(exact, cfg["prefs"]))),
        }]
        generated = {}
        for rule in rules:
            hparams, template, seconds, skipped = train(
                problem, rule, cfg, seed=seed, num_preferences=num_preferences
            )
            res = assess(problem, hparams, cfg)
            generated[rule] = res.pop("losses")
            rows.append({
                "rule": RULE_LABELS[rule], **res, "train_seconds": seconds, "skipped_steps": skipped,
                "phi_params": hypernetwork.num_params(hparams),
                "target_params": hypernetwork.num_params(template),
            })
        out[name] = {
            "problem": problem.name,
            "reference_point": [float(v) for v in cfg["reference"]],
            "num_test_preferences": int(len(cfg["prefs"])),
            "steps": cfg["steps"], "num_preferences_per_step": num_preferences,
            "alpha": cfg["alpha"], "lr": cfg["lr"],
            "embed_dim": cfg["embed_dim"], "hidden": list(cfg["hidden"]), "chunk_size": chunk_size,
            "rows": rows,
            "_plot": {"prefs": cfg["prefs"], "front": cfg["front"], "exact": exact,
                      "generated": generated},
        }
    return out


def format_table(name: str, res: dict) -> str:
    head = (f"{'rule':>16} {'HV':>8} {'IGD':>8} {'mean μ':>9} {'max dist':>9} "
            f"{'max stat':>9} {'max |l−l*|':>10} {'train s':>8} {'|φ|':>6} {'|θ|':>5}")
    lines = [f"{res['problem']}: {res['num_test_preferences']} test preferences, "
             f"HV reference point {tuple(res['reference_point'])}, {res['steps']} steps × "
             f"{res['num_preferences_per_step']} preferences ~ Dir({res['alpha']})",
             head, "-" * len(head)]
    for row in res["rows"]:
        def f(key, fmt):
            return format(row[key], fmt) if key in row else "—"
        lines.append(
            f"{row['rule']:>16} {f('hypervolume', '8.4f')} {f('igd', '8.4f')} "
            f"{f('mean_non_uniformity', '9.2e')} {f('max_distance_to_pareto_set', '9.2e')} "
            f"{f('max_stationarity', '9.2e')} {f('max_error_to_exact', '10.2e')} "
            f"{f('train_seconds', '8.2f')} {f('phi_params', '6d')} {f('target_params', '5d')}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plots.


def plot_front_2d(ax, front, prefs, points, exact=None, title=""):
    """Loss vectors of the generated models with the preference rays ``r⁻¹`` (dashed)."""
    import matplotlib.pyplot as plt

    colors = plt.cm.viridis(np.linspace(0, 0.95, len(prefs)))
    if front is not None:
        ax.plot(front[:, 0], front[:, 1], "k-", lw=1.2, label="true front")
    lim = 1.05 * max(np.max(points), 1e-9 if front is None else np.max(front))
    for i, r in enumerate(prefs):
        ray = 1.0 / np.asarray(r)
        ray = ray / np.max(ray) * lim
        ax.plot([0, ray[0]], [0, ray[1]], "--", color=colors[i], lw=0.6, alpha=0.7)
    ax.scatter(points[:, 0], points[:, 1], c=colors, s=18, zorder=3, label="h_φ(r)")
    if exact is not None:
        ax.scatter(exact[:, 0], exact[:, 1], facecolors="none", edgecolors="k", s=30, lw=0.6,
                   zorder=2, label="exact on ray")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$l_1$")
    ax.set_title(title)


def plot(name: str, res: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = res["_plot"]
    rules = list(p["generated"])
    if len(p["prefs"][0]) == 2:
        fig, axes = plt.subplots(1, len(rules), figsize=(4.2 * len(rules), 4.4), squeeze=False)
        for ax, rule in zip(axes[0], rules):
            plot_front_2d(ax, p["front"], p["prefs"], p["generated"][rule], p["exact"],
                          f"hypernetwork, {RULE_LABELS[rule]} rule")
        axes[0][0].set_ylabel("$l_2$")
        axes[0][0].legend(loc="upper right", fontsize=7)
    else:
        # Row 1: the generated loss vectors on the sphere octant. Row 2: their directions
        # l / Σl in barycentric coordinates, each joined to the direction of its ray r⁻¹.
        fig = plt.figure(figsize=(4.4 * len(rules), 8.4))
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
        to_2d = lambda v: (v / v.sum(axis=1, keepdims=True)) @ corners  # noqa: E731
        for i, rule in enumerate(rules):
            pts = p["generated"][rule]
            ax = fig.add_subplot(2, len(rules), i + 1, projection="3d")
            front = p["front"][::4]
            ax.scatter(*front.T, s=1, c="0.8", label="true front")
            ax.scatter(*p["exact"].T, s=26, facecolors="none", edgecolors="k", lw=0.6,
                       label="exact on ray")
            ax.scatter(*pts.T, s=12, c="C3", label="h_φ(r)")
            ax.set_title(f"{RULE_LABELS[rule]} rule")
            ax.set_xlabel("$l_1$")
            ax.set_ylabel("$l_2$")
            ax.set_zlabel("$l_3$")
            ax.view_init(elev=35, azim=45)
            ax2 = fig.add_subplot(2, len(rules), len(rules) + i + 1)
            ax2.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=0.8)
            a, b = to_2d(p["exact"]), to_2d(np.maximum(pts, 1e-12))
            for u, v in zip(a, b):
                ax2.plot([u[0], v[0]], [u[1], v[1]], "-", c="0.5", lw=0.6)
            ax2.scatter(*a.T, s=26, facecolors="none", edgecolors="k", lw=0.6, label="ray $r^{-1}$")
            ax2.scatter(*b.T, s=12, c="C3", label="direction of l")
            for c, lab in zip(corners, ("$l_1$", "$l_2$", "$l_3$")):
                ax2.annotate(lab, c, textcoords="offset points", xytext=(0, 4), ha="center")
            ax2.set_aspect("equal")
            ax2.axis("off")
        fig.axes[0].legend(loc="upper left", fontsize=7)
        fig.axes[1].legend(loc="upper right", fontsize=7)
    what = "rays $r^{-1}$ dashed" if len(p["prefs"][0]) == 2 else "○ = exact point on the ray $r^{-1}$"
    fig.suptitle(f"{res['problem']}: generated front, {what}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="both", choices=("epo", "dtlz2", "both"))
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated: linear,chebyshev,epo")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default per problem)")
    parser.add_argument("--num-preferences", type=int, default=8, help="preferences per step K")
    parser.add_argument("--full", action="store_true", help="longer training, finer test grid")
    parser.add_argument("--chunk-size", type=int, default=None, help="chunked hypernetwork")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results", help="output directory")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    names = ("epo", "dtlz2") if args.problem == "both" else (args.problem,)
    rules = tuple(r.strip() for r in args.rules.split(",") if r.strip())
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(names, rules, full=args.full, steps=args.steps,
                 num_preferences=args.num_preferences, seed=args.seed, chunk_size=args.chunk_size)
    for name, res in result.items():
        print(format_table(name, res))
        print()
        plot(name, res, out / f"hypernetwork_{name}.png")
    elapsed = time.perf_counter() - t0
    payload = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "backend": jax.default_backend()},
        "seconds_total": elapsed,
        **{name: {k: v for k, v in res.items() if not k.startswith("_")} for name, res in result.items()},
    }
    (out / "hypernetwork_synthetic.json").write_text(json.dumps(payload, indent=1))
    print(f"total {elapsed:.1f} s; wrote {out / 'hypernetwork_synthetic.json'} and "
          + ", ".join(str(out / f'hypernetwork_{n}.png') for n in result))
    return result


if __name__ == "__main__":
    main()
