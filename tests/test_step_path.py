"""The fused training step: layouts, the row-layout hints, and the update against an
independent oracle (``jax.jacrev`` rows, a numpy Gramian and a numpy combination).

The step path chooses its layout at trace time (``jp.jacobian.row_layout``): on one CPU
device, ``m`` separate VJPs whose rows feed the Gramian and the combination directly, so
that the stacked ``[m, n]`` Jacobian never exists in the compiled program; elsewhere
one vmapped backward pass. Both must give the same update as the textbook formulation.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend import core as jex_core

import jaxpareto as jp
from jaxpareto import jacobian as jpj

M = 3


def _problem(dtype, m=M, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    params = {
        "w1": jax.random.normal(k[0], (6, 16), dtype) / 3,
        "b1": jnp.zeros(16, dtype),
        "w2": jax.random.normal(k[1], (16, 8), dtype) / 4,
        "heads": jax.random.normal(k[2], (m, 8), dtype) / 3,
    }
    x = jax.random.normal(k[3], (20, 6), dtype)
    y = jax.random.normal(k[4], (20, m), dtype)

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        h = jnp.tanh(h @ p["w2"])
        out = h @ p["heads"].T
        return jnp.mean((out - y) ** 2, axis=0) + 0.1 * jnp.arange(1, m + 1, dtype=dtype)

    return params, x, y, loss_fn


def _oracle_rows(loss_fn, params, x, y):
    """``[m, n]`` Jacobian from jax.jacrev (no jaxpareto code), and the losses."""
    jac = jax.jacrev(loss_fn)(params, x, y)
    flat, _ = jax.flatten_util.ravel_pytree(params)
    rows = np.concatenate(
        [np.asarray(leaf).reshape(leaf.shape[0], -1) for leaf in jax.tree_util.tree_leaves(jac)],
        axis=1,
    )
    assert rows.shape[1] == flat.size
    return rows.astype(np.float64), np.asarray(loss_fn(params, x, y), np.float64)


_PREF = np.array([1.0, 2.0, 3.0])

WEIGHTINGS = {
    "mgda": lambda: jp.weighting.mgda(),
    "epo": lambda: jp.weighting.epo(_PREF),
    "pmtl": lambda: jp.weighting.pmtl(np.eye(M) + 0.2, index=1),
    "linear": lambda: jp.weighting.linear(_PREF),
    "chebyshev": lambda: jp.weighting.chebyshev(_PREF),
    "smooth_chebyshev": lambda: jp.weighting.smooth_chebyshev(_PREF),
    "upgrad": lambda: jp.weighting.upgrad(),
    "dualproj": lambda: jp.weighting.dualproj(),
    "pcgrad": lambda: jp.weighting.pcgrad(),
    "cagrad": lambda: jp.weighting.cagrad(0.5),
    "nash_mtl": lambda: jp.weighting.nash_mtl(),
    "imtl_g": lambda: jp.weighting.imtl_g(),
    "aligned_mtl": lambda: jp.weighting.aligned_mtl(),
}


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_fused_step_update_equals_textbook_formulation(name, dtype, tol):
    """jit(value_and_jacobian + tx.update) == Jᵀ w with J from jacrev and w from the
    weighting on the numpy Gramian J Jᵀ (the formulation before the row layout)."""
    params, x, y, loss_fn = _problem(dtype)
    weighting = WEIGHTINGS[name]()
    tx = jp.aggregate(weighting, num_tasks=M)
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, x, y)
        return tx.update(jac, s, p, losses=losses)

    updates, new_state = step(params, state)
    rows, losses = _oracle_rows(loss_fn, params, x, y)
    gram = rows @ rows.T
    w, _ = weighting.update(jnp.asarray(gram, dtype), state.inner,
                            losses=jnp.asarray(losses, dtype))
    w = np.asarray(w, np.float64)
    want = w @ rows
    got = np.asarray(jax.flatten_util.ravel_pytree(updates)[0], np.float64)
    np.testing.assert_allclose(np.asarray(new_state.weights, np.float64), w,
                               rtol=100 * tol, atol=100 * tol)
    scale = np.max(np.abs(want)) + 1e-30
    assert np.max(np.abs(got - want)) <= 100 * tol * scale, (name, np.max(np.abs(got - want)) / scale)
    assert int(new_state.skipped) == 0


@pytest.mark.parametrize("mode", ["rev", "rows", "vmap", "chunked", "fwd"])
def test_every_jacobian_mode_gives_the_same_jacobian_gramian_and_combination(mode):
    params, x, y, loss_fn = _problem(jnp.float64)
    rows, losses = _oracle_rows(loss_fn, params, x, y)
    w = jnp.asarray([0.2, -0.5, 1.3])

    @jax.jit
    def f(p):
        l, jac = jp.value_and_jacobian(loss_fn, mode=mode, chunk_size=2)(p, x, y)
        return l, jac, jp.gramian(jac), jp.combine(jac, w)

    l, jac, gram, direction = f(params)
    got_rows = np.concatenate(
        [np.asarray(leaf).reshape(M, -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=1)
    np.testing.assert_allclose(l, losses, rtol=1e-13)
    np.testing.assert_allclose(got_rows, rows, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gram, rows @ rows.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(direction)[0], np.asarray(w) @ rows,
                               rtol=1e-12, atol=1e-14)


def test_gramian_and_combine_of_a_materialised_jacobian_match_the_fused_ones():
    """Across a jit boundary the stacked Jacobian is a concrete array (no row hints):
    the matrix forms must give what the fused row forms give."""
    params, x, y, loss_fn = _problem(jnp.float64)
    losses, jac = jax.jit(jp.value_and_jacobian(loss_fn))(params, x, y)
    w = jnp.asarray([0.7, 0.1, 0.2])
    fused = jax.jit(lambda p: (lambda lj: (jp.gramian(lj[1]), jp.combine(lj[1], w)))(
        jp.value_and_jacobian(loss_fn)(p, x, y)))(params)
    np.testing.assert_allclose(jax.jit(jp.gramian)(jac), fused[0], rtol=1e-13)
    for a, b in zip(jax.tree_util.tree_leaves(jax.jit(jp.combine)(jac, w)),
                    jax.tree_util.tree_leaves(fused[1])):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)


def test_row_hints_do_not_outlive_the_trace():
    params, x, y, loss_fn = _problem(jnp.float64)
    jax.jit(lambda p: jp.gramian(jp.value_and_jacobian(loss_fn, mode="rows")(p, x, y)[1]))(params)
    assert jpj._ROWS == {}


def test_nan_jacobian_gives_a_zero_update_and_counts_a_skip():
    params, x, y, loss_fn = _problem(jnp.float32)
    x = x.at[3, 2].set(jnp.nan)
    tx = optax.chain(jp.mgda(num_tasks=M), optax.sgd(0.1))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, x, y)
        return tx.update(jac, s, p, losses=losses)

    updates, state = step(params, state)
    for leaf in jax.tree_util.tree_leaves(updates):
        assert np.all(np.asarray(leaf) == 0)
    assert int(state[0].skipped) == 1


def _big_problem(m):
    """A model whose Jacobian leaves have unmistakable shapes in the HLO."""
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {"w1": jax.random.normal(k[0], (48, 80), jnp.float32) / 7,
              "w2": jax.random.normal(k[1], (80, 56), jnp.float32) / 9,
              "h": jax.random.normal(k[2], (m, 56), jnp.float32) / 7}
    x = jax.random.normal(k[3], (32, 48), jnp.float32)

    def loss_fn(p, x):
        h = jax.nn.relu(jax.nn.relu(x @ p["w1"]) @ p["w2"])
        return jnp.mean((h @ p["h"].T - 1.0) ** 2, axis=0)

    return params, x, loss_fn


@pytest.mark.skipif(not jpj.row_layout(), reason="the row layout is the single-CPU-device path")
@pytest.mark.parametrize("method", ["mgda", "epo", "upgrad"])
def test_fused_step_never_builds_guards_or_transposes_the_stacked_jacobian(method):
    """The cause of the old step's 2–3× overhead: `where(finite, J, 0)` over the whole
    Jacobian and transposing copies of the vmapped [m, …] leaves. Neither may appear:
    the jaxpr has no select over an [m, …] Jacobian leaf, and the optimised HLO holds no
    array shaped like a stacked Jacobian leaf at all (in any axis order)."""
    m = 4
    params, x, loss_fn = _big_problem(m)
    weighting = {"mgda": jp.weighting.mgda(),
                 "epo": jp.weighting.epo(np.arange(1.0, m + 1)),
                 "upgrad": jp.weighting.upgrad()}[method]
    tx = optax.chain(jp.aggregate(weighting, num_tasks=m), optax.adam(1e-3))
    state = tx.init(params)

    def step(p, s):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, x)
        u, s = tx.update(jac, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    stacked = [tuple(sorted((m, *leaf.shape))) for leaf in jax.tree_util.tree_leaves(params)
               if leaf.ndim == 2 and leaf.shape[0] != m]
    jaxpr = jax.make_jaxpr(step)(params, state)

    def eqns(jp_):
        for e in jp_.eqns:
            yield e
            for sub in jex_core.jaxprs_in_params(e.params):
                yield from eqns(sub)

    for e in eqns(jaxpr.jaxpr):
        if e.primitive.name in ("select_n", "select"):
            for v in e.invars:
                shape = tuple(sorted(getattr(v.aval, "shape", ())))
                assert shape not in stacked, f"select over a Jacobian leaf {v.aval}"
    hlo = jax.jit(step).lower(params, state).compile().as_text()
    shapes = {tuple(sorted(int(d) for d in dims.split(",")))
              for dims in re.findall(r"f32\[([0-9,]+)\]", hlo)}
    assert not (shapes & set(stacked)), sorted(shapes & set(stacked))


def test_mgda_ub_step_equals_its_textbook_formulation():
    """MGDA-UB against a direct computation: ∇_z rows by jacrev, the min-norm weights on
    their Gramian, head leaves by their unscaled summed gradient (the paper's form) and
    the shared leaves by ∇ Σ w_i l_i."""
    k = jax.random.split(jax.random.PRNGKey(4), 5)
    params = {"enc": jax.random.normal(k[0], (5, 7)) / 2,
              "heads": jax.random.normal(k[1], (M, 7, 2)) / 2}
    xb = jax.random.normal(k[2], (11, 5))
    yb = jax.random.normal(k[3], (11, M, 2))

    def encode(p, b):
        return jnp.tanh(b[0] @ p["enc"])

    def heads(p, z, b):
        out = jnp.einsum("bd,tdk->btk", z, p["heads"])
        return jnp.mean(jnp.sum((out - b[1]) ** 2, axis=-1), axis=0)

    weighting = jp.weighting.mgda()
    for scaling in ("paper", "reference"):
        step = jax.jit(jp.mtl_value_and_grad(encode, heads, weighting, head_scaling=scaling))
        (losses, grads), state = step(params, (xb, yb), weighting.init(M, jnp.float64))
        z = encode(params, (xb, yb))
        zj = jax.jacrev(lambda zz: heads(params, zz, (xb, yb)))(z).reshape(M, -1)
        w_want = np.asarray(jp.min_norm_weights(zj @ zj.T).weights)
        np.testing.assert_allclose(state.weights, w_want, rtol=1e-10, atol=1e-12)

        def weighted(p, w):
            return jnp.dot(w, heads(p, encode(p, (xb, yb)), (xb, yb)))

        g_w = jax.grad(weighted)(params, jnp.asarray(w_want))
        g_1 = jax.grad(weighted)(params, jnp.ones(M))
        np.testing.assert_allclose(grads["enc"], g_w["enc"], rtol=1e-10, atol=1e-12)
        want_head = g_1["heads"] if scaling == "paper" else g_w["heads"]
        np.testing.assert_allclose(grads["heads"], want_head, rtol=1e-10, atol=1e-12)
