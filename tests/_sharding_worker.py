"""Multi-device checks of jaxpareto.sharding, run in ONE subprocess by test_sharding.py.

The parent starts this script with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(that flag would change every other test if it reached the main pytest process). It
runs every sharded training step next to the same jitted step on one device (the
oracle: identical code, no sharding), reads the compiled HLO, and prints one JSON
object on the last line of stdout; the test functions assert on it.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import sys
import time
import types

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import jaxpareto as jp  # noqa: E402
import jaxpareto.sharding as jps  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
M = 3
SIZES = (12, 32, 16)  # trunk; heads 16 -> 1 per task
BATCH = 64
STEPS = 3


# ----------------------------------------------------------------------------- model


def init(dtype):
    trunk = jp.models.mlp_init(jax.random.PRNGKey(0), SIZES, dtype=dtype)
    head_w = jax.random.uniform(jax.random.PRNGKey(1), (SIZES[-1], M), dtype, -0.25, 0.25)
    return {"trunk": trunk, "heads": {"w": head_w, "b": jnp.zeros((M,), dtype)}}


def data(dtype):
    kx, ky = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(kx, (BATCH, SIZES[0]), dtype)
    y = jax.random.normal(ky, (BATCH, M), dtype)
    return x, y


def encode(params, batch):
    x, _ = batch
    return jnp.tanh(jp.models.mlp_apply(params["trunk"], x))


def heads(params, z, batch):
    _, y = batch
    pred = z @ params["heads"]["w"] + params["heads"]["b"]
    return jnp.mean((pred - y) ** 2, axis=0)  # per-task batch mean: [m]


def loss_fn(params, batch):
    return heads(params, encode(params, batch), batch)


def megatron_specs():
    """Tensor-parallel layout of the trunk (column split, then row split); heads
    replicated. Its only activation collective is the all-reduce of the second trunk
    layer's output (the default shape rule would also split the head matrix)."""
    return {
        "trunk": [{"w": P(None, jps.MODEL), "b": P(jps.MODEL)}, {"w": P(jps.MODEL, None), "b": P()}],
        "heads": {"w": P(), "b": P()},
    }


# ----------------------------------------------------------------------------- steps


def jacobian_step(tx):
    @jax.jit
    def step(params, opt_state, batch):
        losses, jac = jp.value_and_jacobian(loss_fn)(params, batch)
        updates, opt_state = tx.update(jac, opt_state, params, losses=losses)
        weights = opt_state[0].weights
        return optax.apply_updates(params, updates), opt_state, updates, weights, losses

    return step


def mgda_ub_step():
    mtl = jp.mtl_value_and_grad(encode, heads, jp.weighting.mgda())
    sgd = optax.sgd(0.1)

    @jax.jit
    def step(params, opt_state, batch):
        w_state, sgd_state = opt_state
        (losses, grads), w_state = mtl(params, batch, w_state)
        updates, sgd_state = sgd.update(grads, sgd_state, params)
        params = optax.apply_updates(params, updates)
        return params, (w_state, sgd_state), updates, w_state.weights, losses

    def init_state(params, dtype):
        return (jp.weighting.mgda().init(M, dtype), sgd.init(params))

    return step, init_state


@functools.lru_cache(maxsize=None)
def method(name):
    """(step, init_state(params, dtype)); cached so each jitted step compiles once per
    input sharding."""
    if name == "mgda_ub":
        return mgda_ub_step()
    if name == "epo":
        tx = optax.chain(jp.epo(jnp.array([1.0, 2.0, 3.0])), optax.sgd(0.1))
    else:
        tx = optax.chain(jp.mgda(num_tasks=M), optax.sgd(0.1))
    return jacobian_step(tx), lambda params, dtype: tx.init(params)


# -------------------------------------------------------------------------- helpers


def max_diff(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(la, lb)
    )


def spec_str(spec) -> str:
    """A PartitionSpec as a string, trailing Nones dropped so P('m', None) == P('m')."""
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return str(tuple(entries))


def specs(tree):
    """spec_str of every leaf's sharding (its class name when not a NamedSharding)."""
    out = []
    for leaf in jax.tree_util.tree_leaves(tree):
        s = leaf.sharding
        out.append(spec_str(s.spec) if isinstance(s, NamedSharding) else type(s).__name__)
    return out


