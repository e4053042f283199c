"""The Gramian engine against the Jacobian oracle ``jp.gramian(jp.value_and_jacobian(...))``.

Every model is checked in float64 (≤ 1e-12 relative to the largest Gramian entry) and
float32 (≤ 1e-5), in both contraction orders, and with the path each parameter took
(``explain``) pinned, so a regression in the recognition shows as a changed path and a
wrong block as a numerical failure.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpareto as jp
from jaxpareto import gramian_engine as ge

TOL = {jnp.float64: 1e-12, jnp.float32: 1e-5}
ORDERS = ("auto", "per-sample", "weight-gradient")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _oracle(fun, *args, argnums=0, per_example=False):
    if per_example:
        flat = lambda *a: fun(*a).reshape(-1)  # noqa: E731
        return jp.value_and_jacobian(flat, argnums=argnums, mode="vmap")(*args)
    return jp.value_and_jacobian(fun, argnums=argnums, mode="vmap")(*args)


def _check(fun, *args, dtype, argnums=0, per_example=False, order="auto"):
    losses, gram = jax.jit(jp.value_and_gramian(fun, argnums=argnums, per_example=per_example,
                                                order=order))(*args)
    ref_losses, jac = jax.jit(lambda *a: _oracle(fun, *a, argnums=argnums,
                                                 per_example=per_example))(*args)
    assert gram.dtype == dtype
    assert gram.shape == (ref_losses.shape[0],) * 2
    np.testing.assert_allclose(losses, ref_losses, rtol=TOL[dtype])
    assert _rel(gram, jp.gramian(jac)) <= TOL[dtype]
    return jac


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


# ---------------------------------------------------------------------- models


def mlp_losses(params, x, y):
    return jnp.mean((jp.models.mlp_apply(params, x) - y) ** 2, axis=0)


def mlp_problem(dtype, batch=5, sizes=(12, 32, 24, 3)):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jp.models.mlp_init(k1, sizes, dtype=dtype)
    x = jax.random.normal(k2, (batch, sizes[0]), dtype)
    y = jax.random.normal(k3, (batch, sizes[-1]), dtype)
    return params, x, y


def conv_losses(params, x, y):
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, params["c1"], (1, 1), "SAME", dimension_numbers=dn)
    h = jax.nn.relu(h + params["b1"])
    h = jax.lax.conv_general_dilated(h, params["c2"], (2, 2), "VALID", dimension_numbers=dn)
    h = jnp.tanh(h + params["b2"]).reshape(x.shape[0], -1)
    return jnp.mean((h @ params["fc"] - y) ** 2, axis=0)


def conv_problem(dtype):
    ks = jax.random.split(jax.random.PRNGKey(1), 7)
    params = {
        "c1": 0.3 * jax.random.normal(ks[0], (3, 3, 2, 4), dtype),
        "b1": 0.1 * jax.random.normal(ks[1], (4,), dtype),
        "c2": 0.3 * jax.random.normal(ks[2], (3, 3, 4, 5), dtype),
        "b2": 0.1 * jax.random.normal(ks[3], (5,), dtype),
        "fc": 0.3 * jax.random.normal(ks[4], (3 * 3 * 5, 3), dtype),
    }
    x = jax.random.normal(ks[5], (4, 7, 7, 2), dtype)
    y = jax.random.normal(ks[6], (4, 3), dtype)
    return params, x, y


def attention_losses(params, tokens, targets):
    """Embedding → LayerNorm (affine) → single-head self-attention → per-task heads."""
    x = params["emb"][tokens]  # [B, T, D]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    h = (x - mu) / jnp.sqrt(var + 1e-5) * params["ln_g"] + params["ln_b"]
    q, k, v = h @ params["wq"], h @ params["wk"], h @ params["wv"]
    att = jax.nn.softmax(jnp.einsum("btd,bsd->bts", q, k) / float(np.sqrt(x.shape[-1])), axis=-1)
    o = jnp.einsum("bts,bsd->btd", att, v) @ params["wo"] + x
    logits = jnp.einsum("bd,dm->bm", o.mean(1), params["head"])
    return jnp.mean((logits - targets) ** 2, axis=0)


def attention_problem(dtype, vocab=11, d=6, batch=3, seq=4, m=4):
    ks = jax.random.split(jax.random.PRNGKey(2), 10)
    params = {
        "emb": jax.random.normal(ks[0], (vocab, d), dtype),
        "ln_g": 1 + 0.1 * jax.random.normal(ks[1], (d,), dtype),
        "ln_b": 0.1 * jax.random.normal(ks[2], (d,), dtype),
        **{n: jax.random.normal(ks[3 + i], (d, d), dtype) / float(np.sqrt(d))
           for i, n in enumerate(("wq", "wk", "wv", "wo"))},
        "head": jax.random.normal(ks[7], (d, m), dtype) / float(np.sqrt(d)),
    }
    tokens = jax.random.randint(ks[8], (batch, seq), 0, vocab)
    targets = jax.random.normal(ks[9], (batch, m), dtype)
    return params, tokens, targets


def shared_losses(params, x):
    """One weight used twice (a tied two-layer map) plus a scale used twice."""
    h = jnp.tanh(x @ params["w"] * params["s"])
    out = jnp.tanh(h @ params["w"]) * params["s"]
    return jnp.stack([jnp.mean(out ** 2), jnp.mean(out[:, 0]), jnp.mean(jnp.sin(out))])


def shared_problem(dtype):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    return ({"w": jax.random.normal(k1, (6, 6), dtype) / 2.5,
             "s": 1 + 0.1 * jax.random.normal(k2, (6,), dtype)},
            jax.random.normal(k3, (4, 6), dtype))


def scan_losses(params, x):
    """A recurrent cell (weight inside lax.scan: fallback) and a dense head."""
    def cell(h, xt):
        h = jnp.tanh(h @ params["rec"] + xt)
        return h, h

    _, hs = jax.lax.scan(cell, jnp.zeros_like(x[:, 0]), jnp.swapaxes(x, 0, 1))
    out = hs[-1] @ params["head"]
    return jnp.mean(out ** 2, axis=0)


def scan_problem(dtype):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
    return ({"rec": jax.random.normal(k1, (5, 5), dtype) / 3,
             "head": jax.random.normal(k2, (5, 3), dtype)},
            jax.random.normal(k3, (2, 4, 5), dtype))


def unrecognised_losses(params, x):
    """``sin(w)`` is not a recognised use: ``w`` takes the fallback."""
    h = jnp.tanh(x @ jnp.sin(params["w"]) + params["b"])
    return jnp.stack([jnp.mean(h ** 2), jnp.mean(h), jnp.mean(h @ params["v"])])


def unrecognised_problem(dtype):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(5), 4)
    return ({"w": jax.random.normal(k1, (4, 6), dtype), "b": jax.random.normal(k2, (6,), dtype),
             "v": jax.random.normal(k3, (6,), dtype)},
            jax.random.normal(k4, (3, 4), dtype))


def per_example_losses(params, x, y):
    """``[T, B]``: every task's loss on every example (m = T·B in per-example mode)."""
    return ((jp.models.mlp_apply(params, x) - y) ** 2).T


