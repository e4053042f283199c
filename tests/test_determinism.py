"""Determinism and checkpointing: same seed → same bits; a resumed run → same bits.

For every transform (``mgda``, ``epo``, ``pmtl``, ``linear``, ``chebyshev``, each
chained with ``optax.adam``) and for the MGDA-UB step ``jp.mtl_value_and_grad``:

* two runs of 100 steps from the same seed, each in its own freshly built and
  compiled ``jax.jit`` function, end with bitwise-identical parameters and optimizer
  state (CPU);
* a run checkpointed at step 50 with :mod:`jaxpareto.checkpoint`, restored into a
  structure rebuilt from scratch (``jax.eval_shape`` of a new ``tx.init``, nothing
  shared with the saved objects) and continued to step 100, ends bitwise equal to the
  uninterrupted run.

The steps run in ``jax.lax.scan`` chunks of 50 steps; every batch is drawn from
``fold_in(key, step)``, so the data depend only on the seed and the step number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpareto as jp
from jaxpareto import checkpoint

CHUNK = 50
M = 3
R = jnp.array([1.0, 2.0, 3.0])
TARGETS = jnp.array([1.0, -1.0, 0.5])


def _losses(params, x):
    h = jnp.tanh(x @ params["w1"])
    return jnp.mean((h @ params["w2"] - TARGETS) ** 2, axis=0) + 0.01 * jnp.sum(params["w1"] ** 2)


def _encode(params, x):
    return jnp.tanh(x @ params["w1"])


def _heads(params, z, x):
    return jnp.mean((z @ params["w2"] - TARGETS) ** 2, axis=0)


def _batch(key, step):
    return jax.random.normal(jax.random.fold_in(key, step), (8, 4))


def _init(seed):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"w1": 0.5 * jax.random.normal(k1, (4, 5)), "w2": 0.5 * jax.random.normal(k2, (5, M))}
    return params, k3


TRANSFORMS = {
    "mgda": lambda: jp.mgda(num_tasks=M),
    "epo": lambda: jp.epo(R),
    "pmtl": lambda: jp.pmtl(jnp.eye(M) + 0.2, index=1, init_steps=20),
    "linear": lambda: jp.linear(R),
    "chebyshev": lambda: jp.chebyshev(R),
}
NAMES = (*TRANSFORMS, "mtl_value_and_grad")


def _program(name):
    """``(init(params) -> state, chunk(params, state, key, step0) -> (params, state))``,
    built from scratch: new transform objects, new closures, a new ``jax.jit``."""
    opt = optax.adam(1e-2)
    if name == "mtl_value_and_grad":
        weighting = jp.weighting.mgda()
        step_fn = jp.mtl_value_and_grad(_encode, _heads, weighting)

        def init(params):
            return (weighting.init(M, jnp.float64), opt.init(params))

        def one(params, state, x):
            (losses, grads), w_state = step_fn(params, x, state[0])
            updates, opt_state = opt.update(grads, state[1], params)
            return optax.apply_updates(params, updates), (w_state, opt_state)
    else:
        tx = optax.chain(TRANSFORMS[name](), opt)
        init = tx.init

        def one(params, state, x):
            losses, jac = jp.value_and_jacobian(_losses)(params, x)
            updates, state = tx.update(jac, state, params, losses=losses)
            return optax.apply_updates(params, updates), state

    @jax.jit
    def chunk(params, state, key, step0):
        def body(carry, t):
            params, state = carry
            return one(params, state, _batch(key, step0 + t)), None

        (params, state), _ = jax.lax.scan(body, (params, state), jnp.arange(CHUNK))
        return params, state

    return init, chunk


def _run(name, seed, chunks=2):
    init, chunk = _program(name)
    params, key = _init(seed)
    state = init(params)
    for c in range(chunks):
        params, state = chunk(params, state, key, c * CHUNK)
    return params, state


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), np.max(np.abs(x.astype(float) - y.astype(float)))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bits_and_resume(name, tmp_path):
    first = _run(name, seed=0)
    for leaf in jax.tree_util.tree_leaves(first):
        assert np.all(np.isfinite(np.asarray(leaf, float)))
    assert not np.array_equal(first[0]["w1"], _init(0)[0]["w1"])  # it did train

    # A second program, built and compiled from scratch: 50 steps, checkpoint, 50 steps.
    init, chunk = _program(name)
    params0, key = _init(0)
    half = chunk(params0, init(params0), key, 0)
    path = tmp_path / "step50.npz"
    checkpoint.save(path, {"params": half[0], "state": half[1], "step": CHUNK})
    second = chunk(*half, key, CHUNK)
    _assert_bitwise_equal(second, first)  # same seed, fresh compile: same bits

    # Restore into a structure rebuilt from scratch (other values, shapes only).
    p_like, _ = _init(123)
    like = {"params": p_like, "state": jax.eval_shape(_program(name)[0], p_like), "step": 0}
    restored = checkpoint.restore(path, like)
    del half
    assert int(restored["step"]) == CHUNK
    resumed = chunk(restored["params"], restored["state"], key, int(restored["step"]))
    _assert_bitwise_equal(resumed, first)


def test_different_seed_different_bits():
    """The comparison above can fail: another seed gives other parameters."""
    init, chunk = _program("linear")
    (p0, k0), (p1, k1) = _init(0), _init(1)
    a, _ = chunk(p0, init(p0), k0, 0)
    b, _ = chunk(p1, init(p1), k1, 0)
    assert not np.array_equal(a["w1"], b["w1"])


def test_checkpoint_round_trip_is_exact(tmp_path):
    """Every dtype a training state may hold comes back bit for bit (bfloat16 and
    float16 included), PRNG keys too, and the restored leaves are jax arrays."""
    tree = {
        "f64": jnp.array([np.pi, -0.0, np.inf, 1e-310]),
        "f32": jnp.array([1 / 3], jnp.float32),
        "f16": jnp.array([0.1, 65504.0], jnp.float16),
        "bf16": jnp.array([1 / 3, -2.5e38], jnp.bfloat16),
        "i32": jnp.array(7, jnp.int32),
        "bool": jnp.array([True, False]),
        "raw_key": jax.random.PRNGKey(42),
        "typed_key": jax.random.key(42),
        "nested": (jnp.zeros((0, 3)), [jnp.ones((2, 2), jnp.float32)]),
    }
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, tree)
    out = checkpoint.restore(path, jax.eval_shape(lambda: tree))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
    for k in tree:
        for x, y in zip(jax.tree_util.tree_leaves(tree[k]), jax.tree_util.tree_leaves(out[k])):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
                x, y = jax.random.key_data(x), jax.random.key_data(y)
            assert isinstance(y, jax.Array) and x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x).reshape(-1).view(np.uint8),
                                          np.asarray(y).reshape(-1).view(np.uint8))
    np.testing.assert_array_equal(jax.random.normal(out["typed_key"], (3,)),
                                  jax.random.normal(tree["typed_key"], (3,)))


def test_soak_quick_smoke(tmp_path):
    """``python -m benchmarks.soak --quick``: a few hundred noisy float32 EPO steps with
    restarts and injected zero / negative / NaN / inf losses stay finite, every bad
    step is accounted for, and the JSON report is written."""
    import json

    from benchmarks import soak

    out = tmp_path / "soak.json"
    payload = soak.main(["--quick", "--problems", "epo_synthetic", "--methods", "epo",
                         "--out", str(out)])
    assert json.loads(out.read_text())["total_steps"] == payload["total_steps"] == 300
    (run,) = payload["runs"]
    assert payload["total_nonfinite"] == 0 and run["final_params_finite"]
    assert run["injected_bad_losses"] >= 4
    assert 1 <= run["skipped"] <= run["injected_bad_losses"]  # NaN / inf losses
    assert run["clipped_losses"] >= 1  # zero / negative losses
    # Every step is either skipped or solved, and every solved step has an LP status.
    assert sum(run["lp_status"].values()) + run["skipped"] == run["steps"]
    assert run["final_non_uniformity_max"] < 0.05