def spec_list(spec_tree):
    return [spec_str(s) for s in jax.tree_util.tree_leaves(
        spec_tree, is_leaf=lambda x: isinstance(x, P))]


def colls(text):
    return [[c.op, [[d, list(s)] for d, s in c.shapes], c.group_size] for c in jps.collectives(text)]


def leaf_shapes(tree):
    return [list(np.shape(l)) for l in jax.tree_util.tree_leaves(tree)]


# --------------------------------------------------------------------------- checks


@functools.lru_cache(maxsize=None)
def reference(name, dtype_name):
    """Oracle: the same jitted step on one device with unsharded inputs."""
    step, init_state = method(name)
    dtype = jnp.dtype(dtype_name)
    params = init(dtype)
    batch = data(dtype)
    ref = []
    p, s = params, init_state(params, dtype)
    for _ in range(STEPS):
        p, s, upd, w, losses = step(p, s, batch)
        ref.append((p, upd, w, losses))
    return ref


def run_case(name, dtype, mesh):
    step, init_state = method(name)
    params = init(dtype)
    batch = data(dtype)
    wdtype = jnp.dtype(dtype)

    ref = reference(name, wdtype.name)

    layout = megatron_specs() if mesh.shape[jps.MODEL] > 1 else None  # None: replicated
    sp = jps.shard_params(params, mesh, specs=layout)
    ss = jps.shard_state(init_state(sp, wdtype), sp)
    sb = jps.shard_batch(batch, mesh)
    text = step.lower(sp, ss, sb).compile().as_text()
    got = []
    p, s = sp, ss
    for _ in range(STEPS):
        p, s, upd, w, losses = step(p, s, sb)
        got.append((p, upd, w, losses))

    diffs = {k: max(max_diff(r[i], g[i]) for r, g in zip(ref, got))
             for i, k in enumerate(("params", "updates", "weights", "losses"))}
    scale = {k: max(float(np.max(np.abs(np.asarray(l, np.float64))))
                    for l in jax.tree_util.tree_leaves(ref[0][i]))
             for i, k in enumerate(("params", "updates", "weights", "losses"))}
    return {
        "diff": diffs,
        "scale": scale,
        "weights": np.asarray(ref[0][2], np.float64).tolist(),
        "collectives": colls(text),
        "param_shapes": leaf_shapes(params),
        "head_shapes": leaf_shapes(params["heads"]),
        "trunk_shapes": leaf_shapes(params["trunk"]),
        "local_batch": BATCH // mesh.shape[jps.DATA],
        "param_specs_in": specs(sp),
        "param_specs_out": specs(got[-1][0]),
        "update_specs": specs(got[-1][1]),
        "finite": bool(all(np.all(np.isfinite(np.asarray(l)))
                           for g in got for l in jax.tree_util.tree_leaves(g))),
        "mesh": dict(mesh.shape),
    }


def gramian_combine_case(mesh):
    """jp.gramian / jp.combine alone on a Jacobian sharded like model-sharded params."""
    params = init(jnp.float64)
    _, jac = jax.jit(jp.value_and_jacobian(loss_fn))(params, data(jnp.float64))
    pspecs = megatron_specs()
    jac_sh = jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, P(None, *s)), pspecs, is_leaf=lambda x: isinstance(x, P)
    )
    sjac = jax.device_put(jac, jac_sh)
    w = jnp.array([0.2, 0.3, 0.5])
    sw = jax.device_put(w, NamedSharding(mesh, P()))

    gram_fn = jax.jit(jp.gramian)
    gram_text = gram_fn.lower(sjac).compile().as_text()
    sgram = gram_fn(sjac)
    comb_fn = jax.jit(jp.combine)
    comb_text = comb_fn.lower(sjac, sw).compile().as_text()
    scomb = comb_fn(sjac, sw)

    # Independent oracle: numpy on the flattened Jacobian.
    rows = np.concatenate([np.asarray(l).reshape(M, -1) for l in jax.tree_util.tree_leaves(jac)], 1)
    gram_np = rows @ rows.T
    comb_np = np.asarray(w) @ rows
    comb_flat = np.concatenate([np.asarray(l).ravel() for l in jax.tree_util.tree_leaves(scomb)])
    return {
        "m": M,
        "gram_collectives": colls(gram_text),
        "gram_spec": specs(sgram)[0],
        "gram_diff": float(np.max(np.abs(np.asarray(sgram) - gram_np))),
        "gram_scale": float(np.max(np.abs(gram_np))),
        "combine_collectives": colls(comb_text),
        "combine_specs": specs(scomb),
        "param_specs": spec_list(pspecs),
        "jac_specs": specs(sjac),
        "combine_diff": float(np.max(np.abs(comb_flat - comb_np))),
    }


