"""PCGrad, CAGrad, Nash-MTL, IMTL-G, Aligned-MTL, smooth Tchebycheff and HV-gradient
weights against independent oracles.

Every Gramian-based method is checked on explicit random gradient *vectors* (numpy):
the update ``Gᵀw`` from the Gramian-only JAX weights must equal a direct numpy
implementation written from the paper (PCGrad's projection loop, IMTL-G's closed form,
Aligned-MTL via an SVD of the gradient matrix), or satisfy the optimality conditions
checked by scipy (CAGrad's primal problem solved by SLSQP, Nash-MTL's bargaining
equations solved by ``scipy.optimize.root``). HV gradients are checked against finite
differences of an independent numpy hypervolume and against the 2-D closed form.
Instances are batched through one jitted ``vmap`` per shape so compilation is shared.
"""

from __future__ import annotations

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize, root

import jaxpareto as jp

from jaxpareto.weighting.aligned_mtl import aligned_mtl, aligned_mtl_weights
from jaxpareto.weighting.cagrad import cagrad, cagrad_weights
from jaxpareto.weighting.hv_gradient import front_ranks, hv_gradient, hv_gradient_weights
from jaxpareto.weighting.imtl import imtl_g, imtl_g_weights
from jaxpareto.weighting.nash_mtl import nash_mtl, nash_mtl_weights
from jaxpareto.weighting.pcgrad import pcgrad, pcgrad_weights
from jaxpareto.weighting.scalarization import smooth_chebyshev, smooth_chebyshev_weights


def jacobians(seed: int, num: int, m: int, n: int, *, full_rank: bool = False) -> np.ndarray:
    """``[num, m, n]`` random task gradients: varied row norms, some rank-deficient
    (rows drawn from a random subspace), conflicts made likely by a shared negative
    component."""
    rng = np.random.default_rng(seed)
    out = np.empty((num, m, n))
    for k in range(num):
        r = min(m, n) if full_rank else int(rng.integers(1, min(m, n) + 1))
        basis = rng.standard_normal((r, n))
        g = rng.standard_normal((m, r)) @ basis
        g[0] -= rng.uniform(0, 2) * g[1]  # a conflicting pair
        g *= np.exp(rng.uniform(-2, 2, size=(m, 1)))
        out[k] = g
    return out


def gram_of(j: np.ndarray) -> np.ndarray:
    return np.einsum("...in,...jn->...ij", j, j)


# ----------------------------------------------------------------------------- PCGrad


def pcgrad_numpy(g: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Algorithm 1 of Yu et al. (2020) on explicit vectors, given each task's order."""
    m = g.shape[0]
    total = np.zeros(g.shape[1])
    for i in range(m):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i:
                continue
            dot = gi @ g[j]
            if dot < 0:
                gi -= dot / (g[j] @ g[j]) * g[j]
        total += gi
    return total


@pytest.mark.parametrize("m,n", [(2, 4), (4, 3), (4, 8)])
def test_pcgrad_matches_vector_algorithm(m, n):
    j = jacobians(10 + m + n, 30, m, n)
    keys = jax.random.split(jax.random.PRNGKey(m), len(j))
    res = jax.vmap(pcgrad_weights)(jnp.asarray(gram_of(j)), keys)
    worst = 0.0
    for k in range(len(j)):
        orders = np.asarray(res.orders[k])
        assert all(sorted(row) == list(range(m)) for row in orders)
        expected = pcgrad_numpy(j[k], orders)
        got = j[k].T @ np.asarray(res.weights[k])
        scale = np.abs(j[k]).max() * m
        worst = max(worst, np.max(np.abs(got - expected)) / scale)
    assert worst < 1e-12, worst
    assert int(jnp.sum(res.projections)) > 0  # conflicts were present


def test_pcgrad_explicit_orders_reduction_and_determinism():
    j = jacobians(3, 1, 4, 5, full_rank=True)[0]
    gram = jnp.asarray(gram_of(j))
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(4) for _ in range(4)])
    res = pcgrad_weights(gram, orders=orders)
    np.testing.assert_allclose(j.T @ np.asarray(res.weights), pcgrad_numpy(j, orders), atol=1e-12)
    mean = pcgrad_weights(gram, orders=orders, reduction="mean")
    np.testing.assert_allclose(mean.weights, res.weights / 4, rtol=1e-14)
    # Identity order without key or orders.
    ident = pcgrad_weights(gram)
    np.testing.assert_allclose(
        j.T @ np.asarray(ident.weights), pcgrad_numpy(j, np.tile(np.arange(4), (4, 1))), atol=1e-12
    )
    # The weighting is reproducible from its seed and advances its key.
    w = pcgrad(seed=7)
    s0 = w.init(4, jnp.float64)
    a1, s1 = w.update(gram, s0)
    b1, t1 = w.update(gram, w.init(4, jnp.float64))
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(np.asarray(s1.key), np.asarray(s0.key))
    sub = jax.random.split(s0.key)[1]
    np.testing.assert_allclose(a1, pcgrad_weights(gram, sub).weights, rtol=1e-14)
    with pytest.raises(ValueError, match="orders"):
        pcgrad_weights(gram, orders=np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="reduction"):
        pcgrad(reduction="max")


