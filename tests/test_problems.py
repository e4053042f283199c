"""Tests for jaxpareto.problems against independent oracles.

Oracles: the closed-form two-gradient min-norm (written here), scipy SLSQP for the
min-norm over the simplex (m ≥ 3), scipy minimize for weighted-sum minimisers, numpy
re-implementations of the loss formulas, central finite differences, brute-force
dominance checks over random samples, dense grids plus ``minimize_scalar`` for
distances.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from jaxpareto import problems


# ---------------------------------------------------------------------------
# Oracles.


def min_norm_two(g1, g2):
    """min_{γ∈[0,1]} ‖γ g1 + (1−γ) g2‖ in closed form."""
    diff = g1 - g2
    denom = diff @ diff
    gamma = 0.5 if denom == 0 else float(np.clip(-(diff @ g2) / denom, 0, 1))
    return float(np.linalg.norm(gamma * g1 + (1 - gamma) * g2))


def min_norm_slsqp(jac):
    """min_{β∈Δ} ‖Jᵀβ‖ by SLSQP from several starts."""
    jac = np.asarray(jac, float)
    m = jac.shape[0]
    gram = jac @ jac.T
    best = np.inf
    starts = [np.full(m, 1 / m)] + list(np.eye(m) * 0.9 + 0.1 / m)
    for x0 in starts:
        res = minimize(
            lambda b: b @ gram @ b, x0, jac=lambda b: 2 * gram @ b, method="SLSQP",
            bounds=[(0, 1)] * m, constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1}],
            options={"ftol": 1e-16, "maxiter": 500},
        )
        best = min(best, float(res.x @ gram @ res.x))
    return math.sqrt(max(best, 0.0))


def fd_jacobian(f, x, h=1e-6):
    x = np.asarray(x, float)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=1)


def dominates(a, b):
    return np.all(a <= b) and np.any(a < b)


def check_jacobian(problem, params):
    jac = np.asarray(jax.jacrev(problem.loss_fn)(jnp.asarray(params)))
    fd = fd_jacobian(lambda x: problem.loss_fn(jnp.asarray(x)), params)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------
# EPO synthetic.


def epo_losses_np(theta):
    n = theta.size
    a = np.ones(n) / np.sqrt(n)
    return np.array([1 - np.exp(-np.sum((theta - a) ** 2)), 1 - np.exp(-np.sum((theta + a) ** 2))])


class TestEpoSynthetic(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_matches_formula_and_vmap(self):
        p = problems.epo_synthetic(20)
        fn = self.variant(jax.vmap(p.loss_fn))
        thetas = np.random.default_rng(0).normal(size=(16, 20)) * 0.3
        np.testing.assert_allclose(np.asarray(fn(thetas)), [epo_losses_np(t) for t in thetas], rtol=1e-13)
        assert (p.num_objectives, p.num_params) == (2, 20)

    def test_front_equals_loss_on_pareto_set_and_is_stationary(self):
        p = problems.epo_synthetic(20)
        num = 41
        front = np.asarray(p.pareto_front(num))
        t = np.linspace(1, -1, num)
        thetas = np.asarray(p.pareto_set(jnp.asarray(t)))
        np.testing.assert_allclose(thetas, t[:, None] / np.sqrt(20) * np.ones(20), rtol=1e-15)
        np.testing.assert_allclose(front, [epo_losses_np(th) for th in thetas], rtol=1e-12, atol=1e-15)
        assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)
        jac = jax.jit(jax.vmap(jax.jacrev(p.loss_fn)))(jnp.asarray(thetas))
        worst = max(min_norm_two(*np.asarray(j)) for j in jac)
        assert worst < 1e-14
        assert bool(jnp.all(jax.vmap(p.is_pareto_optimal)(jnp.asarray(thetas))))
        # Points beyond the segment end are not stationary.
        outside = jax.jacrev(p.loss_fn)(jnp.full(20, 1.3 / np.sqrt(20)))
        assert min_norm_two(*np.asarray(outside)) > 1e-2

    def test_front_is_nondominated_and_concave(self):
        p = problems.epo_synthetic(20)
        front = np.asarray(p.pareto_front(201))
        rng = np.random.default_rng(1)
        # Random parameters, including points near the Pareto segment.
        t = rng.uniform(-1.2, 1.2, size=(3000, 1))
        thetas = t / np.sqrt(20) + rng.normal(size=(3000, 20)) * rng.uniform(0, 0.2, (3000, 1))
        samples = np.asarray(jax.jit(jax.vmap(p.loss_fn))(thetas))
        for f in front:
            assert not np.any(np.all(samples < f - 1e-12, axis=1))
        for i in range(0, 201, 20):
            assert not any(dominates(front[j], front[i]) for j in range(201))
        # Concave in the middle (|t| < 1/√2): no weighted sum reaches it; its minimisers
        # lie in the convex end pieces (|t| ≥ 0.9575, found by a dense grid offline).
        t = np.linspace(1, -1, 201)
        for w in np.linspace(1e-4, 1 - 1e-4, 101):
            k = np.argmin(front @ np.array([w, 1 - w]))
            assert abs(t[k]) > 0.9

    def test_distance_vs_brute_force(self):
        p = problems.epo_synthetic(20)
        dist = jax.jit(p.distance_to_pareto_set)
        rng = np.random.default_rng(2)
        a = np.ones(20) / np.sqrt(20)
        ts = np.linspace(-1, 1, 20001)
        for scale in (0.05, 0.3, 2.0):
            for theta in rng.normal(size=(5, 20)) * scale:
                grid = np.min(np.linalg.norm(theta[None] - ts[:, None] * a, axis=1))
                fine = minimize_scalar(lambda s: np.linalg.norm(theta - s * a), bounds=(-1, 1), method="bounded",
                                       options={"xatol": 1e-12})
                want = min(grid, fine.fun)
                assert float(dist(theta)) == pytest.approx(want, rel=1e-9, abs=1e-12)
                assert float(dist(theta)) <= grid + 1e-15
        # The projection onto the segment dominates the point (why the segment is the set).
        for theta in rng.normal(size=(20, 20)) * 0.5:
            proj = np.clip(theta @ a, -1, 1) * a
            assert dominates(epo_losses_np(proj), epo_losses_np(theta))
            assert not bool(p.is_pareto_optimal(theta, 1e-6))

    def test_gradient_vs_finite_differences(self):
        p = problems.epo_synthetic(7)
        for theta in np.random.default_rng(3).normal(size=(4, 7)) * 0.4:
            check_jacobian(p, theta)

    def test_initialisations(self):
        p = problems.epo_synthetic(20)
        keys = jax.random.split(jax.random.PRNGKey(0), 200)

        @jax.jit
        def sample(keys):
            draw = lambda kind: jax.vmap(lambda k: p.init_params(k, kind))(keys)
            return draw("easy"), draw("hard"), draw("box")

        easy, hard, box = (np.asarray(x) for x in sample(keys))
        assert np.all(np.abs(easy) <= 0.4) and easy.min() < -0.35 and easy.max() > 0.35
        sign = (-1.0) ** np.arange(20)
        assert np.all(hard * sign >= 0.15) and np.all(hard * sign <= 0.5)
        assert hard.min() * -1 > 0.45 and hard.max() > 0.45
        assert np.all(np.abs(box) <= 1 / np.sqrt(20))
        d_hard = np.asarray(jax.vmap(p.distance_to_pareto_set)(hard))
        d_easy = np.asarray(jax.vmap(p.distance_to_pareto_set)(easy))
        assert d_hard.mean() > 1.3 * d_easy.mean() > 0
        # Default kind is "easy"; dtype follows the argument (checked without compiling).
        np.testing.assert_array_equal(np.asarray(p.init_params(keys[0])), easy[0])
        assert jax.eval_shape(lambda k: p.init_params(k, "hard", jnp.float32), keys[0]).dtype == jnp.float32

    def test_float32(self):
        p = problems.epo_synthetic(20)
        theta = np.random.default_rng(4).normal(size=20) * 0.3
        out = p.loss_fn(jnp.asarray(theta, jnp.float32))
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), epo_losses_np(theta), rtol=1e-5)
        assert p.pareto_front(5, dtype=jnp.float32).dtype == jnp.float32
        assert p.pareto_set(jnp.float32(0.5)).dtype == jnp.float32

    def test_pareto_set_clips_and_accepts_ints(self):
        p = problems.epo_synthetic(4)
        np.testing.assert_allclose(np.asarray(p.pareto_set(3.0)), np.full(4, 0.5), rtol=1e-15)
        np.testing.assert_allclose(np.asarray(p.pareto_set(-1)), np.full(4, -0.5), rtol=1e-15)
        assert p.pareto_set(jnp.zeros((2, 3))).shape == (2, 3, 4)

    def test_bad_input(self):
        p = problems.epo_synthetic(20)
        with pytest.raises(ValueError, match="params"):
            p.loss_fn(jnp.zeros(19))
        with pytest.raises(ValueError, match="params"):
            p.loss_fn(jnp.zeros((2, 20)))
        with pytest.raises(TypeError, match="params"):
            p.loss_fn(jnp.zeros(20, jnp.int32))
        with pytest.raises(ValueError, match="`n`"):
            problems.epo_synthetic(0)
        with pytest.raises(TypeError, match="`n`"):
            problems.epo_synthetic(2.5)
        with pytest.raises(ValueError, match="kind"):
            p.init_params(jax.random.PRNGKey(0), "medium")
        with pytest.raises(ValueError, match="num"):
            p.pareto_front(0)


# ---------------------------------------------------------------------------
# Convex quadratics.


def quad_losses_np(theta, a, c):
    d = theta[None] - c
    return 0.5 * np.einsum("mi,mij,mj->m", d, a, d)


def random_spd(rng, m, n, cond):
    q, _ = np.linalg.qr(rng.normal(size=(m, n, n)))
    lam = np.exp(rng.uniform(0, np.log(cond), size=(m, n)))
    a = np.einsum("mij,mj,mkj->mik", q, lam, q)
    return 0.5 * (a + np.swapaxes(a, 1, 2))


@functools.lru_cache(maxsize=None)
def _quadratic_problem():
    rng = np.random.default_rng(0)
    a, c = random_spd(rng, 3, 4, 20.0), rng.normal(size=(3, 4))
    return problems.convex_quadratics(a, c), a, c


class TestConvexQuadratics(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.p3, self.a, self.c = _quadratic_problem()

    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_formula_and_vmap(self):
        a = np.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])
        c = np.array([[1.0, -1.0], [0.5, 2.0]])
        p = problems.convex_quadratics(a, c)
        thetas = np.random.default_rng(0).normal(size=(10, 2))
        got = self.variant(jax.vmap(p.loss_fn))(thetas)
        np.testing.assert_allclose(np.asarray(got), [quad_losses_np(t, a, c) for t in thetas], rtol=1e-13)
        # Minimisers have zero loss: the data were recovered correctly in setUp.
        np.testing.assert_allclose(np.asarray(self.p3.loss_fn(jnp.asarray(self.c[1])))[1], 0, atol=1e-20)

    def test_pareto_set_vs_scipy_weighted_sum(self):
        rng = np.random.default_rng(1)
        alphas = np.concatenate([rng.dirichlet(np.ones(3), 6), np.eye(3), [[0.5, 0.5, 0.0]]])
        thetas = np.asarray(self.p3.pareto_set(jnp.asarray(alphas)))
        for alpha, theta in zip(alphas, thetas):
            obj = lambda t: alpha @ quad_losses_np(t, self.a, self.c)
            grad = lambda t: np.einsum("m,mij,mj->i", alpha, self.a, t[None] - self.c)
            res = minimize(obj, np.zeros(4), jac=grad, method="BFGS", options={"gtol": 1e-12})
            np.testing.assert_allclose(theta, res.x, atol=1e-7)
        # Degenerate α: all zero -> uniform weights (finite, documented); integer α works.
        np.testing.assert_allclose(np.asarray(self.p3.pareto_set(jnp.zeros(3))),
                                   np.asarray(self.p3.pareto_set(jnp.ones(3))), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(self.p3.pareto_set(jnp.array([0, 1, 0]))), thetas[7], rtol=1e-12)
        # Unnormalised α gives the same point.
        np.testing.assert_allclose(np.asarray(self.p3.pareto_set(jnp.asarray(3 * alphas[0]))), thetas[0], rtol=1e-12)

    def test_pareto_points_are_stationary(self):
        alpha = np.random.default_rng(3).dirichlet(np.ones(3), 30)
        thetas = jnp.asarray(self.p3.pareto_set(jnp.asarray(alpha)))
        jac = np.asarray(jax.jit(jax.vmap(jax.jacrev(self.p3.loss_fn)))(thetas))
        worst = max(min_norm_slsqp(j) for j in jac[:10])
        assert worst < 1e-7
        assert bool(jnp.all(jax.jit(jax.vmap(self.p3.is_pareto_optimal))(thetas)))

    def test_front_is_pareto_optimal(self):
        front = np.asarray(self.p3.pareto_front(30))
        assert front.shape == (30, 3)
        # Non-dominated among random parameter samples.
        samples = np.asarray(jax.vmap(self.p3.loss_fn)(np.random.default_rng(2).normal(size=(2000, 4)) * 2))
        for f in front:
            assert not np.any(np.all(samples < f - 1e-12, axis=1))
        # ε-constraint oracle: min Σ l_i(θ) s.t. l(θ) ≤ f is attained with l(θ) = f,
        # i.e. f is attainable and nothing improves on it.
        loss = lambda t: quad_losses_np(t, self.a, self.c)
        for f in front[:4]:
            res = minimize(
                lambda t: loss(t).sum(), np.zeros(4), method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda t, f=f: f - loss(t)}],
                options={"ftol": 1e-14, "maxiter": 500},
            )
            assert res.success
            np.testing.assert_allclose(loss(res.x), f, rtol=1e-5, atol=1e-7)

    def test_m2_front_and_closed_form_stationarity(self):
        rng = np.random.default_rng(5)
        p = problems.convex_quadratics(random_spd(rng, 2, 5, 10.0), rng.normal(size=(2, 5)))
        front = np.asarray(p.pareto_front(25))
        assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)
        s = np.linspace(1, 0, 25)
        thetas = p.pareto_set(jnp.stack([s, 1 - s], 1))
        np.testing.assert_allclose(front, jax.vmap(p.loss_fn)(thetas), rtol=1e-12)
        jac = np.asarray(jax.vmap(jax.jacrev(p.loss_fn))(thetas))
        assert max(min_norm_two(*j) for j in jac) < 1e-12

    def test_random_convex_quadratics_data(self):
        p = problems.random_convex_quadratics(jax.random.PRNGKey(3), 2, 5, condition_number=20.0)
        assert (p.num_objectives, p.num_params) == (2, 5)
        hess = jax.jit(jax.vmap(lambda i: jax.hessian(lambda t: p.loss_fn(t)[i])(jnp.zeros(5))))(jnp.arange(2))
        eig = np.linalg.eigvalsh(np.asarray(hess))
        assert np.all(eig >= 1 - 1e-9) and np.all(eig <= 20 + 1e-9)
        # Minimisers are the vertices of the Pareto set: zero loss there.
        ends = p.pareto_set(jnp.eye(2))
        np.testing.assert_allclose(np.diag(np.asarray(jax.vmap(p.loss_fn)(ends))), 0, atol=1e-20)

    def test_is_pareto_optimal_matches_scipy_min_norm(self):
        check = jax.jit(self.p3.is_pareto_optimal)
        rng = np.random.default_rng(4)
        jacobian = jax.jit(jax.jacrev(self.p3.loss_fn))
        checked = 0
        for theta in rng.normal(size=(12, 4)) * 0.7:
            s = min_norm_slsqp(jacobian(theta))
            if s < 1e-6:
                continue  # random point happens to be (nearly) Pareto optimal
            assert bool(check(theta, s * 1.001)) and not bool(check(theta, s * 0.999))
            checked += 1
        assert checked >= 8

    def test_collinear_and_float32(self):
        # Identical matrices and collinear centres: a rank-one Jacobian at every θ.
        a = np.stack([np.eye(3)] * 3)
        c = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
        p = problems.convex_quadratics(a, c)
        assert bool(p.is_pareto_optimal(jnp.array([1.5, 0.0, 0.0])))
        assert not bool(p.is_pareto_optimal(jnp.array([1.5, 0.1, 0.0]), 1e-3))
        # min-norm of the three collinear gradients at (1.5, 0.1, 0) is (0, 0.1, 0).
        assert bool(p.is_pareto_optimal(jnp.array([1.5, 0.1, 0.0]), 0.1 + 1e-9))
        assert not bool(p.is_pareto_optimal(jnp.array([1.5, 0.1, 0.0]), 0.1 - 1e-9))
        out = self.p3.loss_fn(jnp.ones(4, jnp.float32))
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), quad_losses_np(np.ones(4), self.a, self.c), rtol=1e-5)

    def test_gradient_vs_finite_differences(self):
        for theta in np.random.default_rng(5).normal(size=(3, 4)):
            check_jacobian(self.p3, theta)

    def test_bad_input(self):
        a = np.stack([np.eye(2)] * 2)
        c = np.zeros((2, 2))
        with pytest.raises(ValueError, match="matrices"):
            problems.convex_quadratics(np.eye(2), c)
        with pytest.raises(ValueError, match="matrices"):
            problems.convex_quadratics(a[:1], c[:1])
        with pytest.raises(ValueError, match="centers"):
            problems.convex_quadratics(a, np.zeros((2, 3)))
        with pytest.raises(ValueError, match="positive definite"):
            problems.convex_quadratics(np.stack([np.eye(2), -np.eye(2)]), c)
        with pytest.raises(ValueError, match="symmetric"):
            problems.convex_quadratics(np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), c)
        with pytest.raises(ValueError, match="alpha"):
            problems.convex_quadratics(a, c).pareto_set(jnp.ones(3))
        with pytest.raises(TypeError, match="alpha"):
            problems.convex_quadratics(a, c).pareto_set(jnp.ones(2, bool))
        with pytest.raises(ValueError, match="num_objectives"):
            problems.random_convex_quadratics(jax.random.PRNGKey(0), 1, 3)
        with pytest.raises(ValueError, match="params"):
            problems.convex_quadratics(a, c).loss_fn(jnp.zeros(3))


# ---------------------------------------------------------------------------
# DTLZ2.


def dtlz2_np(theta, m):
    """Deb et al. (2005), 1-based indices as in the paper, on x = sigmoid(θ)."""
    x = 1 / (1 + np.exp(-np.asarray(theta, float)))
    g = np.sum((x[m - 1:] - 0.5) ** 2)
    f = np.empty(m)
    for i in range(1, m + 1):
        v = 1 + g
        for j in range(1, m - i + 1):
            v *= np.cos(x[j - 1] * np.pi / 2)
        if i > 1:
            v *= np.sin(x[m - i] * np.pi / 2)
        f[i - 1] = v
    return f


class TestDtlz2(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_formula_and_vmap(self):
        rng = np.random.default_rng(0)
        for m, n in [(2, 6), (3, 12), (5, 9)]:
            p = problems.dtlz2(m, n)
            thetas = rng.normal(size=(8, n))
            got = self.variant(jax.vmap(p.loss_fn))(thetas)
            np.testing.assert_allclose(np.asarray(got), [dtlz2_np(t, m) for t in thetas], rtol=1e-13)
        assert problems.dtlz2(3).num_params == 12

    def test_pareto_set_on_sphere_and_stationary(self):
        rng = np.random.default_rng(1)
        for m in (2, 3, 4):
            p = problems.dtlz2(m, m + 3)
            pos = rng.uniform(0.02, 0.98, size=(10, m - 1))
            thetas = np.asarray(p.pareto_set(jnp.asarray(pos)))
            f = np.array([dtlz2_np(t, m) for t in thetas])
            np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-14)
            jac = np.asarray(jax.vmap(jax.jacrev(p.loss_fn))(jnp.asarray(thetas)))
            if m == 2:
                worst = max(min_norm_two(*j) for j in jac)
                assert worst < 1e-14
            else:
                worst = max(min_norm_slsqp(j) for j in jac[:5])
                assert worst < 1e-7
            assert bool(jnp.all(jax.vmap(p.is_pareto_optimal)(jnp.asarray(thetas))))
            # Zeroing the distance variables dominates the point (the set is θ_M = 0).
            for theta in rng.normal(size=(10, m + 3)):
                proj = theta.copy()
                proj[m - 1:] = 0
                assert dominates(dtlz2_np(proj, m), dtlz2_np(theta, m))
                assert float(p.distance_to_pareto_set(theta)) == pytest.approx(np.linalg.norm(theta - proj))

    def test_front(self):
        f2 = np.asarray(problems.dtlz2(2).pareto_front(50))
        np.testing.assert_allclose(f2[[0, -1]], [[1, 0], [0, 1]], atol=1e-15)
        p = problems.dtlz2(3)
        front = np.asarray(p.pareto_front(500))
        assert front.shape == (500, 3) and np.all(front >= 0)
        np.testing.assert_allclose(np.linalg.norm(front, axis=1), 1.0, rtol=1e-14)
        # Every front point is reached by a Pareto-set point: invert the DTLZ2 map.
        f = front[:5]
        # (f0, f1, f2) = (cos a0 cos a1, cos a0 sin a1, sin a0) with a_i = x_i π/2.
        x0 = np.arctan2(f[:, 2], np.linalg.norm(f[:, :2], axis=1)) / (np.pi / 2)
        x1 = np.arctan2(f[:, 1], f[:, 0]) / (np.pi / 2)
        theta = np.asarray(p.pareto_set(jnp.stack([x0, x1], 1)))
        np.testing.assert_allclose(np.asarray(jax.vmap(p.loss_fn)(theta)), f, atol=1e-12)
        # Octant is covered: each objective takes values near 0 and near 1.
        assert np.all(front.min(0) < 0.05) and np.all(front.max(0) > 0.95)

    def test_gradient_float32_and_bad_input(self):
        p = problems.dtlz2(3, 6)
        for theta in np.random.default_rng(2).normal(size=(3, 6)):
            check_jacobian(p, theta)
        out = p.loss_fn(jnp.ones(6, jnp.float32))
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), dtlz2_np(np.ones(6), 3), rtol=1e-5)
        with pytest.raises(ValueError, match="`m`"):
            problems.dtlz2(1)
        with pytest.raises(ValueError, match="`n`"):
            problems.dtlz2(4, 3)
        with pytest.raises(ValueError, match="params"):
            p.loss_fn(jnp.ones(5))
        with pytest.raises(ValueError, match="position"):
            p.pareto_set(jnp.ones(3) * 0.5)


# ---------------------------------------------------------------------------
# The standard suite: ZDT, DTLZ, VLMOP, Fonseca–Fleming (oracle: pymoo 0.6) and RE.

pymoo_problems = pytest.importorskip("pymoo.problems")

import jaxpareto as jp  # noqa: E402

# (factory, kwargs, pymoo name, pymoo kwargs)
SUITE = [
    (problems.zdt1, {"n": 8}, "zdt1", {"n_var": 8}),
    (problems.zdt2, {"n": 8}, "zdt2", {"n_var": 8}),
    (problems.zdt3, {"n": 8}, "zdt3", {"n_var": 8}),
    (problems.zdt4, {"n": 6}, "zdt4", {"n_var": 6}),
    (problems.zdt6, {"n": 6}, "zdt6", {"n_var": 6}),
    (problems.dtlz1, {"m": 3, "n": 7}, "dtlz1", {"n_var": 7, "n_obj": 3}),
    (problems.dtlz2, {"m": 3, "n": 8}, "dtlz2", {"n_var": 8, "n_obj": 3}),
    (problems.dtlz3, {"m": 3, "n": 8}, "dtlz3", {"n_var": 8, "n_obj": 3}),
    (problems.dtlz4, {"m": 3, "n": 8}, "dtlz4", {"n_var": 8, "n_obj": 3}),
    (problems.dtlz5, {"m": 4, "n": 9}, "dtlz5", {"n_var": 9, "n_obj": 4}),
    (problems.dtlz6, {"m": 4, "n": 9}, "dtlz6", {"n_var": 9, "n_obj": 4}),
    (problems.dtlz7, {"m": 3, "n": 8}, "dtlz7", {"n_var": 8, "n_obj": 3}),
    (problems.dtlz7, {"m": 2, "n": 6}, "dtlz7", {"n_var": 6, "n_obj": 2}),
    (problems.dtlz1, {"m": 2, "n": 5}, "dtlz1", {"n_var": 5, "n_obj": 2}),
    (problems.dtlz5, {"m": 2, "n": 6}, "dtlz5", {"n_var": 6, "n_obj": 2}),
]
SUITE_IDS = [f"{f.__name__}-{kw}" for f, kw, _, _ in SUITE]


def box_of(pm):
    return np.asarray(pm.xl, float), np.asarray(pm.xu, float)


def theta_to_box(theta, lo, hi, sigmoid=False):
    """The documented maps, written independently: x = l + (u − l)(1 − cos θ)/2, or
    the sigmoid that ``dtlz2`` keeps from before the suite existed."""
    if sigmoid:
        return lo + (hi - lo) / (1 + np.exp(-theta))
    return lo + (hi - lo) * (1 - np.cos(theta)) / 2


@functools.lru_cache(maxsize=None)
def suite_case(i):
    factory, kw, name, pkw = SUITE[i]
    return factory(**kw), pymoo_problems.get_problem(name, **pkw)


def pymoo_eval(pm, x):
    return np.asarray(pm.evaluate(np.atleast_2d(x)), float)


def dominated_by_np(rows, others, block=256):
    """Brute force: is each row dominated by some row of ``others``? (oracle)"""
    out = np.zeros(len(rows), bool)
    for s in range(0, len(rows), block):
        r = rows[s : s + block, None, :]
        out[s : s + block] = np.any(np.all(others <= r, 2) & np.any(others < r, 2), axis=1)
    return out


def nondominated_np(f):
    return f[~dominated_by_np(f, f)]


def nearest_distance(points, ref):
    d = np.sqrt(((points[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


@pytest.mark.parametrize("i", range(len(SUITE)), ids=SUITE_IDS)
def test_suite_loss_matches_pymoo(i):
    p, pm = suite_case(i)
    lo, hi = box_of(pm)
    n = p.num_params
    rng = np.random.default_rng(i)
    theta = rng.uniform(-4, 4, size=(40, n))
    # Include points on the Pareto set (distance variables at their optimum) and on the
    # box faces, where the safe fractional powers take their guarded branch.
    ps = np.asarray(p.pareto_set(rng.uniform(0, 1, size=(8, p.num_objectives - 1))))
    theta = np.concatenate([theta, ps, np.zeros((1, n)), np.full((1, n), np.pi)])
    got = np.asarray(jax.jit(jax.vmap(p.loss_fn))(theta))
    want = pymoo_eval(pm, theta_to_box(theta, lo, hi, SUITE[i][0] is problems.dtlz2))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert (p.num_objectives, p.num_params) == (pm.n_obj, pm.n_var)
    # float32 follows the input.
    f32 = jax.vmap(p.loss_fn)(jnp.asarray(theta[:10], jnp.float32))
    assert f32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32), want[:10], rtol=2e-4, atol=2e-4)


def analytic_front_residual(name, f):
    """Distance-like residual of ``f`` from the front's equation (0 on it)."""
    m = f.shape[1]
    if name in ("zdt1", "zdt4"):
        return f[:, 1] - (1 - np.sqrt(f[:, 0]))
    if name in ("zdt2", "zdt6"):
        return f[:, 1] - (1 - f[:, 0] ** 2)
    if name == "zdt3":
        return f[:, 1] - (1 - np.sqrt(f[:, 0]) - f[:, 0] * np.sin(10 * np.pi * f[:, 0]))
    if name == "dtlz1":
        return f.sum(1) - 0.5
    if name in ("dtlz2", "dtlz3", "dtlz4", "dtlz5", "dtlz6"):
        return np.linalg.norm(f, axis=1) - 1
    if name == "dtlz7":
        t = f[:, :-1]
        return f[:, -1] - (2 * m - np.sum(t * (1 + np.sin(3 * np.pi * t)), axis=1))
    raise AssertionError(name)


