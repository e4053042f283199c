"""The Newton (KKT) corrector, scale-free step control and honest statuses of ``jp.ppe``.

Oracles, independent of the code under test:
* convex quadratics ``l_i = s·½(θ − c_i)ᵀA_i(θ − c_i)`` with a prescribed condition
  number: the Pareto set ``θ*(α) = (Σα_iA_i)⁻¹ Σα_iA_ic_i`` (numpy closed form);
* Pareto-stationarity ``min_{β∈Δ}‖Σβ_i∇l_i‖ / maxᵢ‖∇l_i‖`` by exact face enumeration
  (numpy, ``min_norm_np`` of test_continuation);
* a 2-task logistic regression: ``scipy.optimize.minimize`` on the weighted sum at the
  trace's KKT weights.

The larger cases (float32, chunked data, the MLP, n = 1000) are
marked slow: ``pytest -m slow tests/test_ppe_newton.py``.

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
    # One enum for every solver: jp.ppe.Status is jp.Status, the old names are its members.
    assert Status is jp.Status and ppe.BUDGET is Status.MAX_POINTS is ppe.MAX_POINTS
    assert ppe.STEP_TOO_SMALL is Status.STEP_TOO_SMALL and jp.weighting.OPTIMAL is Status.SUCCESSFUL
    assert len({int(s) for s in Status}) == len(Status)  # no value aliases two names
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


# ------------------------------------------------- more bad inputs: rays, NaN, float32


def shifted_quad(theta, A, c, shift):
    """Quadratics plus a constant per task: the front runs from ``shift + (0, l₁(c₀))`` to
    ``shift + (l₀(c₁), 0)``, so a ray steeper than its ends misses it."""
    diff = theta[None, :] - c
    return 0.5 * jnp.einsum("mi,mij,mj->m", diff, A, diff) + shift


def test_unreachable_preference_ray_is_named_and_warned():
    A, c = conditioned(56, 2, 8, 10.0)
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray([1.0, 1.0]))
    start = theta_star(A, c, np.array([0.5, 0.5]))
    l_end = np.asarray(shifted_quad(jnp.asarray(c[0]), *args))  # task 0's end of the front
    pref = jnp.asarray([1.0, 0.1 * l_end[0] / l_end[1]])  # ray l₁/l₀ = 10·(ratio at the end)
    tr = ppe.trace(shifted_quad, jnp.asarray(start), "toward", 40, *args, preference=pref)
    K = int(tr.length)
    for leaf in (tr.params, tr.losses, tr.alpha, tr.cost):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert tr.reason == Status.END_OF_FRONT, tr.summary()
    assert np.all(np.asarray(tr.converged)[:K])
    np.testing.assert_allclose(np.asarray(tr.losses)[K - 1], l_end, rtol=1e-6)  # closest end
    nav = ppe.Navigator(shifted_quad, jnp.asarray(start), *args, max_points=40)
    with pytest.warns(ppe.PPEWarning, match="ray is not reachable"):
        move = nav.toward(pref)
    assert move.reason == Status.END_OF_FRONT
    np.testing.assert_array_equal(np.asarray(nav.front[-1]), np.asarray(nav.losses))
    print(f"unreachable ray: {tr.summary()}")


def test_nan_at_every_newton_trial_gives_non_finite_and_finite_params():
    """``0·log(bound − θ₀)`` is NaN beyond ``bound``, set just above the start: the Newton
    step (which raises θ₀) and every backtracked trial land in the NaN region."""
    A, c = conditioned(51, 2, 8, 1e4)  # the shapes of the standalone Newton test
    alpha = np.array([0.3, 0.7])
    th = theta_star(A, c, alpha)
    start = th.copy()
    start[0] -= 1e-2
    bound = jnp.asarray(start[0] + 1e-14 * max(1.0, abs(start[0])))
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), bound)
    res = ppe.corrector(squad, jnp.asarray(start), *args, method="kkt", alpha=jnp.asarray(alpha),
                        constraint="alpha")
    assert int(res.status) == Status.NON_FINITE and bool(res.degenerate)
    assert not bool(res.converged)
    np.testing.assert_array_equal(np.asarray(res.params), start)  # the last finite iterate
    for leaf in (res.losses, res.alpha, res.cost):
        assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.slow  # compiles a new trace (run with -m slow)
def test_float32_quadratics_stationary_to_1e_3():
    """float32 data and parameters: every point Pareto-stationary to 1e-3 relative
    (checked in float64), the requested loss decreasing, most of the front covered."""
    bound32 = jnp.asarray(np.finfo(np.float32).max / 4, jnp.float32)
    rows = []
    for i, kappa in enumerate((10.0, 1e4)):
        A, c = conditioned(40 + i, 2, 8, kappa)
        for scale in (1e-3, 1e3):
            start = theta_star(A, c, np.array([0.5, 0.5]))
            for task in (0, 1):
                f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
                tr = ppe.trace(squad, f32(start), ppe.improve_direction(2, task, dtype=jnp.float32),
                               40, f32(A), f32(c), f32(scale), bound32)
                assert tr.losses.dtype == jnp.float32
                K = int(tr.length)
                P = np.asarray(tr.params, np.float64)[:K]
                al = np.asarray(tr.alpha, np.float64)[:K]
                stat = max(rel_stationarity(grads(A, c, scale, p)) for p in P)
                cov = coverage(al[0], al[-1])
                rows.append((kappa, scale, task, K, tr.reason, cov, stat))
                assert stat <= 1e-3, rows[-1]
                assert np.all(np.diff(np.asarray(tr.losses, np.float64)[:K, task]) <= 0), rows[-1]
                assert cov >= 0.9, rows[-1]
    for r in rows:
        print("float32 κ={:g} scale={:g} task {}: {} points, {!r}, coverage {:.1%}, rel. "
              "stationarity {:.1e}".format(*r))


# ------------------------------------------------------ chunked (mini-batch) navigation


@pytest.mark.slow  # compiles a new trace (run with -m slow)
def test_chunked_data_equals_the_full_batch():
    """Losses, gradients and HVPs averaged over 4 chunks of 50 samples (``batches=``,
    ``lax.map``) give the full-batch tangent and trace to 1e-12; an iterator of chunks is
    the same as the stacked tuple."""
    X, Y = logistic_data()
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    start = jnp.asarray(np_weighted_solution(X, Y, np.array([0.5, 0.5])))

    def chunk_losses(w, Xb, Yb):  # one chunk: Xb [50, 10], Yb [50, 2]
        return logreg_losses(w, Xb, Yb.T)

    Xb = Xj.reshape(4, 50, 10)
    Yb = Yj.T.reshape(4, 50, 2)
    from jaxpareto.ppe._common import _with_batches
    fn, args = _with_batches(chunk_losses, (), (Xb, Yb))
    np.testing.assert_allclose(np.asarray(fn(start, *args)),
                               np.asarray(logreg_losses(start, Xj, Yj)), rtol=1e-14)
    alpha = jnp.asarray([0.5, 0.5])
    d = ppe.improve_direction(2, 0)
    full_t = ppe.tangent(logreg_losses, start, alpha, d, Xj, Yj)
    chunk_t = ppe.tangent(chunk_losses, start, alpha, d, batches=(Xb, Yb))
    np.testing.assert_allclose(np.asarray(chunk_t.s_matrix), np.asarray(full_t.s_matrix),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(chunk_t.v), np.asarray(full_t.v), rtol=1e-12,
                               atol=1e-12 * float(jnp.max(jnp.abs(full_t.v))))
    it = ((Xb[b], Yb[b]) for b in range(4))
    iter_t = ppe.tangent(chunk_losses, start, alpha, d, batches=it)
    np.testing.assert_array_equal(np.asarray(iter_t.v), np.asarray(chunk_t.v))

    full = ppe.trace(logreg_losses, start, d, 40, Xj, Yj)
    chunked = ppe.trace(chunk_losses, start, d, 40, batches=(Xb, Yb))
    K = int(full.length)
    assert int(chunked.length) == K and chunked.reason == full.reason
    for name in ("losses", "params", "alpha"):
        a, b = np.asarray(getattr(chunked, name))[:K], np.asarray(getattr(full, name))[:K]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max(), err_msg=name)
    # The Navigator takes the same option (and reuses the chunked trace's executable).
    nav = ppe.Navigator(chunk_losses, start, batches=(Xb, Yb), max_points=40)
    np.testing.assert_allclose(np.asarray(nav.losses), np.asarray(full.losses[0]), rtol=1e-12)
    print(f"chunked trace (4 × 50 samples): {chunked.summary()}")


# ---------------------------------------------------------------- GMRES preconditioner


def test_hutchinson_preconditioner_effect():
    """GMRES iterations of the tangent solves on n = 100 quadratics with κ(H) = 1e4,
    without and with the Hutchinson diagonal preconditioner (8 probes). Axis-aligned
    (badly scaled coordinates): a large saving; randomly rotated (no diagonal structure):
    no saving, reported, not asserted beyond convergence."""
    n = 100
    rng = np.random.default_rng(7)
    scales = np.logspace(0, 4, n)
    rng.shuffle(scales)

    def family(kind):
        mats = []
        for _ in range(2):
            if kind == "axis-aligned":
                e = 0.01 * rng.normal(size=(n, n))
                mats.append(np.sqrt(scales)[:, None] * (np.eye(n) + (e + e.T) / 2)
                            * np.sqrt(scales)[None, :])
            else:
                q, _ = np.linalg.qr(rng.normal(size=(n, n)))
                mats.append(q @ np.diag(scales) @ q.T)
        return np.stack(mats), rng.normal(size=(2, n))

    out = {}
    for kind in ("axis-aligned", "rotated"):
        A, c = family(kind)
        alpha = np.array([0.5, 0.5])
        kappa = np.linalg.cond(np.einsum("i,ijk->jk", alpha, A))
        th = theta_star(A, c, alpha)
        args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG)
        for pc in (None, "hutchinson"):
            t = ppe.tangent(squad, jnp.asarray(th), jnp.asarray(alpha), ppe.improve_direction(2, 0),
                            *args, maxiter=3000, restart=50, preconditioner=pc)
            assert bool(jnp.all(t.converged)), (kind, pc)
            out[kind, pc] = (int(jnp.max(t.iterations)), float(t.cost), kappa, t)
        np.testing.assert_allclose(np.asarray(out[kind, "hutchinson"][3].v),
                                   np.asarray(out[kind, None][3].v), rtol=1e-6, atol=1e-8)
    for (kind, pc), (its, cost, kappa, _) in out.items():
        print(f"{kind} κ={kappa:.1e} preconditioner={pc}: {its} GMRES iterations per solve, "
              f"cost {cost:.0f}")
    assert out["axis-aligned", "hutchinson"][0] * 5 <= out["axis-aligned", None][0]


# ------------------------------------------------------------- jitted eager entry points


def test_eager_corrector_and_tangent_do_not_recompile():
    A, c = conditioned(51, 2, 8, 1e4)
    alpha = jnp.asarray([0.3, 0.7])
    th = theta_star(A, c, np.asarray(alpha))
    args = (jnp.asarray(A), jnp.asarray(c), jnp.asarray(1.0), BIG)
    counts = ppe._common.TRACE_COUNTS
    for i in range(3):
        start = jnp.asarray(th + 1e-3 * (i + 1))
        ppe.corrector(squad, start, *args, method="kkt", alpha=alpha)
        ppe.tangent(squad, jnp.asarray(th), alpha, ppe.improve_direction(2, i % 2), *args)
        if i == 0:
            first = dict(counts)
    assert counts["corrector"] == first["corrector"] and counts["tangent"] == first["tangent"]
    # A new shape compiles again, once.
    ppe.tangent(squad, jnp.asarray(th[:6]), alpha, ppe.improve_direction(2, 0),
                jnp.asarray(A[:, :6, :6]), jnp.asarray(c[:, :6]), jnp.asarray(1.0), BIG)
    assert counts["tangent"] == first["tangent"] + 1


# -------------------------------------------------------------------- a small MLP


MLP_REG = 1e-3


def mlp_losses(t, X, Y):
    """A 4-8-2 tanh MLP (58 parameters, one flat vector), one output per task: the two
    tasks' half mean squared errors plus a small L2 penalty on all weights."""
    W1, b1, W2, b2 = t[:32].reshape(4, 8), t[32:40], t[40:56].reshape(8, 2), t[56:58]
    out = jnp.tanh(X @ W1 + b1) @ W2 + b2
    return 0.5 * jnp.mean((out - Y) ** 2, axis=0) + 0.5 * MLP_REG * jnp.sum(t**2)


