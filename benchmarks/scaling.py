"""Scaling of a jaxpareto training step with the number of tasks m and parameters n.

Model: one wide shared layer and ``m`` linear heads,
``l_i = mean_b (relu(x W + c) · v_i + e_i − y_i)²`` with ``x: [B, 64]``, ``B = 64``,
``W: [64, w]``, ``v: [m, w]``, so ``n = 65 w + m w + m``; the width ``w`` is chosen to give
the target ``n``. Float32, Adam. Steps (each one ``jax.jit``):

* ``summed``: ``jax.grad`` of ``Σ l_i`` (one backward pass);
* ``jacobian``: ``jp.value_and_jacobian`` only (``mode="rev"``: m VJPs vmapped);
* ``mgda`` / ``epo``: ``optax.chain(jp.mgda() / jp.epo(r), optax.adam)`` on that Jacobian;
* ``mgda_chunked``: the MGDA step with ``mode="chunked", chunk_size=1`` (one VJP at a
  time through ``jax.lax.map``), for ``n ≥ 1e6``, where it bounds the memory of the
  backward passes — the Jacobian itself (``m × n``) is still materialised.

Sweeps: ``m ∈ {2, 4, 8, 16, 32, 64}`` at ``n ≈ 1e6`` and ``n ∈ {1e4, 1e5, 1e6, 1e7}`` at
``m = 4``. Memory per step: XLA's static plan (``compiled.memory_analysis()``:
arguments + outputs + temporaries) and the process's peak RSS while timing that step
(``VmHWM`` after resetting it; includes the Python process, ≈ a few hundred MB), plus
the device's ``peak_bytes_in_use`` on a GPU. Writes ``scaling.json`` and a log-log
``scaling.png``.

Run: ``python -m benchmarks.scaling [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp
from benchmarks.timing import (
    RESULTS,
    add_threads_arg,
    block,
    device_peak_bytes,
    fmt_time,
    interleaved_times,
    ratio,
    peak_rss_bytes,
    reset_peak_rss,
    set_threads,
    write,
    xla_memory,
)

D_IN = 64
BATCH = 64
M_SWEEP = (2, 4, 8, 16, 32, 64)
N_SWEEP = (10**4, 10**5, 10**6, 10**7)
N_FIXED = 10**6
M_FIXED = 4
CHUNKED_FROM = 10**6


def problem(m: int, n_target: int, key, batch: int = BATCH):
    width = max(1, round((n_target - m) / (D_IN + 1 + m)))
    k = jax.random.split(key, 5)
    f32 = jnp.float32  # float32 whether or not x64 is on
    params = {
        "w": jax.random.normal(k[0], (D_IN, width), f32) / np.float32(np.sqrt(D_IN)),
        "c": jnp.zeros(width, f32),
        "v": jax.random.normal(k[1], (m, width), f32) / np.float32(np.sqrt(width)),
        "e": jnp.zeros(m, f32),
    }
    x = jax.random.normal(k[2], (batch, D_IN), f32)
    y = jax.random.normal(k[3], (batch, m), f32)

    def loss_fn(p, b):
        h = jax.nn.relu(b[0] @ p["w"] + p["c"])
        out = h @ p["v"].T + p["e"]
        return jnp.mean((out - b[1]) ** 2, axis=0)

    return params, (x, y), loss_fn


def steps(loss_fn, m: int, chunked: bool):
    adam = optax.adam(1e-3)

    def summed(p, s, b):
        g = jax.grad(lambda q: jnp.sum(loss_fn(q, b)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    def jac_only(p, s, b):
        return jp.value_and_jacobian(loss_fn)(p, b)

    def with_tx(tx, mode):
        def step(p, s, b):
            losses, jac = jp.value_and_jacobian(loss_fn, mode=mode, chunk_size=1
                                                if mode == "chunked" else None)(p, b)
            u, s = tx.update(jac, s, p, losses=losses)
            return optax.apply_updates(p, u), s
        return step, tx

    r = jnp.linspace(1.0, 2.0, m)
    out = {"summed": (summed, adam), "jacobian": (jac_only, adam),
           "mgda": with_tx(optax.chain(jp.mgda(num_tasks=m), adam), "rev"),
           "epo": with_tx(optax.chain(jp.epo(r), adam), "rev")}
    if chunked:
        out["mgda_chunked"] = with_tx(optax.chain(jp.mgda(num_tasks=m), adam), "chunked")
    return out


def bench_point(m, n_target, repeats, key, batch, only=None):
    params, batch_data, loss_fn = problem(m, n_target, key, batch)
    n = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(params))
    row = {"m": m, "n": n, "n_target": n_target, "batch": batch, "time_s": {}, "xla_bytes": {},
           "peak_rss_bytes": {}, "device_peak_bytes": {}}
    calls = {}
    for name, (fn, tx) in steps(loss_fn, m, n_target >= CHUNKED_FROM).items():
        if only and name not in only:
            continue
        state = tx.init(params)
        # One compile serves the memory plan, the peak RSS and the timing.
        compiled = jax.jit(fn).lower(params, state, batch_data).compile()
        row["xla_bytes"][name] = xla_memory(compiled).get("total_bytes")
        call = functools.partial(compiled, params, state, batch_data)
        reset_peak_rss()
        block(call())
        row["peak_rss_bytes"][name] = peak_rss_bytes()
        row["device_peak_bytes"][name] = device_peak_bytes()
        calls[name] = call
    # The steps of one point timed in interleaved rounds, so their ratios share the load.
    for name, timing in interleaved_times(calls, repeats).items():
        row["time_s"][name] = timing["median_s"]
    t = row["time_s"]
    row["ratio"] = {f"{a}/{b}": ratio(t.get(a), t.get(b)) for a, b in (
        ("mgda", "jacobian"), ("epo", "jacobian"), ("jacobian", "summed"), ("mgda", "summed"),
        ("mgda_chunked", "mgda"))}
    # The VJP-count limit: one forward and m backward passes (≈ 2 forwards each)
    # against the summed step's forward + backward: (1 + 2m)/3 summed steps.
    if isinstance(t.get("summed"), float):
        row["ratio"]["jacobian/vjp_limit"] = ratio(t.get("jacobian"), (1 + 2 * m) / 3 * t["summed"])
    return row


def plot(m_rows, n_rows, path: pathlib.Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, (rows, key, label) in enumerate(((m_rows, "m", "number of tasks m"),
                                              (n_rows, "n", "number of parameters n"))):
        xs = [r[key] for r in rows]
        ax = axes[0, col]
        for name in ("summed", "jacobian", "mgda", "epo", "mgda_chunked"):
            pts = [(x, r["time_s"][name]) for x, r in zip(xs, rows) if name in r["time_s"]]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("step time [s]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ax = axes[1, col]
        for name in ("summed", "mgda", "mgda_chunked"):
            pts = [(x, r["xla_bytes"][name] / 2**20) for x, r in zip(xs, rows)
                   if r["xla_bytes"].get(name)]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=f"{name} (XLA plan)")
            pts = [(x, r["peak_rss_bytes"][name] / 2**20) for x, r in zip(xs, rows)
                   if r["peak_rss_bytes"].get(name)]
            if pts:
                ax.loglog(*zip(*pts), marker="x", linestyle="--", label=f"{name} (peak RSS)")
        ax.set_xlabel(label)
        ax.set_ylabel("memory [MiB]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_title(f"n ≈ {m_rows[0]['n_target']:.0e}" if m_rows else "")
    axes[0, 1].set_title(f"m = {n_rows[0]['m']}" if n_rows else "")
    fig.suptitle("jaxpareto step scaling (float32, Adam, batch %d)" % (m_rows or n_rows)[0]["batch"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="step time / memory scaling with m and n")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", nargs="+", default=None,
                        choices=["summed", "jacobian", "mgda", "epo", "mgda_chunked"],
                        help="only these steps (default: all)")
    parser.add_argument("--out", default=None, help="results directory")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    key = jax.random.PRNGKey(0)
    repeats = args.repeats or (3 if args.quick else 10)
    if args.quick:
        m_sweep, n_fixed, n_sweep, m_fixed, batch = (3,), 2000, (1000,), 2, 8
    else:
        m_sweep, n_fixed, n_sweep, m_fixed, batch = M_SWEEP, N_FIXED, N_SWEEP, M_FIXED, BATCH
    m_rows, n_rows = [], []
    for m in m_sweep:
        m_rows.append(bench_point(m, n_fixed, repeats, key, batch, args.steps))
        print(_line(m_rows[-1]), flush=True)
    for n in n_sweep:
        n_rows.append(bench_point(m_fixed, n, repeats, key, batch, args.steps))
        print(_line(n_rows[-1]), flush=True)
    name = "scaling" + ("_quick" if args.quick else "")
    out_dir = pathlib.Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(m_rows, n_rows, out_dir / f"{name}.png")
    payload = {"benchmark": "scaling", "quick": args.quick, "repeats": repeats, "threads": threads,
               "description": "jaxpareto step time and memory vs m (n fixed) and n (m fixed)",
               "png": png and pathlib.Path(png).name, "m_sweep": m_rows, "n_sweep": n_rows}
    path = write(name, payload, out_dir)
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return payload


def _line(r):
    t = r["time_s"]
    return (f"m={r['m']:>3} n={r['n']:>9} " + " ".join(f"{k}={fmt_time(v)}" for k, v in t.items())
            + " | XLA MiB: " + " ".join(f"{k}={v / 2**20:.1f}" for k, v in r["xla_bytes"].items() if v))


if __name__ == "__main__":
    main()
