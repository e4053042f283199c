"""The Newton (KKT) corrector, scale-free step control and honest statuses of ``jp.ppe``.

Oracles, independent of the code under test:
* convex quadratics ``l_i = s·½(θ − c_i)ᵀA_i(θ − c_i)`` with a prescribed condition
  number: the Pareto set ``θ*(α) = (Σα_iA_i)⁻¹ Σα_iA_ic_i`` (numpy closed form);
* Pareto-stationarity ``min_{β∈Δ}‖Σβ_i∇l_i‖ / maxᵢ‖∇l_i‖`` by exact face enumeration
  (numpy, ``min_norm_np`` of test_continuation);
* a 2-task logistic regression: ``scipy.optimize.minimize`` on the weighted sum at the
  trace's KKT weights.

All quadratic cases share one loss function and the shapes (m=2, n=8) / (m=3, n=6), so
each ``trace`` executable is compiled once.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import jaxpareto as jp
from tests.test_continuation import min_norm_np

ppe = jp.ppe
Status = ppe.Status


def squad(theta, A, c, scale, bound):
    """Scaled convex quadratics; ``0·log(bound − θ₀)`` is 0 below ``bound`` and NaN beyond."""
    diff = theta[None, :] - c
    return scale * 0.5 * jnp.einsum("mi,mij,mj->m", diff, A, diff) + 0.0 * jnp.log(bound - theta[0])


BIG = jnp.asarray(1e300, jnp.float64)


def conditioned(seed, m, n, kappa):
    rng = np.random.default_rng(seed)
    A = []
    for _ in range(m):
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        A.append(q @ np.diag(np.logspace(0, np.log10(kappa), n)) @ q.T)
    return np.stack(A), rng.normal(size=(m, n))


def theta_star(A, c, alpha):
    return np.linalg.solve(np.einsum("i,ijk->jk", alpha, A), np.einsum("i,ijk,ik->j", alpha, A, c))


def grads(A, c, scale, theta):
    return scale * np.einsum("mij,mj->mi", A, theta[None, :] - c)


def rel_stationarity(G):
    return min_norm_np(G) / np.max(np.linalg.norm(G, axis=1))


def coverage(alpha_start, alpha_end):
    """Fraction of the KKT-weight range from the start to the boundary of the simplex
    that the trace covered: ``1 − α_j(end)/α_j(start)`` for the weight ``j`` that
    vanishes first (m = 2: the whole range of α toward that end)."""
    j = int(np.argmin(alpha_end))
    return 1 - alpha_end[j] / alpha_start[j]


def run_case(A, c, scale, task, num_points=40):
    m = A.shape[0]
    start = theta_star(A, c, np.ones(m) / m)
    tr = ppe.trace(squad, jnp.asarray(start), ppe.improve_direction(m, task), num_points,
                   jnp.asarray(A), jnp.asarray(c), jnp.asarray(scale), BIG)
    K = int(tr.length)
    P = np.asarray(tr.params)[:K]
    al = np.asarray(tr.alpha)[:K]
    L = np.asarray(tr.losses)[:K]
    stat = max(rel_stationarity(grads(A, c, scale, p)) for p in P)
    set_err = max(np.linalg.norm(p - theta_star(A, c, a)) / max(1.0, np.linalg.norm(p))
                  for p, a in zip(P, al))
    return tr, dict(K=K, cov=coverage(al[0], al[-1]), stat=stat, set_err=set_err,
                    mono=bool(np.all(np.diff(L[:, task]) < 0)),
                    newton=np.asarray(tr.corrector_steps)[1:K], reason=tr.reason)


@pytest.mark.parametrize("m,n", [(2, 8), (3, 6)])
def test_quadratics_cover_the_front_at_any_conditioning_and_scale(m, n):
    """A 40-point trace toward each end covers ≥ 90 % of the KKT-weight range, every
    point Pareto-stationary to 1e-6 relative and on the closed-form set, the requested
    loss strictly decreasing, every point converged: κ = 10 … 1e4, scales 1e-3 … 1e3."""
    kappas = (10.0, 1e2, 1e3, 1e4) if m == 2 else (10.0, 1e4)
    scales = (1e-3, 1.0, 1e3) if m == 2 else (1e-3, 1e3)
    rows = []
    for i, kappa in enumerate(kappas):
        A, c = conditioned(40 + i, m, n, kappa)
        for scale in scales:
            for task in range(m) if m == 2 else (0, 2):
                tr, r = run_case(A, c, scale, task)
                rows.append((kappa, scale, task, r))
                assert r["reason"] == Status.END_OF_FRONT, (kappa, scale, task, r)
                assert r["cov"] >= 0.9 and r["stat"] <= 1e-6 and r["mono"], (kappa, scale, task, r)
                assert r["set_err"] <= 1e-6, (kappa, scale, task, r)
                assert np.all(np.asarray(tr.converged)[:r["K"]])
    for kappa, scale, task, r in rows:
        print(f"m={m} κ={kappa:g} scale={scale:g} task {task}: {r['K']} points, coverage "
              f"{100 * r['cov']:.1f} %, rel. stationarity {r['stat']:.1e}, Newton its/point "
              f"mean {r['newton'].mean():.2f} max {r['newton'].max()}")


def test_loss_scale_gives_the_same_trace_up_to_the_factor():
    A, c = conditioned(50, 2, 8, 1e3)
    base, _ = run_case(A, c, 1.0, 0)
    K = int(base.length)
    for scale in (1e-3, 1e3):
        tr, _ = run_case(A, c, scale, 0)
        assert int(tr.length) == K
        np.testing.assert_allclose(np.asarray(tr.losses)[:K] / scale,
                                   np.asarray(base.losses)[:K], rtol=1e-7,
                                   atol=1e-12 * float(np.abs(np.asarray(base.losses)).max()))
        np.testing.assert_allclose(np.asarray(tr.params)[:K], np.asarray(base.params)[:K],
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(np.asarray(tr.alpha)[:K], np.asarray(base.alpha)[:K],
                                   atol=1e-8)


def test_newton_corrector_standalone_from_a_perturbed_point():
    """Newton on the KKT system with the loss constraint: few iterations at κ = 1e4,
    onto the closed-form set; the α constraint lands on θ*(α) exactly."""
    A, c = conditioned(51, 2, 8, 1e4)
    alpha = np.array([0.3, 0.7])
    th = theta_star(A, c, alpha)
    rng = np.random.default_rng(0)
    start = th + 1e-2 * rng.normal(size=8)
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG)
    res = ppe.corrector(squad, jnp.asarray(start), *args, method="kkt", alpha=jnp.asarray(alpha))
    assert bool(res.converged) and int(res.status) == Status.CONVERGED
    p = np.asarray(res.params)
    assert rel_stationarity(grads(A, c, 1.0, p)) <= 1e-8
    assert np.linalg.norm(p - theta_star(A, c, np.asarray(res.alpha))) <= 1e-8
    assert int(res.steps) <= 6
    fixed = ppe.corrector(squad, jnp.asarray(start), *args, method="kkt",
                          alpha=jnp.asarray(alpha), constraint="alpha")
    np.testing.assert_allclose(np.asarray(fixed.params), th, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(fixed.alpha), alpha, atol=1e-14)
    print(f"Newton from a perturbed point at κ=1e4: {int(res.steps)} iterations, "
          f"{int(res.hvps)} HVPs; α fixed: {int(fixed.steps)} iterations")


# ---------------------------------------------------------------- logistic regression


def logistic_data(seed=0, n_samples=200, n_features=10):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    w1, w2 = rng.normal(size=n_features), rng.normal(size=n_features)
    y1 = (X @ w1 + 0.5 * rng.normal(size=n_samples) > 0).astype(float)
    y2 = (X @ w2 + 0.5 * rng.normal(size=n_samples) > 0).astype(float)
    return X, np.stack([y1, y2])


REG = 1e-2


def logreg_losses(w, X, Y):
    z = X @ w
    nll = jnp.mean(jnp.logaddexp(0.0, z)[None, :] - Y * z[None, :], axis=1)
    return nll + 0.5 * REG * jnp.sum(w**2)


def np_weighted_solution(X, Y, alpha):
    def f(w):
        z = X @ w
        nll = np.mean(np.logaddexp(0.0, z)[None, :] - Y * z[None, :], axis=1)
        return float(alpha @ (nll + 0.5 * REG * w @ w))

    def g(w):
        z = X @ w
        p = 1 / (1 + np.exp(-z))
        return sum(a * (X.T @ (p - y) / len(y) + REG * w) for a, y in zip(alpha, Y))

    return optimize.minimize(f, np.zeros(X.shape[1]), jac=g, method="BFGS",
                             options={"gtol": 1e-12, "maxiter": 2000}).x


def test_logistic_regression_covers_the_front():
    X, Y = logistic_data()
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    start = np_weighted_solution(X, Y, np.array([0.5, 0.5]))
    for task in (0, 1):
        tr = ppe.trace(logreg_losses, jnp.asarray(start), ppe.improve_direction(2, task), 40,
                       Xj, Yj)
        K = int(tr.length)
        al = np.asarray(tr.alpha)[:K]
        P = np.asarray(tr.params)[:K]
        cov = coverage(al[0], al[-1])
        worst = 0.0
        for p, a in zip(P[:: max(1, K // 6)], al[:: max(1, K // 6)]):
            worst = max(worst, np.linalg.norm(p - np_weighted_solution(X, Y, a)))
        G = np.asarray(jax.vmap(lambda p: jax.jacrev(logreg_losses)(p, Xj, Yj))(tr.params))[:K]
        stat = max(rel_stationarity(g) for g in G)
        newton = np.asarray(tr.corrector_steps)[1:K]
        print(f"logistic task {task}: {K} points, {tr.reason!r}, coverage {100 * cov:.1f} %, "
              f"rel. stationarity {stat:.1e}, scipy distance {worst:.1e}, Newton its/point "
              f"max {newton.max()}")
        assert tr.reason == Status.END_OF_FRONT and cov >= 0.9
        assert stat <= 1e-6 and worst <= 1e-5
        assert np.all(np.diff(np.asarray(tr.losses)[:K, task]) < 0)
        assert np.all(np.asarray(tr.converged)[:K]) and newton.max() <= 4


# ------------------------------------------------------------------------ bad inputs


def test_far_non_pareto_start_is_corrected_or_reported():
    A, c = conditioned(52, 2, 8, 1e2)
    start = 30.0 * np.random.default_rng(1).normal(size=8)
    tr = ppe.trace(squad, jnp.asarray(start), ppe.improve_direction(2, 0), 40, jnp.asarray(A),
                   jnp.asarray(c), jnp.asarray(1.0), BIG)
    for leaf in (tr.params, tr.losses, tr.alpha, tr.stationarity):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert isinstance(tr.reason, Status)
    if bool(tr.converged[0]):
        p0 = np.asarray(tr.params[0])
        assert rel_stationarity(grads(A, c, 1.0, p0)) <= 1e-6
        assert tr.reason == Status.END_OF_FRONT
    else:
        assert tr.reason in (Status.CORRECTOR_FAILED, Status.NON_FINITE)
    print(f"far start: {tr.summary()}")


def test_nan_during_correction_is_named_and_warned():
    A, c = conditioned(53, 2, 8, 10.0)
    start = theta_star(A, c, np.array([0.5, 0.5]))
    if c[0, 0] < start[0]:  # make θ₀ grow toward task 0's minimiser
        flip = np.diag([-1.0] + [1.0] * 7)
        A, c, start = flip @ A @ flip, c @ flip, flip @ start
    bound = jnp.asarray(0.5 * (start[0] + c[0, 0]))
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), bound)
    tr = ppe.trace(squad, jnp.asarray(start), ppe.improve_direction(2, 0), 40, *args)
    K = int(tr.length)
    for leaf in (tr.params, tr.losses, tr.alpha, tr.stationarity, tr.cost):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert tr.reason in (Status.STEP_TOO_SMALL, Status.MAX_POINTS)
    assert Status(int(tr.failure)) == Status.NON_FINITE
    assert np.all(np.asarray(tr.params)[:K, 0] < float(bound))
    assert np.all(np.asarray(tr.converged)[:K])
    nav = ppe.Navigator(squad, jnp.asarray(start), *args, max_points=40)
    with pytest.warns(ppe.PPEWarning, match="NON_FINITE|budget"):
        move = nav.improve(0, 1e6)
    assert np.all(np.isfinite(np.asarray(nav.losses)))
    assert repr(move.reason).startswith("Status.")


def test_direction_without_component_along_the_front():
    A, c = conditioned(54, 2, 8, 10.0)
    start = theta_star(A, c, np.array([0.4, 0.6]))
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG)
    # d = −α (lower every loss along the normal): no first-order move along the front.
    alpha = np.array([0.4, 0.6])
    tr = ppe.trace(squad, jnp.asarray(start), jnp.asarray(-alpha), 40, *args)
    assert int(tr.length) == 1 and tr.reason == Status.NO_PROGRESS
    assert np.all(np.isfinite(np.asarray(tr.params)))
    # The Navigator at the end of the front, asked to improve further: a warned no-op.
    nav = ppe.Navigator(squad, jnp.asarray(c[0]), *args, max_points=40)
    with pytest.warns(ppe.PPEWarning, match="no step"):
        move = nav.improve(0, 0.1)
    assert move.reason in (Status.END_OF_FRONT, Status.NO_PROGRESS)
    np.testing.assert_array_equal(np.asarray(nav.params), np.asarray(nav.history[0].params[0]))


# ------------------------------------------------------------------------- navigator


def test_navigator_state_agrees_and_undo_is_bitwise():
    A, c = conditioned(55, 3, 6, 1e2)
    start = theta_star(A, c, np.ones(3) / 3)
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppe.PPEWarning)
        nav = ppe.Navigator(squad, jnp.asarray(start), *args, max_points=40)
        p0 = np.asarray(nav.params)
        l_before = np.asarray(nav.losses)
        m1 = nav.improve(1, 0.2 * float(l_before[1]))
        assert m1.reason == Status.TARGET_REACHED
        np.testing.assert_allclose(float(nav.losses[1]), 0.8 * l_before[1], rtol=1e-7)
        m2 = nav.toward(jnp.asarray([1.0, 2.0, 1.5]))
        assert m2.reason == Status.TARGET_REACHED
    front = nav.front
    assert front.shape[0] == 1 + (int(m1.length) - 1) + (int(m2.length) - 1)
    np.testing.assert_array_equal(front[-1], np.asarray(nav.losses))
    np.testing.assert_allclose(np.asarray(squad(nav.params, *args)), np.asarray(nav.losses),
                               rtol=1e-14)
    # every move starts exactly where the previous one ended
    np.testing.assert_array_equal(np.asarray(m2.params[0]), np.asarray(m1.params[int(m1.length) - 1]))
    for t in nav.history[1:]:
        K = int(t.length)
        assert np.all(np.asarray(t.converged)[:K])
        for p in np.asarray(t.params)[:K]:
            assert rel_stationarity(grads(A, c, 1.0, p)) <= 1e-6
    nav.undo()
    np.testing.assert_array_equal(np.asarray(nav.params), np.asarray(m1.params[int(m1.length) - 1]))
    nav.undo()
    np.testing.assert_array_equal(np.asarray(nav.params), p0)
    assert nav.front.shape == (1, 3)


def test_status_names_and_reprs():
    assert repr(Status.CONVERGED) == "Status.CONVERGED" and str(Status.END_OF_FRONT) == "END_OF_FRONT"
    assert ppe.BUDGET == Status.MAX_POINTS == 0 and ppe.STEP_TOO_SMALL == 4
    assert all(isinstance(s.message, str) and s.message for s in Status)


# ------------------------------------------------------------------- slow (pytest -m slow)


@pytest.mark.slow
@pytest.mark.parametrize("kappa", [1e2, 1e4])
def test_quadratics_n1000(kappa):
    n = 1000
    A, c = conditioned(60, 2, n, kappa)
    start = theta_star(A, c, np.array([0.5, 0.5]))
    for task in (0, 1):
        tr = ppe.trace(squad, jnp.asarray(start), ppe.improve_direction(2, task), 40,
                       jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG,
                       gmres_maxiter=2000, gmres_restart=100)
        K = int(tr.length)
        al = np.asarray(tr.alpha)[:K]
        P = np.asarray(tr.params)[:K]
        stat = max(rel_stationarity(grads(A, c, 1.0, p)) for p in P)
        cov = coverage(al[0], al[-1])
        print(f"n={n} κ={kappa:g} task {task}: {tr.summary()}, coverage {100 * cov:.1f} %, "
              f"stationarity {stat:.1e}")
        assert cov >= 0.9 and stat <= 1e-6