PROBLEMS = {
    "mlp": (mlp_losses, mlp_problem),
    "conv": (conv_losses, conv_problem),
    "attention": (attention_losses, attention_problem),
    "shared": (shared_losses, shared_problem),
    "scan": (scan_losses, scan_problem),
    "unrecognised": (unrecognised_losses, unrecognised_problem),
}


# ------------------------------------------------------------- Gramian = oracle


# The default suite runs every model once (float64, automatic order); the other orders
# and float32 compile the same models again and run with -m slow.
FAST = {("mlp", jnp.float64, "auto"), ("attention", jnp.float64, "auto"),
        ("shared", jnp.float64, "auto"), ("scan", jnp.float64, "auto"),
        ("unrecognised", jnp.float64, "auto"), ("mlp", jnp.float32, "auto"),
        ("mlp", jnp.float64, "per-sample")}
CASES = [pytest.param(name, dtype, order, id=f"{name}-{dtype.__name__}-{order}",
                      marks=() if (name, dtype, order) in FAST else pytest.mark.slow)
         for name in sorted(PROBLEMS) for dtype in (jnp.float64, jnp.float32) for order in ORDERS]


@pytest.mark.parametrize("name,dtype,order", CASES)
def test_gramian_matches_jacobian_oracle(name, dtype, order):
    fun, problem = PROBLEMS[name]
    _check(fun, *problem(dtype), dtype=dtype, order=order)


