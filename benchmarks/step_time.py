"""Training-step time of jaxpareto's methods next to the Jacobian alone and a summed loss.

For an MLP with ≈1M parameters (m ∈ {2, 10} regression heads) and a LeNet-style conv
net on Multi-MNIST shapes (batch 256), all in float32, one jitted training step of

* ``summed``: ``jax.grad`` of ``Σ_i l_i`` + Adam — one backward pass, the cheapest
  possible multi-task step;
* ``jacobian``: ``jp.value_and_jacobian`` only (the m backward passes every Jacobian
  method needs, nothing else);
* ``linear``, ``mgda``, ``epo``: Jacobian → Gramian → weights → combine → Adam;
* ``mgda_ub``: ``jp.mtl_value_and_grad`` with MGDA on the shared representation + Adam.

It prints the medians and the ratios measured in the same run: each Jacobian method's
step ÷ the Jacobian-only time (the solver's overhead; physical limit 1.0) and MGDA-UB ÷
the summed-loss step.

Run: ``python -m benchmarks.step_time [--repeats 20] [--quick]``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp
from benchmarks.timing import median_time, write

BATCH = 256


def mlp_problem(num_tasks: int, key, in_dim: int = 256, hidden=(1024, 768), head: int = 16):
    """Shared MLP ``in → 1024 → 768`` and ``m`` heads ``768 → 16 → 1`` (≈1.05M params)."""
    ks = jax.random.split(key, 8)
    sizes = (in_dim, *hidden)
    params = {
        "shared": [
            {"w": jax.random.normal(ks[i], (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        ],
        "heads": {
            "w1": jax.random.normal(ks[4], (num_tasks, hidden[-1], head)) / np.sqrt(hidden[-1]),
            "w2": jax.random.normal(ks[5], (num_tasks, head)) / np.sqrt(head),
        },
    }
    x = jax.random.normal(ks[6], (BATCH, in_dim))
    y = jax.random.normal(ks[7], (BATCH, num_tasks))

    def encode(p, batch):
        h = batch[0]
        for layer in p["shared"]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        return h

    def heads(p, z, batch):
        hid = jax.nn.relu(jnp.einsum("bd,tdk->tbk", z, p["heads"]["w1"]))
        out = jnp.einsum("tbk,tk->tb", hid, p["heads"]["w2"])
        return jnp.mean((out - batch[1].T) ** 2, axis=1)

    return params, (x, y), encode, heads


def lenet_problem(key):
    params = jp.models.lenet_init(key, num_tasks=2)
    k1, k2 = jax.random.split(key)
    images = jax.random.randint(k1, (BATCH, 36, 36), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(k2, (BATCH, 2), 0, 10)
    return params, (images, labels), jp.models.lenet_mtl_encode, jp.models.lenet_mtl_heads


def steps(params, batch, encode, heads, num_tasks: int):
    """The jitted step of every method, sharing one Adam."""
    adam = optax.adam(1e-3)

    def loss_fn(p, b):
        return heads(p, encode(p, b), b)

    def summed(p, s, b):
        g = jax.grad(lambda q: jnp.sum(loss_fn(q, b)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    def jacobian_only(p, b):
        return jp.value_and_jacobian(loss_fn)(p, b)

    def with_transform(tx):
        def step(p, s, b):
            losses, jac = jp.value_and_jacobian(loss_fn)(p, b)
            u, s = tx.update(jac, s, p, value=losses)
            return optax.apply_updates(p, u), s
        return step

    r = jnp.linspace(1.0, 2.0, num_tasks)
    txs = {
        "linear": optax.chain(jp.linear(r), adam),
        "mgda": optax.chain(jp.mgda(num_tasks=num_tasks), adam),
        "epo": optax.chain(jp.epo(r), adam),
    }
    ub_weighting = jp.weighting.mgda()
    ub_step = jp.mtl_value_and_grad(encode, heads, ub_weighting)

    def mgda_ub(p, s, b):
        adam_state, w_state = s
        (_, g), w_state = ub_step(p, b, w_state)
        u, adam_state = adam.update(g, adam_state, p)
        return optax.apply_updates(p, u), (adam_state, w_state)

    out = {
        "summed": (jax.jit(summed), adam.init(params)),
        "mgda_ub": (jax.jit(mgda_ub), (adam.init(params), ub_weighting.init(num_tasks))),
    }
    for name, tx in txs.items():
        out[name] = (jax.jit(with_transform(tx)), tx.init(params))
    return out, jax.jit(jacobian_only)


def bench_model(name, params, batch, encode, heads, num_tasks, repeats):
    n = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(params))
    fns, jac_fn = steps(params, batch, encode, heads, num_tasks)
    row = {"model": name, "num_tasks": num_tasks, "num_params": n}
    row["jacobian"] = median_time(lambda: jac_fn(params, batch), repeats)["median_s"]
    for method, (fn, state) in fns.items():
        row[method] = median_time(lambda fn=fn, state=state: fn(params, state, batch), repeats)["median_s"]
    for method in ("linear", "mgda", "epo"):
        row[f"{method}/jacobian"] = row[method] / row["jacobian"]
    row["mgda_ub/summed"] = row["mgda_ub"] / row["summed"]
    row["epo/summed"] = row["epo"] / row["summed"]
    return row


def format_rows(rows) -> str:
    cols = ["summed", "jacobian", "linear", "mgda", "epo", "mgda_ub"]
    head = f"{'model':>8} {'m':>3} {'params':>9} " + " ".join(f"{c:>9}" for c in cols) + \
        f" {'epo/jac':>8} {'mgda/jac':>8} {'ub/sum':>7}"
    lines = [head + "   (ms)"]
    for r in rows:
        lines.append(
            f"{r['model']:>8} {r['num_tasks']:>3} {r['num_params']:>9} "
            + " ".join(f"{1e3 * r[c]:9.3f}" for c in cols)
            + f" {r['epo/jacobian']:8.3f} {r['mgda/jacobian']:8.3f} {r['mgda_ub/summed']:7.3f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="training-step times")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default=None, help="results directory")
    args = parser.parse_args(argv)
    key = jax.random.PRNGKey(0)
    rows = []
    if args.quick:
        rows.append(bench_model("mlp", *mlp_problem(2, key, in_dim=8, hidden=(16, 8), head=4), 2, 3))
    else:
        for m in (2, 10):
            rows.append(bench_model("mlp", *mlp_problem(m, key), m, args.repeats))
        rows.append(bench_model("lenet", *lenet_problem(key), 2, args.repeats))
    print(format_rows(rows))
    path = write("step_time" + ("_quick" if args.quick else ""), {"rows": rows}, args.out)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