@pytest.mark.parametrize("i", range(len(SUITE)), ids=SUITE_IDS)
def test_suite_front_vs_pymoo(i):
    p, pm = suite_case(i)
    name = SUITE[i][2]
    ours = np.asarray(p.pareto_front(200), float)
    assert ours.shape == (200, p.num_objectives)
    assert np.all(np.isfinite(ours))
    if name != "zdt3":  # ZDT3's f2 dips to ≈ −0.77
        assert np.all(ours >= -1e-12)
    np.testing.assert_allclose(analytic_front_residual(name, ours), 0, atol=1e-9)
    if name == "dtlz7" and p.num_objectives == 3:
        # pymoo 0.6 downloads this front; use the surface f_3 = 6 − Σ φ(f_i) on a dense
        # grid, filtered for dominance by brute force.
        g = np.linspace(0, 1, 61)
        t = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        ref = np.concatenate([t, (6 - np.sum(t * (1 + np.sin(3 * np.pi * t)), 1))[:, None]], 1)
    else:
        ref = np.asarray(pm.pareto_front(), float)
        ref = ref[:: max(1, len(ref) // 2000)]
    ref = nondominated_np(ref)
    # Every point of ours is non-dominated by pymoo's front (up to rounding) ...
    for f in ours:
        assert not np.any(np.all(ref < f - 1e-9, axis=1))
    # ... and the two sets cover each other: small IGD both ways.
    d1 = nearest_distance(ours, ref).max()
    igd_theirs = nearest_distance(ref, ours).mean()  # IGD of ours w.r.t. pymoo's front
    igd_ours = nearest_distance(ours, ref).mean()
    assert d1 < 0.1 and igd_theirs < 0.05 and igd_ours < 0.05, (d1, igd_theirs, igd_ours)


@pytest.mark.parametrize("i", range(len(SUITE)), ids=SUITE_IDS)
def test_suite_pareto_set_maps_onto_front(i):
    p, pm = suite_case(i)
    name = SUITE[i][2]
    lo, hi = box_of(pm)
    rng = np.random.default_rng(100 + i)
    pos = rng.uniform(0, 1, size=(30, p.num_objectives - 1))
    theta = np.asarray(p.pareto_set(pos))
    sig = SUITE[i][0] is problems.dtlz2
    f = np.asarray(jax.vmap(p.loss_fn)(theta))
    np.testing.assert_allclose(analytic_front_residual(name, f), 0, atol=1e-9)
    # pymoo agrees on the losses at the set points, and the position variables round-trip.
    x = theta_to_box(theta, lo, hi, sig)
    np.testing.assert_allclose(pymoo_eval(pm, x), f, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x[:, : pos.shape[1]], pos, atol=1e-12)
    opt = np.asarray(jax.vmap(p.is_pareto_optimal)(theta))
    if name in ("zdt3", "dtlz7"):
        # Only the positions in the non-dominated pieces are optimal. Brute force: try
        # every single-coordinate replacement s ∈ grid of a front point (still on g = 1,
        # i.e. on the surface); a dominating one proves the point dominated.
        grid = np.linspace(0, 1, 2001)
        dominated = np.zeros(len(pos), bool)
        for j in range(pos.shape[1]):
            cand = np.repeat(pos[:, None, :], grid.size, 1)
            cand[:, :, j] = grid
            fc = np.asarray(jax.vmap(jax.vmap(p.loss_fn))(np.asarray(p.pareto_set(cand))))
            dominated |= np.any(np.all(fc <= f[:, None], 2) & np.any(fc < f[:, None], 2), 1)
        ends = (problems._zdt3_intervals() if name == "zdt3" else problems._dtlz7_intervals()).ravel()
        far = np.min(np.abs(pos[:, :, None] - ends[None, None, :]), axis=(1, 2)) > 1e-3
        np.testing.assert_array_equal(opt[far], ~dominated[far])
        assert opt.any() and not opt.all() and far.sum() > 20
    else:
        assert opt.all()
    # Moving a distance variable off its optimum leaves the set.
    off = theta.copy()
    off[:, -1] += 0.3
    assert not np.any(np.asarray(jax.vmap(p.is_pareto_optimal)(off)))


def test_zdt3_and_dtlz7_pieces_vs_pymoo_regions():
    # pymoo's ZDT3 front uses the five published x1-intervals.
    pf = np.asarray(pymoo_problems.get_problem("zdt3").pareto_front(1000), float)
    gaps = np.flatnonzero(np.diff(pf[:, 0]) > 0.05)
    starts = np.concatenate([[pf[0, 0]], pf[gaps + 1, 0]])
    ends = np.concatenate([pf[gaps, 0], [pf[-1, 0]]])
    np.testing.assert_allclose(problems._zdt3_intervals(), np.stack([starts, ends], 1), atol=2e-6)
    assert problems._dtlz7_intervals().shape == (2, 2)
    # ZDT6's smallest f1: pymoo's front starts at the published 0.2807753191.
    zdt6_pf = np.asarray(pymoo_problems.get_problem("zdt6").pareto_front(), float)
    assert problems._zdt6_f1_min() == pytest.approx(zdt6_pf[0, 0], abs=1e-9)
    f32 = problems.zdt6(6).pareto_front(7, dtype=jnp.float32)
    assert f32.dtype == jnp.float32 and float(f32[0, 0]) == pytest.approx(zdt6_pf[0, 0], abs=1e-6)
    # DTLZ7 pieces by brute-force dominance on a fine 1-D grid.
    t = np.linspace(0, 1, 4001)
    f = np.stack([t, 4 - t * (1 + np.sin(3 * np.pi * t))], 1)
    nd = nondominated_np(f)[:, 0]
    iv = problems._dtlz7_intervals()
    inside = np.any((t[:, None] >= iv[:, 0] - 1e-4) & (t[:, None] <= iv[:, 1] + 1e-4), axis=1)
    assert set(np.round(nd, 6)) <= set(np.round(t[inside], 6))
    assert abs(len(nd) - inside.sum()) <= 4


@pytest.mark.parametrize("i", [0, 2, 3, 4, 5, 9, 11])
def test_suite_gradient_vs_finite_differences(i):
    p, _ = suite_case(i)
    rng = np.random.default_rng(200 + i)
    # Away from the box faces (θ ∉ πZ) where the square-root / power guards act.
    theta = rng.uniform(0.3, 2.8, size=p.num_params)
    check_jacobian(p, theta)


def mgda_steps(p, theta, steps, lr):
    vj = jax.jit(jp.value_and_jacobian(p.loss_fn))
    history = []
    for _ in range(steps):
        losses, jac = vj(theta)
        w = jp.weighting.min_norm_weights(jac @ jac.T).weights
        theta = theta - lr * (w @ jac)
        history.append(np.asarray(losses))
    return np.asarray(history), theta


@pytest.mark.parametrize("i", [0, 5, 11])
def test_suite_mgda_decreases_losses(i):
    p, _ = suite_case(i)
    theta = jnp.asarray(np.random.default_rng(300 + i).uniform(0.5, 2.6, size=p.num_params))
    hist, theta = mgda_steps(p, theta, 30, 0.05)
    # MGDA's common descent direction: no loss increases over the run, at least one
    # falls clearly, and the gradient is finite throughout.
    assert np.all(np.isfinite(hist))
    assert np.all(hist[-1] <= hist[0] + 1e-6)
    assert np.any(hist[-1] < hist[0] - 1e-3)


def test_zdt_guards_at_the_pareto_set_are_finite():
    # On the Pareto set (x_{2..n} = 0) ZDT6's fourth root and DTLZ6's x^0.1 have infinite
    # derivatives in x; with θ = 0 there the documented gradient is finite.
    for p, pos in [(problems.zdt6(6), [0.3]), (problems.dtlz6(3, 6), [0.2, 0.7]),
                   (problems.zdt1(5), [0.0])]:
        theta = p.pareto_set(jnp.asarray(pos))
        jac = jax.jacrev(p.loss_fn)(theta)
        assert np.all(np.isfinite(np.asarray(jac)))


def test_vlmop_and_fonseca_fleming():
    v1 = problems.vlmop1()
    x = np.linspace(-3, 5, 17)
    np.testing.assert_allclose(np.asarray(jax.vmap(v1.loss_fn)(x[:, None])),
                               np.stack([x**2, (x - 2) ** 2], 1), rtol=1e-14)
    front = np.asarray(v1.pareto_front(41))
    np.testing.assert_allclose(np.sqrt(front[:, 0]) + np.sqrt(front[:, 1]), 2, rtol=1e-12)
    ps = np.asarray(v1.pareto_set(jnp.linspace(-1, 3, 9)))
    np.testing.assert_allclose(ps[:, 0], np.clip(np.linspace(-1, 3, 9), 0, 2))
    assert float(v1.distance_to_pareto_set(jnp.array([3.5]))) == pytest.approx(1.5)
    # Weighted sums w f1 + (1−w) f2 are minimised at x = 2(1 − w): on the set.
    for w in (0.1, 0.5, 0.9):
        res = minimize_scalar(lambda t: w * t**2 + (1 - w) * (t - 2) ** 2)
        assert bool(v1.is_pareto_optimal(jnp.array([res.x]), 1e-6))
    for p, n in [(problems.vlmop2(), 2), (problems.fonseca_fleming(), 3)]:
        assert p.num_params == n
        th = np.random.default_rng(n).uniform(-2, 2, size=(10, n))
        a = np.ones(n) / np.sqrt(n)
        want = np.stack([1 - np.exp(-((th - a) ** 2).sum(1)), 1 - np.exp(-((th + a) ** 2).sum(1))], 1)
        np.testing.assert_allclose(np.asarray(jax.vmap(p.loss_fn)(th)), want, rtol=1e-13)


def test_suite_bad_input():
    with pytest.raises(ValueError, match="params"):
        problems.zdt1(5).loss_fn(jnp.zeros(4))
    with pytest.raises(ValueError, match="position"):
        problems.dtlz1(3).pareto_set(jnp.zeros(3))
    with pytest.raises(ValueError, match="`n`"):
        problems.dtlz7(3, 2)
    with pytest.raises(ValueError, match="alpha"):
        problems.dtlz4(alpha=0.0)
    with pytest.raises(ValueError, match="name"):
        problems.re_problem("RE22")
    with pytest.raises(ValueError, match="kind"):
        problems.zdt2().init_params(jax.random.PRNGKey(0), kind="normal")
    th = problems.zdt1().init_params(jax.random.PRNGKey(0), dtype=jnp.float32)
    assert th.dtype == jnp.float32 and th.shape == (30,)


# ---------------------------------------------------------------------------
# RE (Tanabe & Ishibuchi 2020). Oracles: the formulas of the paper's supplement written
# here in plain numpy, the suite's published ideal point of RE21, and the classical
# welded-beam optimum (Ragsdell & Phillips 1976) for RE32.


def viol(*g):
    return sum(max(-v, 0.0) for v in g)


def re21_np(x):
    x1, x2, x3, x4 = x
    return [200 * (2 * x1 + np.sqrt(2) * x2 + np.sqrt(x3) + x4),
            0.01 * (2 / x1 + 2 * np.sqrt(2) / x2 - 2 * np.sqrt(2) / x3 + 2 / x4)]


def re24_np(x):
    x1, x2 = x
    sb, tau, delta, sk = 4500 / (x1 * x2), 1800 / x2, 56.2e4 / (7e5 * x1 * x2**2), 7e5 * x1**2 / 100
    return [x1 + 120 * x2, viol(1 - sb / 700, 1 - tau / 450, 1 - delta / 1.5, 1 - sb / sk)]


def re31_np(x):
    x1, x2, x3 = x
    a, b = np.sqrt(16 + x3**2), np.sqrt(1 + x3**2)
    f1, f2 = x1 * a + x2 * b, 20 * a / (x1 * x3)
    return [f1, f2, viol(0.1 - f1, 1e5 - f2, 1e5 - 80 * b / (x3 * x2))]


def re33_np(x):
    x1, x2, x3, x4 = x
    a, c = x2**2 - x1**2, x2**3 - x1**3
    return [4.9e-5 * a * (x4 - 1), 9.82e6 * a / (x3 * x4 * c),
            viol(x2 - x1 - 20, 0.4 - x3 / (3.14 * a), 1 - 2.22e-3 * x3 * c / a**2,
                 2.66e-2 * x3 * x4 * c / a - 900)]


def re37_np(x):
    # Response surfaces in (α, HA, OA, OPTT); coefficient tables of the supplement.
    a, h, o, t = x
    terms = np.array([1, a, h, o, t, a * a, h * a, h * h, o * a, o * h, o * o, t * a, t * h, t * o,
                      t * t, h * a * a, o * a * a, h * h * a, h * h * o, o * o * h, t * t * a,
                      h * a * o])
    c1 = [0.692, 0.477, -0.687, -0.080, -0.0650, -0.167, -0.0129, 0.0796, -0.0634, -0.0257,
          0.0877, -0.0521, 0.00156, 0.00198, 0.0184] + [0] * 7
    c2 = [0.153, -0.322, 0.396, 0.424, 0.0226, 0.175, 0.0185, -0.0701, -0.251, 0.179, 0.0150,
          0.0134, 0.0296, 0.0752, 0.0192] + [0] * 7
    c3 = [0.370, -0.205, 0.0307, 0.108, 1.019, -0.135, 0.0141, 0.0998, 0.208, -0.0301, -0.226,
          0.353, 0, -0.0497, -0.423, 0.202, -0.281, -0.342, -0.245, 0.281, -0.184, -0.281]
    return [float(np.dot(c, terms)) for c in (c1, c2, c3)]


RE_BOXES = {
    "RE21": ([1, np.sqrt(2), np.sqrt(2), 1], [3] * 4, re21_np),
    "RE24": ([0.5, 0.5], [4, 50], re24_np),
    "RE31": ([1e-5, 1e-5, 1], [100, 100, 3], re31_np),
    "RE33": ([55, 75, 1000, 11], [80, 110, 3000, 20], re33_np),
    "RE37": ([0] * 4, [1] * 4, re37_np),
}


@pytest.mark.parametrize("name", sorted(RE_BOXES))
def test_re_losses_vs_numpy_formulas(name):
    lo, hi, oracle = RE_BOXES[name]
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    p = problems.re_problem(name.lower())
    theta = np.random.default_rng(7).uniform(-4, 4, size=(30, lo.size))
    got = np.asarray(jax.jit(jax.vmap(p.loss_fn))(theta))
    want = np.array([oracle(theta_to_box(t, lo, hi)) for t in theta])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
    assert p.pareto_set is None and p.is_pareto_optimal is None
    assert jax.vmap(p.loss_fn)(jnp.asarray(theta[:3], jnp.float32)).dtype == jnp.float32


def test_re_published_points():
    # RE21's ideal point as published with the suite (ideal_point_RE21.dat):
    # f1 is minimal at the lower corner (θ = 0), f2 at x = (3, 3, √2, 3).
    p = problems.re_problem("RE21")
    f_low = np.asarray(p.loss_fn(jnp.zeros(4)))
    f_best2 = np.asarray(p.loss_fn(jnp.array([np.pi, np.pi, 0.0, np.pi])))
    assert f_low[0] == pytest.approx(1237.8414230005742, rel=1e-13)
    assert f_best2[1] == pytest.approx(0.002761423749158419, rel=1e-12)
    # No sampled point beats the ideal point.
    front = np.asarray(p.pareto_front(50))
    assert np.all(front[:, 0] >= 1237.8414230005742 - 1e-9)
    assert np.all(front[:, 1] >= 0.002761423749158419 - 1e-12)
    # RE32 at the welded-beam optimum of Ragsdell & Phillips (1976): cost 1.7249, feasible.
    lo, hi = np.array([0.125, 0.1, 0.1, 0.125]), np.array([5, 10, 10, 5.0])
    x = np.array([0.205730, 3.470489, 9.036624, 0.205730])
    theta = 2 * np.arcsin(np.sqrt((x - lo) / (hi - lo)))
    f = np.asarray(problems.re_problem("RE32").loss_fn(jnp.asarray(theta)))
    assert f[0] == pytest.approx(1.7249, abs=5e-4) and f[2] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("name", problems.RE_PROBLEMS)
def test_re_front_approximation_and_gradients(name):
    p = problems.re_problem(name, num_samples=1024)
    front = np.asarray(p.pareto_front(40), float)
    assert front.shape == (40, p.num_objectives) and np.all(np.isfinite(front))
    # Mutually non-dominated (brute force) and not dominated by fresh random designs.
    assert not np.any(dominated_by_np(front, front))
    theta = np.random.default_rng(9).uniform(0, np.pi, size=(256, p.num_params))
    others = np.asarray(jax.jit(jax.vmap(p.loss_fn))(theta))
    share = np.mean(dominated_by_np(front, others))
    assert share < 0.35  # an approximation: a few points may be beaten (measured ≤ 0.23)
    # Gradients vs central differences at interior points (piecewise smooth: compare
    # where a random step does not cross a kink, i.e. where both one-sided slopes agree).
    th = theta[0] * 0.8 + 0.3
    jac = np.asarray(jax.jacrev(p.loss_fn)(jnp.asarray(th)))
    fd = fd_jacobian(lambda x: p.loss_fn(jnp.asarray(x)), th, h=1e-7)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