ENGINE_RUNS = (("auto", "float64"), ("auto", "float32"), ("per-sample", "float64"))


def engine_step(order):
    """Jitted: the Gramian engine's losses, Gramian and update ``∇ Σ w_i l_i``."""

    @jax.jit
    def step(params, batch, weights):
        losses, gv = jp.gramian_vjp(loss_fn, order=order)(params, batch)
        return losses, gv.gram, gv.vjp(weights)

    return step


def rel_diff(ref, got) -> float:
    """Largest absolute difference over the leaves, over the largest entry of ``ref``."""
    scale = max(float(np.max(np.abs(np.asarray(l, np.float64))))
                for l in jax.tree_util.tree_leaves(ref))
    return max_diff(ref, got) / scale


def engine_run(order, dtype, mesh):
    """One engine step on the batch sharded over ``mesh`` against the same jitted step
    on one device (unsharded inputs)."""
    step = engine_step(order)
    params, batch = init(dtype), data(dtype)
    weights = jnp.array([0.2, 0.3, 0.5], dtype)
    ref = step(params, batch, weights)
    args = (jps.shard_params(params, mesh), jps.shard_batch(batch, mesh),
            jps.replicate(weights, mesh))
    got = step(*args)
    text = step.lower(*args).compile().as_text()
    names = ("losses", "gram", "update")
    return {
        "kinds": list(jp.gramian_engine.explain(loss_fn, order=order)(params, batch).values()),
        "diff": {k: rel_diff(r, g) for k, r, g in zip(names, ref, got)},
        "scale": {k: float(max(np.max(np.abs(np.asarray(l, np.float64)))
                               for l in jax.tree_util.tree_leaves(r)))
                  for k, r in zip(names, ref)},
        "collectives": colls(text),
        "gram_spec": specs(got[1])[0],
        "update_specs": specs(got[2]),
    }


def gramian_engine_case(mesh):
    """jp.gramian_vjp under data parallelism (batch split 8 ways, parameters
    replicated), per contraction order and dtype."""
    return {
        "m": M,
        "batch": BATCH,
        "param_shapes": leaf_shapes(init(jnp.float64)),
        "runs": {f"{order}/{dtype}": engine_run(order, jnp.dtype(dtype), mesh)
                 for order, dtype in ENGINE_RUNS},
    }