def test_pcgrad_two_tasks_removes_the_conflict():
    # For m = 2 PCGrad's update has a non-negative inner product with both gradients.
    j = jacobians(5, 30, 2, 3)
    res = jax.vmap(pcgrad_weights)(jnp.asarray(gram_of(j)))
    ip = np.einsum("kin,kn->ki", j, np.einsum("kin,ki->kn", j, np.asarray(res.weights)))
    assert np.all(ip >= -1e-10 * np.abs(j).max() ** 2)


# ----------------------------------------------------------------------------- CAGrad


def cagrad_primal_value(g: np.ndarray, c: float) -> float:
    """``max_{‖d−g0‖≤c‖g0‖} min_i ⟨g_i, d⟩`` by SLSQP on (d, t), an independent oracle."""
    g0 = g.mean(0)
    rho = c * np.linalg.norm(g0)
    x0 = np.concatenate([g0, [np.min(g @ g0)]])
    cons = [
        {"type": "ineq", "fun": lambda x: g @ x[:-1] - x[-1], "jac": lambda x: np.hstack([g, -np.ones((len(g), 1))])},
        {"type": "ineq", "fun": lambda x: rho**2 - np.sum((x[:-1] - g0) ** 2),
         "jac": lambda x: np.concatenate([-2 * (x[:-1] - g0), [0.0]])},
    ]
    obj_jac = np.zeros(len(x0))
    obj_jac[-1] = -1
    res = minimize(lambda x: -x[-1], x0, jac=lambda x: obj_jac, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 2000})
    return -res.fun


@pytest.mark.parametrize("c", [0.4, 1.0, 2.0])
def test_cagrad_solves_the_primal_problem(c):
    # The update must lie on the ball ‖d − g0‖ = c‖g0‖ and attain scipy's optimum of
    # min_i ⟨g_i, d⟩ (it cannot exceed it: scipy's value is an upper bound up to its
    # tolerance). Strong duality: F(w*) equals that value.
    m, n = 4, 6
    j = jacobians(20, 16, m, n)
    # Eager vmap: the solver's own jit is reused across c (c is data, not static).
    res = jax.vmap(lambda g: cagrad_weights(g, c))(jnp.asarray(gram_of(j)))
    gap = ball = dual = 0.0
    for k in range(len(j)):
        g = j[k]
        g0 = g.mean(0)
        d = g.T @ np.asarray(res.weights[k])
        scale = np.max(np.sum(g * g, 1))
        best = cagrad_primal_value(g, c)
        gap = max(gap, abs(best - np.min(g @ d)) / scale)
        if not bool(res.stationary[k]):  # a stationary point returns d = 0 (TorchJD)
            ball = max(ball, abs(np.linalg.norm(d - g0) - c * np.linalg.norm(g0)) / np.sqrt(scale))
        dual = max(dual, abs(float(res.objective[k]) - np.min(g @ d)) / scale)
        if c >= 1:
            assert np.min(g @ d) >= -1e-10 * scale
    # (Rank-one instances with 0 in the hull are Pareto stationary: zero update, which
    # the value check above confirms is optimal there.)
    assert gap < 1e-7, gap
    assert ball < 1e-12, ball
    assert dual < 1e-12, dual


