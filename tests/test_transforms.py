"""The optax transforms: composition, jit, scan, run-time preference, bad steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linprog

import jaxpareto as jp


def _losses(params, x):
    """Three conflicting quadratic-ish tasks on a small two-layer model."""
    h = jnp.tanh(x @ params["w1"])
    out = h @ params["w2"]
    targets = jnp.array([1.0, -1.0, 0.5])
    return jnp.mean((out - targets[None, :]) ** 2, axis=0) + 0.01 * jnp.sum(params["w1"] ** 2)


def _setup(dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w1": jax.random.normal(k1, (4, 6), dtype) * 0.5,
              "w2": jax.random.normal(k2, (6, 3), dtype) * 0.5}
    x = jax.random.normal(k3, (16, 4), dtype)
    return params, x


def _flat(tree):
    return np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(tree)])


def _jac_matrix(jac):
    return np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in jax.tree_util.tree_leaves(jac)], 1)


ALL = {
    "mgda": lambda: jp.mgda(num_tasks=3),
    "epo": lambda: jp.epo(jnp.array([1.0, 2.0, 3.0])),
    "pmtl": lambda: jp.pmtl(jnp.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]]), index=1),
    "linear": lambda: jp.linear(jnp.array([1.0, 2.0, 3.0])),
    "chebyshev": lambda: jp.chebyshev(jnp.array([1.0, 2.0, 3.0])),
}


class TransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_update_is_combine_of_weighting_weights(self):
        params, x = _setup()
        losses, jac = jp.value_and_jacobian(_losses)(params, x)
        g = _jac_matrix(jac)
        for name, make in ALL.items():
            tx = make()
            state = tx.init(params)
            upd, state = self.variant(lambda j, s, l: tx.update(j, s, params, losses=l))(jac, state, losses)
            w = np.asarray(state.weights)
            np.testing.assert_allclose(_flat(upd), w @ g, rtol=1e-10, atol=1e-12, err_msg=name)
            assert np.all(np.isfinite(w)), name

    def test_mgda_update_is_min_norm_element(self):
        # Independent oracle: the min-norm point of the convex hull of the gradients,
        # by scipy over the simplex.
        from scipy.optimize import minimize

        params, x = _setup()
        losses, jac = jp.value_and_jacobian(_losses)(params, x)
        g = _jac_matrix(jac)
        tx = jp.mgda(num_tasks=3)
        upd, _ = jax.jit(tx.update)(jac, tx.init(params), params)
        res = minimize(lambda b: np.sum((b @ g) ** 2), np.full(3, 1 / 3), method="SLSQP",
                       bounds=[(0, 1)] * 3, constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1}],
                       options={"ftol": 1e-14, "maxiter": 500})
        np.testing.assert_allclose(np.sum(_flat(upd) ** 2), res.fun, rtol=1e-6, atol=1e-12)

    def test_epo_update_solves_the_lp_of_eq24(self):
        params, x = _setup()
        losses, jac = jp.value_and_jacobian(_losses)(params, x)
        g = _jac_matrix(jac)
        c = g @ g.T
        r = np.array([1.0, 2.0, 3.0])
        tx = jp.epo(jnp.asarray(r))
        upd, state = jax.jit(lambda j, s, l: tx.update(j, s, params, losses=l))(jac, tx.init(params), losses)
        # Oracle LP (HiGHS) built from the paper's eq. 24 in numpy.
        l = np.asarray(losses)
        rl = r * l
        lh = rl / rl.sum()
        mu = float(np.sum(lh * np.log(3 * lh)))
        a = r * (np.log(3 * lh) - mu)
        assert mu > 1e-4
        ca = c @ a
        jset = ca > 0
        jstar = rl == rl.max()
        rows, rhs = [], []
        for j in range(3):
            if jstar[j]:
                rows.append(c[:, j]); rhs.append(0.0)
            elif not jset.any():
                rows.append(c[:, j]); rhs.append(0.0)
            elif not jset[j]:
                rows.append(c[:, j]); rhs.append(ca[j])
        res = linprog(-ca, A_ub=-np.array(rows), b_ub=-np.array(rhs), A_eq=np.ones((1, 3)), b_eq=[1.0],
                      bounds=[(0, None)] * 3, method="highs")
        assert res.status == 0
        beta = np.asarray(state.weights)
        np.testing.assert_allclose(beta @ ca, -res.fun, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(_flat(upd), beta @ g, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.inner.non_uniformity, mu, rtol=1e-10)


@pytest.mark.parametrize("name", list(ALL))
def test_chain_with_optimizers_in_scan_decreases_losses(name):
    params, x = _setup()
    schedule = optax.exponential_decay(0.05, 10, 0.9)
    tx = optax.chain(ALL[name](), optax.clip_by_global_norm(10.0), optax.adam(schedule))
    opt_state = tx.init(params)

    def body(carry, _):
        p, s = carry
        losses, jac = jp.value_and_jacobian(_losses)(p, x)
        upd, s = tx.update(jac, s, p, losses=losses)
        return (optax.apply_updates(p, upd), s), losses

    (params_out, _), hist = jax.jit(lambda c: jax.lax.scan(body, c, None, length=60))((params, opt_state))
    hist = np.asarray(hist)
    assert np.all(np.isfinite(hist))
    assert hist[-1].sum() < hist[0].sum()
    assert np.all(np.isfinite(_flat(params_out)))


def test_sgd_chain_and_runtime_preference():
    params, x = _setup()
    tx = optax.chain(jp.epo(jnp.array([1.0, 1.0, 1.0])), optax.sgd(0.1))
    state = tx.init(params)
    losses, jac = jp.value_and_jacobian(_losses)(params, x)
    step = jax.jit(lambda j, s, l, r: tx.update(j, s, params, losses=l, preference=r))
    u1, s1 = step(jac, state, losses, jnp.array([1.0, 1.0, 1.0]))
    u2, s2 = step(jac, state, losses, jnp.array([0.2, 1.0, 5.0]))
    assert not np.allclose(_flat(u1), _flat(u2))
    direct = jp.epo_weights(jp.gramian(jac), losses, jnp.array([0.2, 1.0, 5.0])).weights
    np.testing.assert_allclose(s2[0].weights, direct, rtol=1e-10)
    # optax.sgd negates the direction and scales by the learning rate.
    np.testing.assert_allclose(_flat(u2), -0.1 * (np.asarray(direct) @ _jac_matrix(jac)), rtol=1e-10)


def test_scale_num_tasks_and_float32():
    params, x = _setup(jnp.float32)
    losses, jac = jp.value_and_jacobian(_losses)(params, x)
    tx = jp.epo(jnp.array([1.0, 2.0, 3.0], jnp.float32), scale="num_tasks")
    upd, state = jax.jit(lambda j, s, l: tx.update(j, s, params, losses=l))(jac, tx.init(params), losses)
    assert state.weights.dtype == jnp.float32
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(upd))
    np.testing.assert_allclose(np.sum(state.weights), 3.0, rtol=1e-5)


def test_nonfinite_step_gives_zero_update_and_keeps_state():
    params, x = _setup()
    losses, jac = jp.value_and_jacobian(_losses)(params, x)
    for name, make in ALL.items():
        tx = make()
        state = tx.init(params)
        _, state = tx.update(jac, state, params, losses=losses)
        bad_jac = jax.tree_util.tree_map(lambda l: l.at[0].set(jnp.nan), jac)
        upd, new_state = jax.jit(lambda j, s, l: tx.update(j, s, params, losses=l))(bad_jac, state, losses)
        assert np.all(_flat(upd) == 0), name
        assert int(new_state.skipped) == 1, name
        np.testing.assert_array_equal(new_state.weights, state.weights)
        upd, new_state = tx.update(jac, state, params, losses=losses.at[1].set(jnp.inf))
        assert np.all(_flat(upd) == 0), name


def test_bad_static_inputs_raise_naming_the_argument():
    params, x = _setup()
    losses, jac = jp.value_and_jacobian(_losses)(params, x)
    with pytest.raises(ValueError, match="num_tasks"):
        jp.mgda().init(params)
    with pytest.raises(ValueError, match="m=3"):
        jp.linear(jnp.ones(2)).update(jac, jp.linear(jnp.ones(2)).init(params), params)
    with pytest.raises(ValueError, match="`losses`"):
        tx = jp.mgda(num_tasks=3)
        tx.update(jac, tx.init(params), params, losses=jnp.ones(2))
    with pytest.raises(ValueError, match="scale"):
        jp.mgda(num_tasks=3, scale="twice")
    with pytest.raises(ValueError, match="losses"):
        tx = jp.epo(jnp.ones(3))
        tx.update(jac, tx.init(params), params)
    with pytest.raises(ValueError, match="preference"):
        jp.epo(jnp.array([1.0, -1.0, 1.0]))