@pytest.mark.slow
def test_small_mlp_front_or_named_fold():
    """From a BFGS-trained α = ½ model (weighted sum, gradient ≤ 1e-10), trace toward each
    end with full GMRES (restart = n = 58). Each direction either covers ≥ 90 % of the
    KKT-weight range or stops with a named status at a fold of the weighted-sum minimiser
    branch: there ``H_α`` at the last point is nearly singular (its smallest eigenvalue
    below 1e-3 of the largest; past it the Pareto-critical branch is a saddle of the
    weighted sum). Every recorded point is converged and stationary to 1e-6 relative."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    T = rng.normal(size=(4, 2))
    Y = np.stack([np.sin(X @ T[:, 0]), np.tanh(X @ T[:, 1]) + 0.3 * X[:, 2]], 1)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    half = jnp.asarray([0.5, 0.5])
    f = jax.jit(lambda t: half @ mlp_losses(t, Xj, Yj))
    g = jax.jit(jax.grad(f))
    fit = optimize.minimize(lambda t: float(f(jnp.asarray(t))), 0.5 * rng.normal(size=58),
                            jac=lambda t: np.asarray(g(jnp.asarray(t))), method="BFGS",
                            options={"gtol": 1e-11, "maxiter": 5000})
    for task in (0, 1):
        tr = ppe.trace(mlp_losses, jnp.asarray(fit.x), ppe.improve_direction(2, task), 40, Xj, Yj,
                       gmres_restart=58, gmres_maxiter=240)
        K = int(tr.length)
        al = np.asarray(tr.alpha)[:K]
        G = np.asarray(jax.vmap(lambda p: jax.jacrev(mlp_losses)(p, Xj, Yj))(tr.params))[:K]
        stat = max(rel_stationarity(x) for x in G)
        cov = coverage(al[0], al[-1])
        last = tr.params[K - 1]
        hess = np.asarray(jax.hessian(lambda t: jnp.asarray(al[-1]) @ mlp_losses(t, Xj, Yj))(last))
        eig = np.linalg.eigvalsh(hess)
        ratio = eig[0] / eig[-1]
        print(f"MLP task {task}: {tr.summary()}; coverage {cov:.1%}, rel. stationarity "
              f"{stat:.1e}, last α {al[-1].round(4)}, λ_min/λ_max(H_α) there {ratio:.1e}")
        assert np.all(np.asarray(tr.converged)[:K]) and stat <= 1e-6
        assert np.all(np.diff(np.asarray(tr.losses)[:K, task]) < 0)
        if cov < 0.9:
            assert tr.reason in (Status.STEP_TOO_SMALL, Status.END_OF_FRONT, Status.NO_PROGRESS)
            assert Status(int(tr.failure)) in (Status.CORRECTOR_FAILED,
                                               Status.GMRES_NOT_CONVERGED, Status.NONE)
            assert ratio <= 1e-3, ratio
