"""Pareto MTL weights (Lin et al. 2019) against an explicit min-norm oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from jaxpareto.weighting.pmtl import INIT, MAIN, pmtl, pmtl_weights


def _min_norm_oracle(vectors):
    """min_{β∈Δ} ‖βᵀV‖² by SLSQP on the explicit vectors (independent of jaxpareto)."""
    k = vectors.shape[0]
    q = vectors @ vectors.T
    best = None
    for start in [np.full(k, 1 / k)] + [np.eye(k)[i] for i in range(k)]:
        res = minimize(lambda b: b @ q @ b, start, jac=lambda b: 2 * q @ b, method="SLSQP",
                       bounds=[(0, 1)] * k,
                       constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1, "jac": lambda b: np.ones(k)}],
                       options={"ftol": 1e-15, "maxiter": 1000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x @ vectors


def _prefs(k):
    phi = np.linspace(0, np.pi / 2, k)
    return np.stack([np.cos(phi), np.sin(phi)], 1)


@pytest.mark.parametrize("seed", range(12))
def test_main_step_direction_matches_explicit_min_norm(seed):
    rng = np.random.default_rng(seed)
    m, n, k = 2, 6, 5
    g = rng.normal(size=(m, n))
    losses = rng.uniform(0.2, 2.0, size=m)
    u = _prefs(k)
    index = int(rng.integers(k))
    res = pmtl_weights(jnp.asarray(g @ g.T), jnp.asarray(losses), jnp.asarray(u), index, phase=MAIN)
    # Oracle: the vector set {∇l_i} ∪ {∇G_j : G_j >= 0} written out explicitly.
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    w = un - un[index]
    active = [j for j in range(k) if j != index and w[j] @ losses >= 0]
    vectors = np.concatenate([g, w[active] @ g]) if active else g
    d_star = _min_norm_oracle(vectors)
    d = np.asarray(res.weights) @ g
    np.testing.assert_array_equal(np.asarray(res.active)[active], True)
    assert np.sum(np.asarray(res.active)) == len(active)
    if np.linalg.norm(d_star) < 1e-6:
        assert np.linalg.norm(d) < 1e-5
    else:
        cos = d @ d_star / (np.linalg.norm(d) * np.linalg.norm(d_star))
        assert cos > 1 - 1e-7
    np.testing.assert_allclose(np.sum(np.abs(res.weights)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_init_step_reduces_active_constraints(seed):
    rng = np.random.default_rng(100 + seed)
    m, n, k = 3, 8, 4
    g = rng.normal(size=(m, n))
    u = np.abs(rng.normal(size=(k, m))) + 0.1
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    index = 0
    losses = un[1] * 2.0  # in another sub-region: infeasible for index 0
    w = un - un[index]
    active = [j for j in range(k) if j != index and w[j] @ losses >= 0]
    assert active
    res = pmtl_weights(jnp.asarray(g @ g.T), jnp.asarray(losses), jnp.asarray(u), index, phase=INIT)
    d = np.asarray(res.weights) @ g
    d_star = _min_norm_oracle(w[active] @ g)
    cos = d @ d_star / (np.linalg.norm(d) * np.linalg.norm(d_star))
    assert cos > 1 - 1e-7
    assert not bool(res.feasible)
    # −d descends every active constraint: ⟨∇G_j, d⟩ >= ‖d*‖² > 0 (scaled).
    for j in active:
        assert (w[j] @ g) @ d > 0


def test_weighting_phases_jit_vmap_and_errors():
    u = jnp.asarray(_prefs(5))
    wt = pmtl(u, index=2, init_steps=3)
    state = wt.init(2, jnp.float64)
    assert int(state.phase) == INIT
    g = jnp.array([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3]])
    gram = g @ g.T
    upd = jax.jit(wt.update)
    # Infeasible losses: the budget of three initialisation steps, then the main phase.
    bad = jnp.array([0.1, 2.0])
    for _ in range(3):
        _, state = upd(gram, state, losses=bad)
        assert int(state.phase) == INIT
    _, state = upd(gram, state, losses=bad)
    assert int(state.phase) == MAIN
    # A feasible point leaves the initialisation at once.
    state = wt.init(2, jnp.float64)
    on_ray = u[2] / jnp.linalg.norm(u[2])
    _, state = upd(gram, state, losses=on_ray)
    assert int(state.phase) == MAIN and bool(state.feasible)
    # A traced sub-region index: one program for every sub-region.
    ws = jax.vmap(lambda k: pmtl_weights(gram, jnp.array([0.5, 0.5]), u, k).weights)(jnp.arange(5))
    for k in range(5):
        np.testing.assert_allclose(ws[k], pmtl_weights(gram, jnp.array([0.5, 0.5]), u, k).weights,
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="index"):
        pmtl(u, index=5)
    with pytest.raises(ValueError, match="preferences"):
        pmtl(jnp.ones(3), index=0)
    with pytest.raises(ValueError, match="preferences"):
        pmtl(jnp.array([[1.0, -1.0], [1.0, 1.0]]), index=0)
    with pytest.raises(ValueError, match="losses"):
        wt.update(gram, wt.init(2))
    with pytest.raises(ValueError, match="num_tasks"):
        wt.init(3)


def test_degenerate_inputs_stay_finite():
    u = jnp.asarray(_prefs(3))
    for gram in (jnp.zeros((2, 2)), jnp.ones((2, 2)), jnp.array([[1.0, -1.0], [-1.0, 1.0]])):
        for losses in (jnp.zeros(2), jnp.array([1.0, 1.0]), jnp.array([0.0, 3.0])):
            res = pmtl_weights(gram, losses, u, 1)
            assert np.all(np.isfinite(res.weights))
            np.testing.assert_allclose(np.sum(np.abs(res.weights)), 1.0, rtol=1e-12)


def test_eager_pmtl_calls_reuse_one_program():
    """``pmtl_weights`` is jitted inside: eager calls with new values of the same shapes
    and options (and any sub-region or phase, which are traced) do not trace again; a new
    shape traces once more. Same answers as under a user's jit."""
    import importlib

    pmtl_mod = importlib.import_module("jaxpareto.weighting.pmtl")
    rng = np.random.default_rng(3)
    u = jnp.asarray(np.abs(rng.normal(size=(4, 3))) + 0.1)
    before = pmtl_mod._pmtl._cache_size()
    for i in range(4):
        g = rng.normal(size=(3, 5))
        gram, losses = jnp.asarray(g @ g.T), jnp.asarray(rng.uniform(0.5, 2, 3))
        res = pmtl_weights(gram, losses, u, i % 4, phase=[INIT, MAIN][i % 2])
        jitted = jax.jit(pmtl_weights, static_argnums=3)(gram, losses, u, i % 4,
                                                          phase=[INIT, MAIN][i % 2])
        np.testing.assert_allclose(res.weights, jitted.weights, rtol=1e-12, atol=1e-15)
        assert int(res.status) == int(jitted.status)
    assert pmtl_mod._pmtl._cache_size() <= before + 1
    grown = pmtl_mod._pmtl._cache_size()
    pmtl_weights(jnp.eye(7), jnp.ones(7), jnp.ones((5, 7)), 0)  # a shape no test uses
    assert pmtl_mod._pmtl._cache_size() == grown + 1


def test_nonfinite_input_gives_uniform_weights_and_the_status():
    from jaxpareto.status import Status

    u = jnp.asarray(_prefs(3))
    g = jnp.array([[1.0, 0.2], [0.2, 1.0]])
    for gram, losses in ((g.at[0, 1].set(jnp.nan), jnp.ones(2)), (g, jnp.array([jnp.inf, 1.0]))):
        res = pmtl_weights(gram, losses, u, 1)
        np.testing.assert_allclose(res.weights, [0.5, 0.5])
        assert int(res.status) == Status.NONFINITE_INPUT and not bool(res.converged)
        assert bool(res.degenerate) and not bool(res.feasible)
    res = pmtl_weights(jnp.zeros((2, 2)), jnp.ones(2), u, 1)
    assert int(res.status) == Status.DEGENERATE and not bool(res.converged)
    res = pmtl_weights(g, jnp.ones(2), u, 1)
    assert int(res.status) == Status.SUCCESSFUL and bool(res.converged)
    assert res._fields[:4] == ("weights", "status", "converged", "iterations")
