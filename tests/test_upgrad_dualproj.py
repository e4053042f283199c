"""UPGrad and DualProj (Quinton & Rey 2024): oracles and TorchJD's stated properties.

Oracles: exhaustive enumeration of the active sets of each QP ``min ½vᵀGv, v ≥ u``
(numpy least squares, exact for m ≤ 6) and quadprog (what TorchJD calls; skipped when not
installed), including TorchJD's regularised variant ``G / tr G + 1e-4 I``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadprog  # the oracle (dev extra)

from jaxpareto.weighting.dualproj import DualProjResult, dualproj, dualproj_weights
from jaxpareto.weighting.upgrad import UPGradResult, UPGradState, upgrad, upgrad_weights

jax.config.update("jax_enable_x64", True)

M, K = 5, 48

_UPGRAD = jax.jit(jax.vmap(lambda g, p: upgrad_weights(g, p)))
_DUALPROJ = jax.jit(jax.vmap(lambda g, p: dualproj_weights(g, p)))


def random_gram(rng, m, kind):
    if kind == "full":
        j = rng.standard_normal((m, m + 2))
    elif kind == "rank_deficient":
        j = rng.standard_normal((m, 2))
    elif kind == "conflicting":  # two nearly opposite tasks
        j = rng.standard_normal((m, m + 2))
        j[1] = -0.9 * j[0] + 0.1 * j[1]
    else:  # collinear: duplicated and scaled rows
        j = rng.standard_normal((m, m))
        j[1] = j[0]
        j[2] = 3 * j[0]
    return j @ j.T * 10.0 ** rng.uniform(-3, 3)


KINDS = ("full", "rank_deficient", "conflicting", "collinear")


def instances(seed, k=K):
    rng = np.random.default_rng(seed)
    grams = np.stack([random_gram(rng, M, KINDS[i % 4]) for i in range(k)])
    prefs = np.stack([np.full(M, 1 / M) if i % 3 else rng.uniform(0.1, 1, M)
                      for i in range(k)])
    # on the simplex: every preference is read as r / Σr (weighting.base.normalize_preference)
    return grams, prefs / prefs.sum(axis=1, keepdims=True)


def enumerate_projection(g, u):
    """``argmin_{v ≥ u} ½vᵀGv`` by enumerating which bounds are active: returns G v."""
    m = g.shape[0]
    scale = np.abs(np.diag(g)).max()
    for active in itertools.product((False, True), repeat=m):
        active = np.array(active)
        free = ~active
        v = np.where(active, u, 0.0)
        if free.any():
            a = g[np.ix_(free, free)]
            rhs = -g[np.ix_(free, active)] @ u[active]
            sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
            if np.abs(a @ sol - rhs).max() > 1e-9 * scale * (1 + np.abs(sol).max()):
                continue
            v[free] = sol
        lam = g @ v
        tol = 1e-9 * scale * (1 + np.abs(v).max())
        if np.all(v >= u - 1e-9) and np.all(lam[active] >= -tol):
            return lam
    raise AssertionError("no KKT point found")


# ---------------------------------------------------------------------------- oracles


def test_upgrad_and_dualproj_match_enumeration():
    grams, prefs = instances(1)
    up = _UPGRAD(grams, prefs)
    dp = _DUALPROJ(grams, prefs)
    assert isinstance(up, UPGradResult) and isinstance(dp, DualProjResult)
    assert bool(jnp.all(up.converged)) and bool(jnp.all(dp.converged))
    assert float(jnp.max(up.kkt_residual)) <= 1e-8
    assert float(jnp.max(dp.kkt_residual)) <= 1e-8
    for i in range(K):
        g, p = grams[i], prefs[i]
        scale = np.abs(g).max()
        # G w is unique even where w is not (singular G)
        ref_up = sum(enumerate_projection(g, p[r] * np.eye(M)[r]) for r in range(M))
        np.testing.assert_allclose(g @ np.asarray(up.weights[i]), ref_up, atol=1e-8 * scale)
        ref_dp = enumerate_projection(g, p)
        np.testing.assert_allclose(g @ np.asarray(dp.weights[i]), ref_dp, atol=1e-8 * scale)


@pytest.mark.parametrize("reg_eps", [pytest.param(0.0, marks=pytest.mark.slow), 1e-4])
def test_matches_quadprog_and_torchjd_regularisation(reg_eps):
    rng = np.random.default_rng(2)
    grams = [random_gram(rng, M, "full") for _ in range(4)]
    up = jax.jit(lambda g: upgrad_weights(g, reg_eps=reg_eps))
    dp = jax.jit(lambda g: dualproj_weights(g, reg_eps=reg_eps))
    for g in grams:
        q = g / np.trace(g) + reg_eps * np.eye(M) if reg_eps else g
        rows = [quadprog.solve_qp(q, np.zeros(M), np.eye(M), np.eye(M)[r] / M)[0]
                for r in range(M)]
        np.testing.assert_allclose(np.asarray(up(g).weights), np.sum(rows, axis=0),
                                   rtol=1e-8, atol=1e-10)
        ref = quadprog.solve_qp(q, np.zeros(M), np.eye(M), np.full(M, 1 / M))[0]
        np.testing.assert_allclose(np.asarray(dp(g).weights), ref, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------- properties


def _full_rank(grams):
    return np.array([np.linalg.eigvalsh(g)[0] > 1e-6 * np.abs(g).max() for g in grams])


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_properties_on_random_gramians(name):
    solve = _UPGRAD if name == "upgrad" else _DUALPROJ
    grams, prefs = instances(3)
    w = np.asarray(solve(grams, prefs).weights)
    scale = np.abs(grams).max(axis=(1, 2))
    # non-conflicting: the update J^T w has a non-negative inner product with every g_i
    gw = np.einsum("kij,kj->ki", grams, w)
    assert np.all(gw >= -1e-9 * scale[:, None])
    # w >= p (each projection is bounded below by its target)
    assert np.all(w >= prefs - 1e-12)
    full = _full_rank(grams)
    assert full.sum() >= K // 4

    # permutation invariance: tasks permuted -> weights permuted (G w for singular G)
    rng = np.random.default_rng(4)
    perms = np.stack([rng.permutation(M) for _ in range(K)])
    g_p = np.stack([grams[i][np.ix_(perms[i], perms[i])] for i in range(K)])
    p_p = np.stack([prefs[i][perms[i]] for i in range(K)])
    w_p = np.asarray(solve(g_p, p_p).weights)
    for i in range(K):
        np.testing.assert_allclose(g_p[i] @ w_p[i], gw[i][perms[i]], atol=1e-8 * scale[i])
        if full[i]:
            np.testing.assert_allclose(w_p[i], w[i][perms[i]], rtol=1e-6, atol=1e-9)

    # scale invariance in G and in p (p and 3p are one preference: p / Σp)
    factors = 10.0 ** rng.uniform(-4, 4, K)
    w_s = np.asarray(solve(grams * factors[:, None, None], prefs * 3.0).weights)
    for i in range(K):
        np.testing.assert_allclose(grams[i] @ w_s[i], gw[i], atol=1e-8 * scale[i])
        if full[i]:
            np.testing.assert_allclose(w_s[i], w[i], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_no_conflict_gives_the_preference(name):
    solve = _UPGRAD if name == "upgrad" else _DUALPROJ
    rng = np.random.default_rng(5)
    j = np.abs(rng.standard_normal((K, M, M + 1)))  # all inner products >= 0
    grams = j @ j.transpose(0, 2, 1)
    prefs = rng.uniform(0.1, 1, (K, M))
    expected = prefs / prefs.sum(axis=1, keepdims=True)  # the preference, on the simplex
    np.testing.assert_allclose(np.asarray(solve(grams, prefs).weights), expected, atol=1e-10)


@pytest.mark.slow
def test_opposite_gradients_two_tasks_closed_form():
    # m = 2, g2 = -a g1: the dual cone is the hyperplane orthogonal to g1, UPGrad and
    # DualProj updates are 0 when the projections cancel; check G w = 0 exactly.
    g1 = np.array([1.0, 2.0, -1.0])
    for a in (0.5, 1.0, 2.0):
        jac = np.stack([g1, -a * g1])
        g = jac @ jac.T
        for fn in (upgrad_weights, dualproj_weights):
            w = np.asarray(fn(g).weights)
            np.testing.assert_allclose(g @ w, 0, atol=1e-10)


# ------------------------------------------------------------- degenerate, errors


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_degenerate_gramians_give_the_preference_and_a_flag(name):
    solve = _UPGRAD if name == "upgrad" else _DUALPROJ
    grams, prefs = instances(6)
    grams[0] = 0.0
    grams[1, 0, 0] = np.nan
    grams[2] = np.inf
    res = solve(grams, prefs)
    assert bool(jnp.all(jnp.isfinite(res.weights)))
    np.testing.assert_allclose(np.asarray(res.weights[:3]), prefs[:3], atol=1e-12)
    assert np.asarray(res.degenerate[:3]).all() and not np.asarray(res.degenerate[3:]).any()
    assert bool(res.converged[0]) and not bool(res.converged[1]) and not bool(res.converged[2])


def test_float32_inputs():
    grams, _ = instances(7, k=2)
    for fn in (upgrad_weights,):  # same code path as dualproj_weights
        res = fn(jnp.asarray(grams[0], jnp.float32))
        ref = fn(grams[0])
        assert res.weights.dtype == jnp.float32
        g = grams[0]
        scale = np.abs(g).max()
        np.testing.assert_allclose(g @ np.asarray(res.weights, float), g @ np.asarray(ref.weights),
                                   atol=1e-4 * scale)


def test_bad_static_input_names_the_argument():
    for fn in (upgrad_weights, dualproj_weights):
        with pytest.raises(ValueError, match="`gram`"):
            fn(jnp.ones((3, 2)))
        with pytest.raises(TypeError, match="`gram`"):
            fn(jnp.eye(3, dtype=jnp.int32))
        with pytest.raises(ValueError, match="`preference`"):
            fn(jnp.eye(3), jnp.ones(2))
        with pytest.raises(ValueError, match="`preference`"):
            fn(jnp.eye(3), jnp.array([1.0, -1.0, 1.0]))
        with pytest.raises(ValueError, match="`reg_eps`"):
            fn(jnp.eye(3), reg_eps=-1.0)
    with pytest.raises(ValueError, match="`reg_eps`"):
        upgrad(reg_eps=-1.0)
    with pytest.raises(ValueError, match="`num_tasks`"):
        dualproj().init(0)
    with pytest.raises(ValueError, match="`num_tasks`"):
        upgrad(jnp.ones(3)).init(4)


# --------------------------------------------------------------------- weightings


@pytest.mark.parametrize("factory, solver", [(upgrad, upgrad_weights),
                                             (dualproj, dualproj_weights)])
def test_weighting_update_matches_solver_under_jit(factory, solver):
    grams, prefs = instances(8, k=2)
    w = factory()
    state = w.init(M, dtype=jnp.float64)
    assert isinstance(state, UPGradState)
    update = jax.jit(lambda g, s, p: w.update(g, s, preference=p))
    weights, new_state = update(grams[0], state, prefs[0])
    np.testing.assert_allclose(np.asarray(weights), np.asarray(solver(grams[0], prefs[0]).weights),
                               atol=1e-12)
    assert bool(new_state.converged) and weights.dtype == jnp.float64
    with pytest.raises(ValueError, match="`gram`"):
        w.update(jnp.eye(M + 1), state)
    # float32 state: weights follow the state's dtype
    s32 = w.init(M)
    w32, _ = w.update(grams[0], s32)
    assert w32.dtype == jnp.float32