def test_cagrad_dual_matches_the_authors_scipy_subproblem():
    # The authors solve eq. 5 with scipy SLSQP on the simplex; their w must give our
    # objective value (the minimiser of F may be non-unique, the value is not).
    m, n = 4, 5
    j = jacobians(21, 8, m, n, full_rank=True)
    c = 0.5
    res = jax.vmap(lambda g: cagrad_weights(g, c))(jnp.asarray(gram_of(j)))
    for k in range(len(j)):
        a = gram_of(j[k])
        b = a.mean(1)
        rho = c * np.sqrt(a.mean())
        fun = lambda x: x @ b + rho * np.sqrt(max(x @ a @ x, 0.0))
        cons = ({"type": "eq", "fun": lambda x: 1 - x.sum()},)
        ref = minimize(fun, np.full(m, 1 / m), bounds=[(0, 1)] * m, constraints=cons,
                       method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
        ours = fun(np.asarray(res.dual_weights[k]))
        assert ours <= ref.fun + 1e-9 * np.abs(a).max()
        np.testing.assert_allclose(ours, float(res.objective[k]), rtol=1e-10, atol=1e-12)


def test_cagrad_conventions_and_special_cases():
    g = np.array([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3], [0.1, -0.4, 1.0]])
    gram = jnp.asarray(gram_of(g))
    base = cagrad_weights(gram, 0.5)
    np.testing.assert_allclose(cagrad_weights(gram, 0.5, rescale=1).weights, base.weights / 1.25, rtol=1e-13)
    np.testing.assert_allclose(cagrad_weights(gram, 0.5, rescale=2).weights, base.weights / 1.5, rtol=1e-13)
    np.testing.assert_allclose(cagrad_weights(gram, 0.0).weights, np.full(3, 1 / 3), rtol=1e-14)
    # 0 in the hull and F ≥ 0 there: Pareto-stationary, zero update (TorchJD's rule).
    st = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1e-3]])
    res = cagrad_weights(jnp.asarray(gram_of(st)), 0.5)
    assert bool(res.stationary)
    np.testing.assert_array_equal(res.weights, np.zeros(3))
    # Opposite gradients: g0 = 0, so the ball is a point and d = g0 = 0.
    opp = np.array([[1.0, 2.0], [-1.0, -2.0]])
    res = cagrad_weights(jnp.asarray(gram_of(opp)), 0.5)
    np.testing.assert_allclose(opp.T @ np.asarray(res.weights), 0, atol=1e-15)
    w = cagrad(1.0)
    out, state = w.update(gram, w.init(3, jnp.float64))
    np.testing.assert_allclose(out, cagrad_weights(gram, 1.0).weights, rtol=1e-14)
    for name, bad in (("c", {"c": -1.0}), ("rescale", {"rescale": 3}), ("norm_eps", {"norm_eps": -1.0})):
        with pytest.raises(ValueError, match=name):
            cagrad(**bad)


# ----------------------------------------------------------------------------- Nash-MTL


@pytest.mark.parametrize("m,n", [(2, 3), (4, 9)])
def test_nash_mtl_solves_the_bargaining_equations(m, n):
    # Full-rank gradients: C α = 1/α has a unique positive solution; scipy's root
    # finder on F(α) = Cα − 1/α (from the explicit vectors) is the oracle.
    j = jacobians(30 + m, 25, m, n, full_rank=True)
    res = jax.vmap(nash_mtl_weights)(jnp.asarray(gram_of(j)))
    assert bool(jnp.all(res.converged)), res.residual
    worst = 0.0
    for k in range(len(j)):
        g = j[k]
        a = gram_of(g)
        alpha = np.asarray(res.weights[k])
        x0 = np.full(m, np.sqrt(m / a.sum()))
        sol = root(lambda x: a @ x - 1 / np.abs(x), x0, jac=lambda x: a + np.diag(1 / x**2), method="hybr", tol=1e-14)
        if sol.success and np.all(sol.x > 0):
            worst = max(worst, np.max(np.abs(alpha - sol.x) / sol.x))
        d = g.T @ alpha
        np.testing.assert_allclose(g @ d, 1 / alpha, rtol=1e-9)  # ⟨g_i, d⟩ = 1/α_i
        np.testing.assert_allclose(d @ d, m, rtol=1e-9)
    assert worst < 1e-8, worst
    assert int(jnp.max(res.iterations)) <= 20