def readme_block():
    """The '## Scaling out' python block of README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start = text.find("## Scaling out")
    if start < 0:
        return None, None
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    return (str(readme), block.group(1)) if block else (None, None)


def readme_case():
    source, code = readme_block()
    if code is None:
        return {"source": None}
    ns_sharded: dict = {}
    exec(compile(code, "README-scaling-out", "exec"), ns_sharded)
    # The same block with jp.sharding replaced by do-nothing placement: one device.
    stub = types.SimpleNamespace(
        make_mesh=lambda *a, **k: None,
        shard_params=lambda tree, mesh, *a, **k: tree,
        replicate=lambda tree, mesh, *a, **k: tree,
        shard_state=lambda state, params: state,
        shard_batch=lambda batch, mesh, *a, **k: batch,
    )
    real = jp.sharding
    jp.sharding = stub
    try:
        ns_single: dict = {}
        exec(compile(code, "README-scaling-out-single", "exec"), ns_single)
    finally:
        jp.sharding = real
    params = ns_sharded["params"]
    step = ns_sharded["step"]
    text = step.lower(params, ns_sharded["opt_state"], ns_sharded["batch"]).compile().as_text()
    return {
        "collectives": colls(text),
        "opt_state_specs": specs(ns_sharded["opt_state"]),
        "rule_specs": spec_list(jps.param_specs(params, ns_sharded["mesh"])),
        "step_compiles": step._cache_size(),
        "opt_state_shapes": leaf_shapes(ns_sharded["opt_state"]),
        "source": source,
        "params_diff": max_diff(ns_sharded["params"], ns_single["params"]),
        "losses_diff": max_diff(ns_sharded["losses"], ns_single["losses"]),
        "losses": np.asarray(ns_sharded["losses"], np.float64).tolist(),
        "dtype": str(jax.tree_util.tree_leaves(params)[0].dtype),
        "mesh": dict(ns_sharded["mesh"].shape),
        "param_specs": specs(params),
        "param_shapes": leaf_shapes(params),
    }


def explicit_mesh_case():
    """Data parallel on jax.make_mesh's default (Explicit) axis types."""
    # Linear scalarization: no solver loop to compile, same Jacobian all-reduce.
    tx = optax.chain(jp.linear(jnp.array([1.0, 2.0, 3.0])), optax.sgd(0.1))
    step, init_state = jacobian_step(tx), lambda params, dtype: tx.init(params)
    params, batch = init(jnp.float64), data(jnp.float64)
    ref = step(params, init_state(params, jnp.float64), batch)
    mesh = jax.make_mesh((8,), ("data",))
    rep = NamedSharding(mesh, P())
    sp = jax.device_put(params, rep)
    ss = jax.device_put(init_state(params, jnp.float64), rep)
    sb = jax.device_put(batch, NamedSharding(mesh, P("data")))
    got = step(sp, ss, sb)
    text = step.lower(sp, ss, sb).compile().as_text()
    return {
        "collectives": colls(text),
        "axis_types": [str(t) for t in mesh.axis_types],
        "diff": max_diff(ref, got),
    }


# (mesh, method, dtype). The default set keeps the subprocess fast (every case costs XLA
# compiles); ``--full`` (the slow test) runs every combination.
FAST_CASES = (
    ("dp", "epo", "float64"), ("dp", "epo", "float32"), ("mp", "epo", "float64"),
    ("dp", "mgda_ub", "float64"), ("mp", "mgda_ub", "float64"),
)  # float32 on the 4×2 mesh: the README block (EPO + adam, float32 parameters)
FULL_CASES = tuple(
    (mesh, name, dtype)
    for mesh in ("dp", "mp") for name in ("epo", "mgda", "mgda_ub")
    for dtype in ("float64", "float32")
)


def validation_case(mesh):
    """Run-time placement errors that need more than one device."""
    try:
        jps.shard_batch(np.zeros((BATCH - 1, 2)), mesh)
        message = None
    except ValueError as err:
        message = str(err)
    return {"indivisible_batch": message}


def main(argv):
    t0 = time.perf_counter()
    out = {"devices": jax.device_count(), "cases": {}, "timings": {}}
    assert jax.device_count() == 8, jax.devices()
    meshes = {"dp": jps.make_mesh(), "mp": jps.make_mesh(model=2)}
    for mesh_name, name, dtype in FULL_CASES if "--full" in argv else FAST_CASES:
        t = time.perf_counter()
        key = f"{mesh_name}/{name}/{dtype}"
        out["cases"][key] = run_case(name, jnp.dtype(dtype), meshes[mesh_name])
        out["timings"][key] = time.perf_counter() - t
        print(key, out["timings"][key], file=sys.stderr, flush=True)
    extras = [("gramian_combine", lambda: gramian_combine_case(meshes["mp"])),
              ("gramian_engine", lambda: gramian_engine_case(meshes["dp"])),
              ("validation", lambda: validation_case(meshes["dp"])), ("readme", readme_case)]
    if "--full" in argv:
        extras.append(("explicit", explicit_mesh_case))
    for name, fn in extras:
        t = time.perf_counter()
        out[name] = fn()
        out["timings"][name] = time.perf_counter() - t
        print(name, out["timings"][name], file=sys.stderr, flush=True)
    out["elapsed"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
