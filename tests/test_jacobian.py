"""Jacobians, Gramians, combine and the shared-representation (MGDA-UB) step."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from jaxpareto.jacobian import combine, gramian, mtl_value_and_grad, value_and_jacobian
from jaxpareto.weighting.base import Weighting


def _params(key, dtype=jnp.float64):
    k = jax.random.split(key, 4)
    return {
        "enc": {"w": jax.random.normal(k[0], (5, 4), dtype), "b": jax.random.normal(k[1], (4,), dtype)},
        "heads": [jax.random.normal(k[2], (4,), dtype), (jax.random.normal(k[3], (4, 2), dtype),)],
    }


def _loss_fn(params, x):
    h = jnp.tanh(x @ params["enc"]["w"] + params["enc"]["b"])
    l1 = jnp.mean((h @ params["heads"][0]) ** 2)
    l2 = jnp.mean(jnp.sin(h @ params["heads"][1][0]))
    l3 = jnp.sum(params["enc"]["b"] ** 2) + jnp.mean(h)
    return jnp.stack([l1, l2, l3])


def _flat_rows(jac):
    leaves = jax.tree_util.tree_leaves(jac)
    return np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in leaves], axis=1)


@pytest.mark.parametrize("mode", ["rev", "fwd", "chunked"])
def test_value_and_jacobian_matches_jacrev(mode):
    params = _params(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    losses, jac = jax.jit(value_and_jacobian(_loss_fn, mode=mode, chunk_size=2))(params, x)
    expected = jax.jacrev(_loss_fn)(params, x)
    np.testing.assert_allclose(losses, _loss_fn(params, x), rtol=1e-12)
    assert jax.tree_util.tree_structure(jac) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(expected)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_value_and_jacobian_has_aux_and_argnums():
    params = _params(jax.random.PRNGKey(2))
    x = jax.random.normal(jax.random.PRNGKey(3), (7, 5))

    def f(p, xx):
        return _loss_fn(p, xx), {"mean_x": jnp.mean(xx)}

    (losses, aux), (jp_, jx) = value_and_jacobian(f, argnums=(0, 1), has_aux=True)(params, x)
    exp_p, exp_x = jax.jacrev(_loss_fn, argnums=(0, 1))(params, x)
    np.testing.assert_allclose(aux["mean_x"], jnp.mean(x))
    np.testing.assert_allclose(jx, exp_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_flat_rows(jp_), _flat_rows(exp_p), rtol=1e-10, atol=1e-12)
    # argnums=1 alone differentiates the data.
    _, jx_only = value_and_jacobian(_loss_fn, argnums=1)(params, x)
    np.testing.assert_allclose(jx_only, exp_x, rtol=1e-10, atol=1e-12)


def test_value_and_jacobian_float32_dtype():
    params = _params(jax.random.PRNGKey(4), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(5), (7, 5), jnp.float32)
    losses, jac = value_and_jacobian(_loss_fn)(params, x)
    assert losses.dtype == jnp.float32
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(jac))


def test_value_and_jacobian_bad_inputs():
    params = _params(jax.random.PRNGKey(0))
    x = jnp.ones((3, 5))
    with pytest.raises(ValueError, match="1-D vector"):
        value_and_jacobian(lambda p, xx: jnp.sum(_loss_fn(p, xx)))(params, x)
    with pytest.raises(ValueError, match="mode"):
        value_and_jacobian(_loss_fn, mode="sideways")
    with pytest.raises(ValueError, match="chunk_size"):
        value_and_jacobian(_loss_fn, mode="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="argnums"):
        value_and_jacobian(_loss_fn, argnums=3)(params, x)
    with pytest.raises(TypeError, match="floating"):
        value_and_jacobian(lambda p: jnp.stack([p.sum(), (p ** 2).sum()]))(jnp.arange(3))


def test_gramian_and_combine_match_dense():
    params = _params(jax.random.PRNGKey(6))
    x = jax.random.normal(jax.random.PRNGKey(7), (7, 5))
    _, jac = value_and_jacobian(_loss_fn)(params, x)
    g = _flat_rows(jac)
    np.testing.assert_allclose(jax.jit(gramian)(jac), g @ g.T, rtol=1e-12, atol=1e-12)
    w = jnp.array([0.2, -1.0, 3.0])
    d = combine(jac, w)
    assert jax.tree_util.tree_structure(d) == jax.tree_util.tree_structure(params)
    np.testing.assert_allclose(_flat_rows(jax.tree_util.tree_map(lambda a: a[None], d))[0], w @ g,
                               rtol=1e-12, atol=1e-12)


def test_combine_is_linear():
    _, jac = value_and_jacobian(_loss_fn)(_params(jax.random.PRNGKey(8)), jnp.ones((4, 5)))
    w1, w2 = jnp.array([1.0, 2.0, -0.5]), jnp.array([0.3, 0.0, 4.0])
    lhs = combine(jac, 2.0 * w1 - 3.0 * w2)
    rhs = jax.tree_util.tree_map(lambda a, b: 2.0 * a - 3.0 * b, combine(jac, w1), combine(jac, w2))
    for a, b in zip(jax.tree_util.tree_leaves(lhs), jax.tree_util.tree_leaves(rhs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _primitives(jaxpr):
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for sub in jax_core.jaxprs_in_params(eqn.params):
            names.extend(_primitives(sub))
    return names


def test_gramian_never_flattens_the_whole_jacobian():
    _, jac = value_and_jacobian(_loss_fn)(_params(jax.random.PRNGKey(9)), jnp.ones((4, 5)))
    prims = _primitives(jax.make_jaxpr(gramian)(jac).jaxpr)
    assert "concatenate" not in prims
    # One contraction per leaf, summed: apart from a leaf's own [m, ...] -> [m, k]
    # reshape (a bitcast of that leaf, on the CPU layout) and column blocks [m, ≤ k] of
    # that one leaf, the largest intermediate is [m, m] — nothing joins leaves.
    closed = jax.make_jaxpr(gramian)(jac)
    leaf_sizes = {int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(jac)}
    largest = max(leaf_sizes)
    for eqn in closed.jaxpr.eqns:
        for v in eqn.outvars:
            shape = v.aval.shape
            if eqn.primitive.name == "reshape":
                assert shape[0] == 3 and int(np.prod(shape)) in leaf_sizes
            elif len(shape) == 2 and shape[0] == 3:
                assert shape == (3, 3) or 3 * shape[1] <= largest, shape
            else:
                assert int(np.prod(shape)) <= 9, (eqn.primitive.name, shape)


def test_gramian_and_combine_bad_inputs():
    with pytest.raises(ValueError, match="leading task axis"):
        gramian({"a": jnp.ones((3, 2)), "b": jnp.ones((2, 2))})
    with pytest.raises(TypeError, match="floating"):
        gramian({"a": jnp.ones((3, 2), jnp.int32)})
    with pytest.raises(ValueError, match="weights"):
        combine({"a": jnp.ones((3, 2))}, jnp.ones(2))


# ----------------------------------------------------------------------------------
# Shared-representation step (MGDA-UB).

class _SoftState(NamedTuple):
    weights: jax.Array


def _gram_dependent_weighting():
    """A test weighting whose weights depend on the Gramian: softmax of -diag(C)."""

    def init(m, dtype=jnp.float32):
        return _SoftState(jnp.full((m,), 1.0 / m, dtype))

    def update(gram, state, *, losses=None, preference=None):
        w = jax.nn.softmax(-jnp.diag(gram) + 0.1 * jnp.sum(gram, axis=1))
        return w, _SoftState(w)

    return Weighting(init, update)


def _mtl_model(key):
    k = jax.random.split(key, 4)
    return {
        "enc": jax.random.normal(k[0], (6, 5)) / 2,
        "head0": jax.random.normal(k[1], (5, 3)),
        "head1": jax.random.normal(k[2], (5, 3)),
        "head2": jax.random.normal(k[3], (5,)),
    }


def _encode(params, batch):
    x, _ = batch
    return jnp.tanh(x @ params["enc"])


def _heads(params, z, batch):
    _, y = batch
    l0 = jnp.mean(jax.nn.logsumexp(z @ params["head0"], axis=-1) - (z @ params["head0"])[:, 0])
    l1 = jnp.mean((z @ params["head1"] - y) ** 2)
    l2 = jnp.mean(jnp.cos(z @ params["head2"]))
    return jnp.stack([l0, l1, l2])


def _weighting(name):
    from jaxpareto import weighting

    return {
        "soft": _gram_dependent_weighting,
        "mgda": weighting.mgda,
        "epo": lambda: weighting.epo(jnp.array([1.0, 2.0, 0.5])),
    }[name]()


def _mtl_inputs():
    params = _mtl_model(jax.random.PRNGKey(10))
    batch = (jax.random.normal(jax.random.PRNGKey(11), (8, 6)),
             jax.random.normal(jax.random.PRNGKey(12), (8, 3)))
    return params, batch


@functools.lru_cache(maxsize=None)
def _oracle_weights(name):
    """Oracle 1 of :func:`test_mtl_value_and_grad`: the weighting run on the Gramian of
    the explicit Jacobian w.r.t. the representation, and the losses. Both head scalings
    share it (same inputs), so each weighting's solve compiles once (one jitted program:
    cheaper than dispatching the solver's operations eagerly)."""
    params, batch = _mtl_inputs()
    w8 = _weighting(name)
    z = _encode(params, batch)
    jz = jax.jacrev(lambda zz: _heads(params, zz, batch))(z).reshape(3, -1)
    losses = _heads(params, z, batch)
    solve = jax.jit(lambda gram, l: w8.update(gram, w8.init(3, jnp.float64), losses=l)[0])
    return solve(jz @ jz.T, losses), losses