def test_paths_taken():
    """The recognition, pinned per parameter (per-sample where it is cheaper)."""
    params, x, y = mlp_problem(jnp.float64, batch=2, sizes=(32, 64, 3))
    kinds = ge.explain(mlp_losses)(params, x, y)
    assert kinds["[0]['w']"] == kinds["[1]['w']"] == "dense-per-sample"  # B = 2
    assert kinds["[0]['b']"] == "weight-gradient"
    params, x, y = mlp_problem(jnp.float64, batch=40, sizes=(32, 64, 3))
    kinds = ge.explain(mlp_losses)(params, x, y)
    assert kinds["[0]['w']"] == kinds["[1]['w']"] == "weight-gradient"  # B² > c·f

    params, tokens, targets = attention_problem(jnp.float64)
    kinds = ge.explain(attention_losses, order="per-sample")(params, tokens, targets)
    assert kinds["['emb']"] == "embedding-per-sample"
    assert kinds["['wq']"] == kinds["['head']"] == "dense-per-sample"
    assert kinds["['ln_g']"] == "weight-gradient"

    assert ge.explain(conv_losses)(*conv_problem(jnp.float64))["['c1']"] == "weight-gradient"
    assert ge.explain(scan_losses)(*scan_problem(jnp.float64)) == {
        "['head']": "dense-per-sample", "['rec']": "fallback"}
    kinds = ge.explain(unrecognised_losses)(*unrecognised_problem(jnp.float64))
    assert kinds == {"['b']": "weight-gradient", "['v']": "weight-gradient", "['w']": "fallback"}


@pytest.mark.parametrize("mode", ["promise_in_bounds", pytest.param("clip", marks=pytest.mark.slow),
                                  pytest.param("fill", marks=pytest.mark.slow)])
def test_embedding_per_sample(mode):
    table = jax.random.normal(jax.random.PRNGKey(6), (9, 4))
    idx = jnp.array([0, 3, 3, 8, 1, 12, 3])  # repeats and one out-of-range lookup

    def fun(table, idx):
        e = table.at[idx].get(mode=mode, fill_value=0.0)
        return jnp.stack([jnp.sum(jnp.tanh(e[:4]) ** 2), jnp.sum(e ** 3), jnp.mean(e[2:])])

    assert ge.explain(fun, order="per-sample")(table, idx) == {"": "embedding-per-sample"}
    _check(fun, table, idx, dtype=jnp.float64, order="per-sample")