def test_nash_mtl_options_warm_start_and_degenerate():
    g = jacobians(31, 1, 3, 4, full_rank=True)[0]
    gram = jnp.asarray(gram_of(g))
    exact = nash_mtl_weights(gram)
    clipped = nash_mtl_weights(gram, max_norm=1.0)
    d = g.T @ np.asarray(clipped.weights)
    assert bool(clipped.clipped)
    np.testing.assert_allclose(np.linalg.norm(d), 1.0, rtol=1e-12)
    np.testing.assert_allclose(clipped.weights, exact.weights / np.sqrt(3), rtol=1e-10)
    # A warm start at the solution converges at once.
    warm = nash_mtl_weights(gram, init=exact.weights)
    assert int(warm.iterations) <= 1 and int(exact.iterations) > 1
    w = nash_mtl()
    state = w.init(3, jnp.float64)
    out1, state = w.update(gram, state)
    out2, state = w.update(gram * 1.01, state)
    np.testing.assert_allclose(out2, exact.weights / np.sqrt(1.01), rtol=1e-9)
    assert int(state.iterations) < int(exact.iterations)
    # Opposite gradients: no positive solution (Pareto stationary), finite, flagged.
    opp = np.array([[1.0, 0.5], [-2.0, -1.0], [0.3, 0.1]])
    res = nash_mtl_weights(jnp.asarray(gram_of(opp)))
    assert not bool(res.converged) and bool(jnp.all(jnp.isfinite(res.weights)))
    for bad in ({"max_iter": 0}, {"max_norm": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            nash_mtl(**bad)


# ----------------------------------------------------------------------------- IMTL-G


def imtl_g_paper(g: np.ndarray) -> np.ndarray:
    """Closed form of Liu et al. (2021), Sec. 3.2, on explicit vectors (full rank)."""
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0] - g[1:]
    ud = u[0] - u[1:]
    a = g[0] @ ud.T @ np.linalg.inv(d @ ud.T)
    return np.concatenate([[1 - a.sum()], a])


@pytest.mark.parametrize("m,n", [(2, 3), (4, 4), (4, 9)])
def test_imtl_g_matches_closed_form(m, n):
    j = jacobians(40 + m + n, 30, m, n, full_rank=True)
    res = jax.vmap(imtl_g_weights)(jnp.asarray(gram_of(j)))
    for k in range(len(j)):
        g = j[k]
        alpha = np.asarray(res.weights[k])
        np.testing.assert_allclose(g.T @ alpha, g.T @ imtl_g_paper(g), rtol=1e-7,
                                   atol=1e-9 * np.abs(g).max())
        d = g.T @ alpha
        proj = (g @ d) / np.linalg.norm(g, axis=1)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-6)  # impartial: equal projections
        np.testing.assert_allclose(float(res.projection[k]), proj[0], rtol=1e-6)


def test_imtl_g_rank_deficient_and_degenerate():
    # Dependent gradients: the Gramian form with numpy's pinv (Quinton & Rey 2024).
    j = jacobians(44, 20, 4, 3)
    res = jax.vmap(imtl_g_weights)(jnp.asarray(gram_of(j)))
    for k in range(len(j)):
        a = gram_of(j[k])
        v = np.linalg.pinv(a, rcond=5 * np.finfo(float).eps, hermitian=True) @ np.sqrt(np.diag(a))
        np.testing.assert_allclose(j[k].T @ np.asarray(res.weights[k]), j[k].T @ (v / v.sum()),
                                   rtol=1e-6, atol=1e-8 * np.abs(j[k]).max())
    zero = imtl_g_weights(jnp.zeros((3, 3)))
    assert bool(zero.degenerate)
    np.testing.assert_array_equal(zero.weights, np.zeros(3))
    w = imtl_g()
    out, _ = w.update(jnp.asarray(gram_of(j[0])), w.init(4, jnp.float64))
    np.testing.assert_allclose(out, res.weights[0], rtol=1e-14)


# ----------------------------------------------------------------------------- Aligned-MTL