@pytest.mark.parametrize("head_scaling", ["reference", "paper"])
@pytest.mark.parametrize("name", ["soft", "mgda", "epo"])
def test_mtl_value_and_grad(head_scaling, name):
    params, batch = _mtl_inputs()
    w8 = _weighting(name)
    step = jax.jit(mtl_value_and_grad(_encode, _heads, w8, head_scaling=head_scaling))
    state0 = w8.init(3, jnp.float64)
    (losses, grads), state = step(params, batch, state0)

    # Oracle 1: weights from the explicit Jacobian w.r.t. the representation.
    expected_w, expected_losses = _oracle_weights(name)
    np.testing.assert_allclose(state.weights, expected_w, rtol=1e-12)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)

    # Oracle 2: jax.grad of the weighted sum with the weights held fixed.
    def weighted(p):
        return jnp.dot(expected_w, _heads(p, _encode(p, batch), batch))

    expected = jax.grad(weighted)(params)
    if head_scaling == "paper":
        # Alg. 2 of Sener & Koltun (2018): each head gets its own unscaled task gradient.
        for t, name in enumerate(["head0", "head1", "head2"]):
            expected[name] = jax.grad(lambda p: _heads(p, _encode(p, batch), batch)[t])(params)[name]
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-12)


def test_mtl_value_and_grad_explicit_head_mask_and_errors():
    params = _mtl_model(jax.random.PRNGKey(13))
    batch = (jnp.ones((4, 6)), jnp.zeros((4, 3)))
    w8 = _gram_dependent_weighting()
    auto = mtl_value_and_grad(_encode, _heads, w8)
    explicit = mtl_value_and_grad(
        _encode, _heads, w8, head_params=lambda p: {k: k != "enc" for k in p}
    )
    s0 = w8.init(3, jnp.float64)
    (_, g1), _ = auto(params, batch, s0)
    (_, g2), _ = explicit(params, batch, s0)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="head_scaling"):
        mtl_value_and_grad(_encode, _heads, w8, head_scaling="both")