@pytest.mark.slow
def test_lenet_both_convolutions():
    params = jp.models.lenet_init(jax.random.PRNGKey(7), 3, dtype=jnp.float64)
    images = jax.random.randint(jax.random.PRNGKey(8), (4, 36, 36), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(jax.random.PRNGKey(9), (4, 3), 0, 10)
    for conv in ("matmul", "xla"):
        def fun(p, im, lb, conv=conv):
            return jp.models.lenet_head_losses(p, jp.models.lenet_encode(p, im, conv=conv), lb)

        _check(fun, params, images, labels, dtype=jnp.float64)


@pytest.mark.parametrize("dtype", [jnp.float64, pytest.param(jnp.float32, marks=pytest.mark.slow)])
def test_per_example(dtype):
    params, x, y = mlp_problem(dtype, batch=6)
    jac = _check(per_example_losses, params, x, y, dtype=dtype, per_example=True)
    assert jax.tree_util.tree_leaves(jac)[0].shape[0] == 3 * 6
    # One loss per example, [B]: a plain vector, the flag is not needed.
    per_sample = lambda p, x, y: jnp.sum((jp.models.mlp_apply(p, x) - y) ** 2, axis=1)  # noqa: E731
    _check(per_sample, params, x, y, dtype=dtype)
    _check(per_sample, params, x, y, dtype=dtype, per_example=True)


@pytest.mark.slow
def test_argnums_tuple_and_aux():
    params, x, y = mlp_problem(jnp.float64)

    def fun(p, x, y):
        return mlp_losses(p, x, y), {"mean_x": jnp.mean(x)}

    (losses, aux), gv = jp.gramian_vjp(fun, argnums=(0, 1), has_aux=True)(params, x, y)
    ref, jac = jp.value_and_jacobian(lambda p, x: mlp_losses(p, x, y), argnums=(0, 1))(params, x)
    assert _rel(gv.gram, jp.gramian(jac)) <= 1e-12
    np.testing.assert_allclose(aux["mean_x"], jnp.mean(x))
    w = jnp.array([0.2, 0.5, 0.3])
    gp, gx = gv.vjp(w)
    np.testing.assert_allclose(gx, jp.combine(jac[1], w), rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(jp.combine(jac[0], w))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------ the update pass


def _assert_tree_close(a, b, tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * float(np.max(np.abs(y)) + 1e-30))


@pytest.mark.parametrize("name", ["unrecognised", pytest.param("attention", marks=pytest.mark.slow),
                                  pytest.param("scan", marks=pytest.mark.slow)])
def test_vjp_equals_combine(name):
    fun, problem = PROBLEMS[name]
    args = problem(jnp.float64)

    @jax.jit
    def both(*args):
        losses, gv = jp.gramian_vjp(fun)(*args)
        _, jac = jp.value_and_jacobian(fun)(*args)
        w = jnp.linspace(0.1, 1.0, losses.shape[0])
        return gv.vjp(w), jp.combine(jac, w)

    _assert_tree_close(*both(*args), 1e-12)


def test_jit_and_vmap_over_weights():
    params, x, y = mlp_problem(jnp.float64)
    _, jac = jp.value_and_jacobian(mlp_losses)(params, x, y)
    weights = jax.random.dirichlet(jax.random.PRNGKey(10), jnp.ones(3), (5,))

    @jax.jit
    def step(params, x, y, weights):
        losses, gv = jp.gramian_vjp(mlp_losses)(params, x, y)
        return losses, gv.gram, jax.vmap(gv.vjp)(weights)

    losses, gram, grads = step(params, x, y, weights)
    assert _rel(gram, jp.gramian(jac)) <= 1e-12
    for k in range(weights.shape[0]):
        _assert_tree_close(jax.tree_util.tree_map(lambda g: g[k], grads),
                           jp.combine(jac, weights[k]), 1e-12)


@pytest.mark.slow
def test_vmap_over_batches_and_jit_boundary():
    """The engine under vmap (several data batches) and its GramianVJP as a jit output."""
    params, x, y = mlp_problem(jnp.float64)
    xs = jnp.stack([x, 2 * x]); ys = jnp.stack([y, -y])
    grams = jax.vmap(lambda x, y: jp.value_and_gramian(mlp_losses)(params, x, y)[1])(xs, ys)
    for k in range(2):
        _, jac = jp.value_and_jacobian(mlp_losses)(params, xs[k], ys[k])
        assert _rel(grams[k], jp.gramian(jac)) <= 1e-12
    losses, gv = jax.jit(jp.gramian_vjp(mlp_losses))(params, x, y)
    _, jac = jp.value_and_jacobian(mlp_losses)(params, x, y)
    _assert_tree_close(gv.vjp(jnp.ones(3)), jp.combine(jac, jnp.ones(3)), 1e-12)


# ------------------------------------------------------------------ optax recipe


@pytest.mark.slow
def test_gramian_aggregate_matches_aggregate():
    """Three UPGrad + adam steps: the engine and the Jacobian drive the same chain."""
    params, x, y = mlp_problem(jnp.float64)
    tx_j = optax.chain(jp.aggregate(jp.weighting.upgrad(), num_tasks=3), optax.adam(1e-2))
    tx_g = optax.chain(jp.gramian_aggregate(jp.weighting.upgrad(), num_tasks=3), optax.adam(1e-2))

    @jax.jit
    def step_j(p, s):
        losses, jac = jp.value_and_jacobian(mlp_losses)(p, x, y)
        u, s = tx_j.update(jac, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    @jax.jit
    def step_g(p, s):
        losses, gv = jp.gramian_vjp(mlp_losses)(p, x, y)
        u, s = tx_g.update(gv, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    pj, sj = params, tx_j.init(params)
    pg, sg = params, tx_g.init(params)
    for _ in range(3):
        pj, sj = step_j(pj, sj)
        pg, sg = step_g(pg, sg)
    _assert_tree_close(pg, pj, 1e-9)
    np.testing.assert_allclose(sg[0].weights, sj[0].weights, rtol=1e-8)


@pytest.mark.slow
def test_gramian_aggregate_in_scan_with_preferences():
    """Inside lax.scan, and vmapped over run-time preferences of a linear weighting."""
    params, x, y = mlp_problem(jnp.float64)
    tx = jp.gramian_aggregate(jp.weighting.linear(jnp.ones(3)), num_tasks=3)
    prefs = jnp.array([[1.0, 1.0, 1.0], [3.0, 1.0, 0.5]])
    _, jac = jp.value_and_jacobian(mlp_losses)(params, x, y)

    def direction(pref):
        losses, gv = jp.gramian_vjp(mlp_losses)(params, x, y)
        d, _ = tx.update(gv, tx.init(params), params, losses=losses, preference=pref)
        return d

    ds = jax.vmap(direction)(prefs)
    for k in range(2):
        _assert_tree_close(jax.tree_util.tree_map(lambda d: d[k], ds),
                           jp.combine(jac, prefs[k] / prefs[k].sum()), 1e-12)

    def body(carry, _):
        p, s = carry
        losses, gv = jp.gramian_vjp(mlp_losses)(p, x, y)
        d, s = tx.update(gv, s, p, losses=losses)
        return (jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, d), s), losses

    (_, state), hist = jax.lax.scan(body, (params, tx.init(params)), None, length=4)
    assert hist.shape == (4, 3) and bool(jnp.all(jnp.diff(hist.sum(1)) < 0))
    assert int(state.skipped) == 0


def test_non_finite_losses_skip_and_flag():
    params, x, y = mlp_problem(jnp.float64)
    y = y.at[0, 1].set(jnp.nan)
    tx = jp.gramian_aggregate(jp.weighting.linear(jnp.ones(3)))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        losses, gv = jp.gramian_vjp(mlp_losses)(params, x, y)
        d, new = tx.update(gv, state, params, losses=losses)
        return gv.gram, d, new

    gram, d, new = step(params, state)
    assert not bool(jnp.all(jnp.isfinite(gram)))  # documented: the Gramian shows it
    assert all(bool(jnp.all(leaf == 0)) for leaf in jax.tree_util.tree_leaves(d))
    assert int(new.skipped) == 1
    np.testing.assert_array_equal(new.weights, state.weights)


# ----------------------------------------------------------------- bad inputs


def test_bad_inputs():
    params, x, y = mlp_problem(jnp.float64)
    with pytest.raises(ValueError, match="`fun` must return a 1-D vector"):
        jp.value_and_gramian(lambda p, x, y: jnp.sum(mlp_losses(p, x, y)))(params, x, y)
    with pytest.raises(ValueError, match="per_example=True"):
        jp.value_and_gramian(per_example_losses)(params, x, y)
    with pytest.raises(ValueError, match="scalar"):
        jp.value_and_gramian(lambda p, x, y: jnp.sum(mlp_losses(p, x, y)),
                             per_example=True)(params, x, y)
    with pytest.raises(ValueError, match="one array of task losses"):
        jp.value_and_gramian(lambda p, x, y: tuple(mlp_losses(p, x, y)))(params, x, y)
    with pytest.raises(TypeError, match=r"Argument 1 of `fun`.*int"):
        jp.value_and_gramian(lambda p, n: mlp_losses(p, x, y) * n, argnums=(0, 1))(
            params, jnp.arange(3))
    with pytest.raises(TypeError, match=r"Argument 0 of `fun`.*\['w'\].*int32"):
        jp.value_and_gramian(lambda p: jnp.stack([jnp.sum(p["w"] * 1.0)]))(
            {"w": jnp.ones(3, jnp.int32)})
    with pytest.raises(ValueError, match="`argnums`"):
        jp.value_and_gramian(mlp_losses, argnums=5)(params, x, y)
    with pytest.raises(ValueError, match="`order`"):
        jp.value_and_gramian(mlp_losses, order="fastest")
    _, gv = jp.gramian_vjp(mlp_losses)(params, x, y)
    with pytest.raises(ValueError, match="`weights` must have shape"):
        gv.vjp(jnp.ones(4))
    tx = jp.gramian_aggregate(jp.weighting.mgda(), num_tasks=3)
    with pytest.raises(TypeError, match="GramianVJP"):
        tx.update(jax.tree_util.tree_map(lambda p: jnp.stack([p] * 3), params), tx.init(params))
    with pytest.raises(ValueError, match="`num_tasks`"):
        jp.gramian_aggregate(jp.weighting.mgda()).init(params)
