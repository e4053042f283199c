"""The Gramian engine against the Jacobian path: step time and XLA memory plan.

Three jitted training steps per problem, all float32 and Adam:

* ``summed``: ``jax.grad`` of ``Σ l_i`` (the floor: one forward, one backward pass);
* ``jacobian``: ``jp.value_and_jacobian`` → ``optax.chain(jp.aggregate(upgrad), adam)``
  (the ``m × n`` Jacobian, its Gramian, the combination);
* ``engine``: ``jp.gramian_vjp`` → ``optax.chain(jp.gramian_aggregate(upgrad), adam)``
  (the Gramian from layer inputs and per-task cotangents, then one VJP of ``Σ w_i l_i``).

Problems: the MLP of ``benchmarks/train_step.py`` (``256 → 1024 → 768`` shared, ``m``
heads ``768 → 16 → 1``, n ≈ 1.05M at m = 10, batch 128) at m = 2, 10, 64; the LeNet of
``jp.models.lenet_losses`` (m = 2, batch 128); per-example losses (m = B, the MLP with
two heads, one loss per example) at B = 32, 128. Memory: XLA's static plan of each
compiled step (``compiled.memory_analysis()``: arguments + outputs + temporaries −
aliased) and its temporaries alone. TorchJD's autogram is timed in
``benchmarks/train_step.py``.

Run: ``python -m benchmarks.gramian_engine [--quick] [--memory-only] [--repeats N]``.
``--quick`` shrinks every problem (a few seconds, a smoke run); ``--memory-only``
compiles the full-size steps and reports their memory plans without timing them.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp
from benchmarks.timing import (
    add_threads_arg,
    fmt_time,
    interleaved_times,
    ratio,
    set_threads,
    write,
    xla_memory,
)

LR = 1e-3


def mlp(num_tasks: int, key, batch: int, in_dim=256, hidden=(1024, 768), head=16,
        per_example: bool = False):
    """Shared MLP and ``m`` two-layer heads; ``losses[m]`` or, per example, ``[B]``."""
    ks = jax.random.split(key, 8)
    f32 = jnp.float32
    sizes = (in_dim, *hidden)

    def normal(k, shape, fan_in):
        return jax.random.normal(k, shape, f32) / np.float32(np.sqrt(fan_in))

    params = {
        "shared": [{"w": normal(ks[i], (a, b), a), "b": jnp.zeros(b, f32)}
                   for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))],
        "heads": {"w1": normal(ks[4], (num_tasks, hidden[-1], head), hidden[-1]),
                  "w2": normal(ks[5], (num_tasks, head), head)},
    }
    x = jax.random.normal(ks[6], (batch, in_dim), f32)
    y = jax.random.normal(ks[7], (batch, num_tasks), f32)

    def loss_fn(p, b):
        h = b[0]
        for layer in p["shared"]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        hid = jax.nn.relu(jnp.einsum("bd,tdk->tbk", h, p["heads"]["w1"]))
        err = (jnp.einsum("tbk,tk->tb", hid, p["heads"]["w2"]) - b[1].T) ** 2  # [T, B]
        return jnp.sum(err, axis=0) if per_example else jnp.mean(err, axis=1)

    return params, (x, y), loss_fn


def lenet(key, batch: int):
    params = jp.models.lenet_init(key, num_tasks=2)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    images = jax.random.randint(k1, (batch, 36, 36), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(k2, (batch, 2), 0, 10)

    def loss_fn(p, b):
        return jp.models.lenet_losses(p, *b)

    return params, (images, labels), loss_fn


def steps(loss_fn, num_tasks: int):
    """``{name: (step, init)}``: jit-able ``step(params, state, batch)``."""
    adam = optax.adam(LR)

    def summed(p, s, b):
        g = jax.grad(lambda q: jnp.sum(loss_fn(q, b)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    tx_j = optax.chain(jp.aggregate(jp.weighting.upgrad(), num_tasks=num_tasks), adam)
    tx_g = optax.chain(jp.gramian_aggregate(jp.weighting.upgrad(), num_tasks=num_tasks), adam)

    def jacobian(p, s, b):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, b)
        u, s = tx_j.update(jac, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    def engine(p, s, b):
        losses, gv = jp.gramian_vjp(loss_fn)(p, b)
        u, s = tx_g.update(gv, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    return {"summed": (summed, adam.init), "jacobian": (jacobian, tx_j.init),
            "engine": (engine, tx_g.init)}


def problems(quick: bool):
    key = jax.random.PRNGKey(0)
    if quick:
        small = {"in_dim": 32, "hidden": (64, 48), "head": 8}
        return {
            "mlp_m2": (lambda: mlp(2, key, 32, **small), 2),
            "mlp_m10": (lambda: mlp(10, key, 32, **small), 10),
            "lenet": (lambda: lenet(key, 8), 2),
            "per_example_b32": (lambda: mlp(2, key, 32, per_example=True, **small), 32),
        }
    return {
        "mlp_m2": (lambda: mlp(2, key, 128), 2),
        "mlp_m10": (lambda: mlp(10, key, 128), 10),
        "mlp_m64": (lambda: mlp(64, key, 128), 64),
        "lenet": (lambda: lenet(key, 128), 2),
        "per_example_b32": (lambda: mlp(2, key, 32, per_example=True), 32),
        "per_example_b128": (lambda: mlp(2, key, 128, per_example=True), 128),
    }


def run_problem(make, num_tasks: int, repeats: int, memory_only: bool) -> dict:
    params, batch, loss_fn = make()
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    row = {"num_tasks": num_tasks, "num_params": int(n), "memory": {}, "time": {}}
    calls = {}
    for name, (step, init) in steps(loss_fn, num_tasks).items():
        state = init(params)
        compiled = jax.jit(step).lower(params, state, batch).compile()
        row["memory"][name] = xla_memory(compiled)
        calls[name] = (lambda c=compiled, s=state: c(params, s, batch))
    if not memory_only:
        row["time"] = interleaved_times(calls, repeats=repeats)
    # The engine's Gramian against the Jacobian path's (float32).
    _, gram = jax.jit(jp.value_and_gramian(loss_fn))(params, batch)
    _, jac = jax.jit(jp.value_and_jacobian(loss_fn))(params, batch)
    ref = jp.gramian(jac)
    row["gram_rel_err"] = float(jnp.max(jnp.abs(gram - ref)) / jnp.max(jnp.abs(ref)))
    row["paths"] = jp.gramian_engine.explain(loss_fn)(params, batch)
    return row


def _mib(x) -> str:
    return "–" if x is None else f"{x / 2**20:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, 3 repeats")
    parser.add_argument("--memory-only", action="store_true",
                        help="compile and report the XLA memory plans, do not time")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--problems", nargs="*", default=None,
                        help="run only these problems (e.g. mlp_m64 lenet)")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    cores = set_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 15)
    results = {}
    header = (f"{'problem':18} {'m':>4} {'n':>9} | plan MiB summed / jacobian / engine"
              f" | time summed / jacobian / engine | engine vs jac | rel err")
    print(header)
    for name, (make, m) in problems(args.quick).items():
        if args.problems and name not in args.problems:
            continue
        row = run_problem(make, m, repeats, args.memory_only)
        results[name] = row
        mem = row["memory"]
        plan = " / ".join(_mib(mem[k].get("total_bytes")) for k in ("summed", "jacobian", "engine"))
        t = {k: row["time"].get(k, {}).get("median_s") for k in ("summed", "jacobian", "engine")}
        times = " / ".join(fmt_time(t[k]) if t[k] is not None else "–" for k in t)
        speed = ratio(t["jacobian"], t["engine"])
        print(f"{name:18} {m:>4} {row['num_params']:>9} | {plan:>30} | {times:>28} | "
              f"{'–' if speed is None else f'{speed:.2f}×':>6} | {row['gram_rel_err']:.1e}")
    suffix = ("_quick" if args.quick else "") + ("_memory" if args.memory_only else "")
    if args.problems:
        suffix += "_" + "_".join(sorted(args.problems))
    path = write("gramian_engine" + suffix,
                 {"quick": args.quick, "memory_only": args.memory_only, "repeats": repeats,
                  "cores": cores, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