def aligned_numpy(g: np.ndarray, w: np.ndarray, mode: str) -> np.ndarray:
    """Update ``Ĝ w`` with ``Ĝ = √λ_s U Vᵀ`` from the SVD of the gradient matrix."""
    u, s, vt = np.linalg.svd(g.T, full_matrices=False)  # gradients as columns
    keep = s**2 > len(w) * np.finfo(float).eps * s[0] ** 2
    u, s, vt = u[:, keep], s[keep], vt[keep]
    lam = np.sort(s**2)
    scale = {"min": lam[0], "median": lam[(len(lam) - 1) // 2], "rmse": lam.mean()}[mode]
    return np.sqrt(scale) * u @ vt @ w


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_aligned_mtl_matches_svd(mode):
    for m, n, full in ((4, 6, True), (4, 3, False), (4, 8, False)):
        j = jacobians(50 + m, 15, m, n, full_rank=full)
        rng = np.random.default_rng(m)
        pref = rng.uniform(0.2, 2.0, size=(len(j), m))
        res = jax.vmap(functools.partial(aligned_mtl_weights, scale_mode=mode))(
            jnp.asarray(gram_of(j)), jnp.asarray(pref)
        )
        for k in range(len(j)):
            expected = aligned_numpy(j[k], pref[k] / pref[k].sum(), mode)
            np.testing.assert_allclose(j[k].T @ np.asarray(res.weights[k]), expected,
                                       rtol=1e-7, atol=1e-9 * np.abs(j[k]).max())


def test_aligned_mtl_aligned_gradients_are_orthonormal_scaled():
    # Ĝ = G B has orthogonal columns of equal norm σ_min on the span (cond(Ĝ) = 1).
    g = jacobians(55, 1, 4, 7, full_rank=True)[0]
    gram = jnp.asarray(gram_of(g))
    cols = np.stack([g.T @ np.asarray(aligned_mtl_weights(gram, jnp.eye(4)[i] + 1e-300).weights)
                     for i in range(4)], axis=1)
    # (preference e_i normalised is e_i; 1e-300 keeps it strictly positive)
    smin2 = np.linalg.svd(g, compute_uv=False).min() ** 2
    np.testing.assert_allclose(cols.T @ cols, smin2 * np.eye(4), atol=1e-10 * smin2)
    zero = aligned_mtl_weights(jnp.zeros((3, 3)))
    assert bool(zero.degenerate)
    np.testing.assert_allclose(zero.weights, np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="scale_mode"):
        aligned_mtl(scale_mode="max")
    w = aligned_mtl(jnp.array([1.0, 2.0, 3.0, 4.0]))
    out, _ = w.update(gram, w.init(4, jnp.float64))
    np.testing.assert_allclose(out, aligned_mtl_weights(gram, jnp.array([1.0, 2.0, 3.0, 4.0])).weights)


# ----------------------------------------------------------------------------- smooth Tchebycheff


def test_smooth_chebyshev_is_the_gradient_of_the_smooth_scalarization():
    rng = np.random.default_rng(60)
    m = 4
    for _ in range(10):
        l, r, z = rng.uniform(0.1, 2, m), rng.uniform(0.2, 2, m), rng.uniform(-0.5, 0, m)
        mu = float(rng.uniform(0.05, 1.0))
        stch = lambda x: mu * np.log(np.sum(np.exp(r * (x - z) / mu)))
        h = 1e-6
        fd = np.array([(stch(l + h * e) - stch(l - h * e)) / (2 * h) for e in np.eye(m)])
        w = np.asarray(smooth_chebyshev_weights(jnp.asarray(l), jnp.asarray(r), jnp.asarray(z), smoothing=mu))
        np.testing.assert_allclose(w, fd / fd.sum(), rtol=1e-6, atol=1e-9)
    # μ → 0: the hard Tchebycheff weight.
    w = smooth_chebyshev_weights(jnp.array([1.0, 2.0, 1.5]), smoothing=1e-3)
    np.testing.assert_allclose(w, [0, 1, 0], atol=1e-12)
    wt = smooth_chebyshev(jnp.array([1.0, 1.0, 1.0]), smoothing=0.5)
    out, _ = wt.update(jnp.eye(3), wt.init(3, jnp.float64), losses=jnp.array([1.0, 2.0, 1.5]))
    np.testing.assert_allclose(out, smooth_chebyshev_weights(jnp.array([1.0, 2.0, 1.5]), smoothing=0.5))
    with pytest.raises(ValueError, match="smoothing"):
        smooth_chebyshev(smoothing=0.0)


# ----------------------------------------------------------------------------- HV gradient


def hv_numpy(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume by inclusion–exclusion over subsets (independent oracle, small sets)."""
    pts = [p for p in points if np.all(p < ref)]
    total = 0.0
    for r in range(1, len(pts) + 1):
        for sub in itertools.combinations(pts, r):
            corner = np.max(np.stack(sub), axis=0)
            total += (-1) ** (r + 1) * np.prod(np.maximum(ref - corner, 0))
    return total


def hv_fd(points, ref, h=1e-6):
    grad = np.zeros_like(points)
    for k, i in itertools.product(range(points.shape[0]), range(points.shape[1])):
        e = np.zeros_like(points)
        e[k, i] = h
        grad[k, i] = (hv_numpy(points + e, ref) - hv_numpy(points - e, ref)) / (2 * h)
    return grad


def test_hv_gradient_two_objectives_closed_form():
    rng = np.random.default_rng(70)
    for _ in range(10):
        x = np.sort(rng.uniform(0, 1, 6))
        y = np.sort(rng.uniform(0, 1, 6))[::-1]
        pts = np.stack([x, y], 1)[rng.permutation(6)]
        ref = np.array([1.2, 1.3])
        res = hv_gradient_weights(jnp.asarray(pts), jnp.asarray(ref), normalization="none")
        order = np.argsort(pts[:, 0])
        xs, ys = pts[order, 0], pts[order, 1]
        d1 = np.concatenate([[ref[1]], ys[:-1]]) - ys  # l_{k-1,2} − l_{k,2}
        d2 = np.concatenate([xs[1:], [ref[0]]]) - xs   # l_{k+1,1} − l_{k,1}
        expected = np.zeros_like(pts)
        expected[order] = np.stack([d1, d2], 1)
        np.testing.assert_allclose(res.weights, expected, rtol=1e-12, atol=1e-15)
        l1 = hv_gradient_weights(jnp.asarray(pts), jnp.asarray(ref))
        np.testing.assert_allclose(l1.weights, expected / expected.sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("m", [3, 4])
def test_hv_gradient_matches_finite_differences(m):
    rng = np.random.default_rng(71 + m)
    for _ in range(4):
        pts = rng.uniform(0, 1, (5, m))
        ref = np.full(m, 1.1)
        res = hv_gradient_weights(jnp.asarray(pts), jnp.asarray(ref), normalization="none")
        fd = hv_fd(pts, ref)
        np.testing.assert_allclose(res.gradient, fd, atol=1e-8)
        np.testing.assert_allclose(res.hypervolume, hv_numpy(pts, ref), rtol=1e-12)
        dominated = np.array([any(np.all(q <= p) and np.any(q < p) for q in pts) for p in pts])
        np.testing.assert_array_equal(np.asarray(res.active), ~dominated)
        np.testing.assert_array_equal(np.asarray(res.weights)[dominated], 0)


def test_hv_gradient_layered_fronts_and_normalization():
    rng = np.random.default_rng(80)
    pts = rng.uniform(0, 1, (6, 3))
    ref = np.full(3, 1.2)
    res = hv_gradient_weights(jnp.asarray(pts), jnp.asarray(ref), normalization="l2", layered=True)
    # Oracle: numpy non-dominated sorting, then FD of each front's own hypervolume.
    ranks = -np.ones(6, int)
    level = 0
    while np.any(ranks < 0):
        rest = np.where(ranks < 0)[0]
        front = [i for i in rest
                 if not any(np.all(pts[j] <= pts[i]) and np.any(pts[j] < pts[i]) for j in rest)]
        ranks[front] = level
        level += 1
    np.testing.assert_array_equal(np.asarray(res.ranks), ranks)
    np.testing.assert_array_equal(np.asarray(front_ranks(jnp.asarray(pts))), ranks)
    expected = np.zeros_like(pts)
    for f in range(level):
        idx = np.where(ranks == f)[0]
        expected[idx] = hv_fd(pts[idx], ref)
    np.testing.assert_allclose(res.gradient, expected, atol=1e-8)
    w = -expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(res.weights, w, atol=1e-7)
    assert bool(jnp.all(res.active))
    # Non-finite rows are absent.
    bad = pts.copy()
    bad[2, 1] = np.nan
    res = hv_gradient_weights(jnp.asarray(bad), jnp.asarray(ref))
    assert bool(jnp.all(jnp.isfinite(res.weights))) and not bool(res.active[2])
    assert int(res.ranks[2]) == 6


def test_hv_gradient_weighting_per_model_under_vmap():
    rng = np.random.default_rng(90)
    losses = jnp.asarray(rng.uniform(0, 1, (6, 2)))
    ref = jnp.array([1.5, 1.5])
    expected = hv_gradient_weights(losses, ref).weights
    # Per-model form: vmap over models with a named axis, losses gathered inside.
    w = hv_gradient(ref, axis_name="models")
    states = jax.vmap(lambda _: w.init(2, jnp.float64))(jnp.arange(6))
    grams = jnp.tile(jnp.eye(2), (6, 1, 1))
    out, st = jax.vmap(lambda g, s, l: w.update(g, s, losses=l), axis_name="models")(grams, states, losses)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    # Dominated models have no hypervolume gradient: zero weights, DEGENERATE.
    moving = np.asarray(expected.sum(1) > 0)
    assert moving.any() and not moving.all()
    np.testing.assert_array_equal(np.asarray(st.active), moving)
    np.testing.assert_array_equal(
        np.asarray(st.status),
        np.where(moving, int(jp.Status.SUCCESSFUL), int(jp.Status.DEGENERATE)),
    )
    # No named axis: the population is this one model, w_i ∝ Π_{j≠i} (z_j − l_j).
    w1 = hv_gradient(ref)
    l0 = losses[0]
    out1, st1 = w1.update(jnp.eye(2), w1.init(2, jnp.float64), losses=l0)
    box = ref - l0
    np.testing.assert_allclose(out1, box[::-1] / jnp.sum(box), rtol=1e-14)
    # Outside the reference box: no gradient, zero weights, DEGENERATE (not converged).
    out_far, st_far = w1.update(jnp.eye(2), w1.init(2, jnp.float64), losses=ref + 1.0)
    np.testing.assert_array_equal(out_far, [0.0, 0.0])
    assert int(st_far.status) == jp.Status.DEGENERATE and not bool(st_far.converged)
    # A non-finite Gramian: this model is absent (finite zero weights), NONFINITE_INPUT.
    out_nan, st_nan = w1.update(jnp.full((2, 2), jnp.nan), w1.init(2, jnp.float64), losses=l0)
    assert bool(jnp.all(jnp.isfinite(out_nan))) and int(st_nan.status) == jp.Status.NONFINITE_INPUT
    with pytest.raises(ValueError, match="losses"):
        w1.update(None, w1.init(2), losses=losses)  # [K, m] is hv_gradient_weights' input
    with pytest.raises(ValueError, match="num_tasks"):
        hv_gradient(ref).init(3)
    with pytest.raises(ValueError, match="reference"):
        hv_gradient_weights(losses, jnp.ones(3))
    with pytest.raises(ValueError, match="normalization"):
        hv_gradient(ref, normalization="max")


def test_hv_gradient_shorthand_in_an_optax_chain_over_a_population():
    """``jp.hv_gradient`` as an optax transform: K models vmapped over a named axis, each
    updated along ``J_kᵀ w_k`` with ``w_k`` the k-th row of ``hv_gradient_weights`` on all
    models' losses (the oracle: the population function and an explicit combination)."""
    import optax

    rng = np.random.default_rng(3)
    k, m, n = 5, 2, 4
    jacs = jnp.asarray(rng.normal(size=(k, m, n)))
    losses = jnp.asarray(rng.uniform(0.1, 1.0, (k, m)))
    ref = jnp.array([2.0, 2.0])
    tx = optax.chain(jp.hv_gradient(ref, axis_name="models"), optax.sgd(1.0))
    params = jnp.zeros((k, n))
    states = jax.vmap(tx.init)(params)

    def one(jac, state, p, l):
        return tx.update(jac, state, p, losses=l)[0]

    upd = jax.jit(jax.vmap(one, axis_name="models"))(jacs, states, params, losses)
    w = hv_gradient_weights(losses, ref).weights
    np.testing.assert_allclose(upd, -jnp.einsum("km,kmn->kn", w, jacs), rtol=1e-12, atol=1e-14)
