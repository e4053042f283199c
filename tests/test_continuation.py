"""Tests for jaxpareto.continuation (PPE: HVP, GMRES, tangent, corrector, trace, Navigator).

Oracles, all independent of the code under test:
* convex quadratics ``l_i = ½(θ − c_i)ᵀA_i(θ − c_i)``: the Pareto set is
  ``θ(α) = (Σα_iA_i)⁻¹ Σα_iA_ic_i`` (numpy closed form); tangents are checked against
  central finite differences of that closed form, front points against an
  ε-constraint solve (brentq on α) or a scipy root on the preference ray;
* Pareto-stationarity ``min_{β∈Δ}‖Σβ_i∇l_i‖`` by exact face enumeration with
  least squares on the gradient vectors (numpy), not through the library;
* dense Hessians (``jax.hessian``) and finite differences of gradients for HVPs;
* ``numpy.linalg.solve`` for GMRES;
* the EPO synthetic problem's analytic Pareto set ``θ = t·𝟙/√n`` and KKT weights.

Compile time dominates on CPU: all quadratic tests share one module-level loss function
and the shapes (m=2, n=8) / (m=3, n=6) so that ``trace``'s cached executable is reused.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import jaxpareto as jp
from jaxpareto import continuation as ppe

BIG = jnp.asarray(1e300, jnp.float64)  # "no barrier" value of the quadratic's barrier argument


def quad(theta, A, c, bound):
    """m convex quadratics; ``0·log(bound − θ₀)`` is exactly 0 (with zero derivatives)
    while ``θ₀ < bound`` and NaN beyond: a region where the losses are undefined."""
    diff = theta[None, :] - c
    barrier = 0.0 * jnp.log(bound - theta[0])
    return 0.5 * jnp.einsum("mi,mij,mj->m", diff, A, diff) + barrier


def random_spd(rng, n, lo=0.5, hi=2.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q @ np.diag(rng.uniform(lo, hi, n)) @ q.T


def quadratics(seed, m, n):
    rng = np.random.default_rng(seed)
    A = np.stack([random_spd(rng, n) for _ in range(m)])
    c = rng.normal(size=(m, n))
    return A, c


def theta_of(A, c, alpha):
    M = np.einsum("i,ijk->jk", alpha, A)
    r = np.einsum("i,ijk,ik->j", alpha, A, c)
    return np.linalg.solve(M, r)


def np_losses(A, c, theta):
    diff = theta[None, :] - c
    return 0.5 * np.einsum("mi,mij,mj->m", diff, A, diff)


def np_grads(A, c, theta):
    return np.einsum("mij,mj->mi", A, theta[None, :] - c)


def min_norm_np(G):
    """``min_{β∈Δ} ‖Gᵀβ‖`` for gradient rows ``G [m, n]``, exact by face enumeration.

    On each face ``S`` the affine minimiser is a least-squares problem on the vectors
    themselves (no Gramian, so no sqrt(eps) floor); the best feasible one wins.
    """
    m = G.shape[0]
    best = np.inf
    for size in range(1, m + 1):
        for face in itertools.combinations(range(m), size):
            g0 = G[face[0]]
            if size == 1:
                beta_face = np.ones(1)
            else:
                D = np.stack([G[j] - g0 for j in face[1:]], axis=1)
                z = np.linalg.lstsq(D, -g0, rcond=None)[0]
                beta_face = np.concatenate([[1 - z.sum()], z])
            if np.all(beta_face >= -1e-12):
                beta = np.zeros(m)
                beta[list(face)] = np.clip(beta_face, 0, None)
                beta /= beta.sum()
                best = min(best, np.linalg.norm(G.T @ beta))
    return best


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------- HVP


def mlp_losses(params, x):
    h = jnp.tanh(x @ params["w"] + params["b"])
    return jnp.stack([jnp.sum(h**2), jax.nn.logsumexp(h).sum(), jnp.sum(jnp.sin(h[:, 0]) ** 2)])


def _flat_weighted(alpha, x, params_like):
    flat, unravel = jax.flatten_util.ravel_pytree(params_like)
    return flat, lambda f: jnp.dot(alpha, mlp_losses(unravel(f), x))


@jax.jit
def dense_hvp_and_fd(params, alpha, v, x):
    """Oracles: dense Hessian (jax.hessian) times v, and central differences of ∇."""
    flat, scalar = _flat_weighted(alpha, x, params)
    vflat = jax.flatten_util.ravel_pytree(v)[0]
    grad = jax.grad(scalar)
    h = 1e-5
    fd = (grad(flat + h * vflat) - grad(flat - h * vflat)) / (2 * h)
    return jax.hessian(scalar)(flat) @ vflat, fd


def random_mlp_point(rng, batch=()):
    params = {"w": jnp.asarray(rng.normal(size=batch + (3, 2))),
              "b": jnp.asarray(rng.normal(size=batch + (2,)))}
    return params


@pytest.mark.parametrize("wrap", ["jit+vmap", pytest.param("eager", marks=pytest.mark.slow)])
def test_hvp_matches_dense_hessian_and_finite_differences(wrap):
    """Pytree params, m = 3 non-quadratic losses; several vectors v per point (vmapped)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 3)))
    if wrap == "jit+vmap":
        hv = jax.jit(jax.vmap(lambda p, a, v: ppe.hvp(mlp_losses, p, a, v, x), (None, None, 0)))
        points, per_point = 4, 3
    else:
        hv, points, per_point = (lambda p, a, v: ppe.hvp(mlp_losses, p, a, v, x)), 1, 1
    worst_dense = worst_fd = 0.0
    for _ in range(points):
        params = random_mlp_point(rng)
        alpha = jnp.asarray(rng.dirichlet(np.ones(3)))
        vs = random_mlp_point(rng, (per_point,) if wrap == "jit+vmap" else ())
        out = hv(params, alpha, vs)
        for i in range(per_point):
            pick = (lambda t: t[i]) if wrap == "jit+vmap" else (lambda t: t)
            v = jax.tree_util.tree_map(pick, vs)
            got = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(pick, out))[0]
            dense, fd = dense_hvp_and_fd(params, alpha, v, x)
            scale = float(jnp.linalg.norm(dense))
            worst_dense = max(worst_dense, float(jnp.linalg.norm(got - dense)) / scale)
            worst_fd = max(worst_fd, float(jnp.linalg.norm(got - fd)) / scale)
    assert worst_dense < 1e-12
    assert worst_fd < 1e-8


# ----------------------------------------------------------------------------- GMRES


gmres_batch = jax.jit(
    jax.vmap(lambda M, b, restart, maxiter: ppe.gmres(lambda x: M @ x, b, restart=restart,
                                                      maxiter=maxiter),
             in_axes=(None, 0, None, None)),
    static_argnums=2,
)


def test_gmres_against_numpy_solve():
    rng = np.random.default_rng(2)
    n = 12
    nonsym = np.eye(n) * 5 + 0.5 * rng.normal(size=(n, n))
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    indefinite = q @ np.diag(np.concatenate([-np.linspace(1, 3, 5), np.linspace(0.5, 4, 7)])) @ q.T
    bs = rng.normal(size=(4, n))
    # Restarted GMRES(4) suits the (positive-real) nonsymmetric matrix; on a symmetric
    # indefinite one restarting can stagnate, so that one gets the full Krylov space.
    for M, restart in ((nonsym, 4), (indefinite, n)):
        res = gmres_batch(jnp.asarray(M), jnp.asarray(bs), restart, 200)
        for i in range(len(bs)):
            exact = np.linalg.solve(M, bs[i])
            x = np.asarray(res.x[i])
            true_rel = np.linalg.norm(bs[i] - M @ x) / np.linalg.norm(bs[i])
            bound = 2 * np.linalg.cond(M) * 1e-10  # forward error ≤ κ · backward error
            assert np.linalg.norm(x - exact) <= bound * np.linalg.norm(exact)
            assert bool(res.converged[i]) and true_rel <= 1e-10
            np.testing.assert_allclose(float(res.residual[i]), true_rel, rtol=1e-3, atol=1e-15)
            assert 0 < int(res.iterations[i]) <= (200 if restart < n else n + 1)


def test_gmres_zero_rhs_and_iteration_cap():
    M = jnp.asarray(np.diag(np.linspace(1e-3, 1, 12)))
    # same batch shape as above: the executable is reused
    res = gmres_batch(M, jnp.stack([jnp.zeros(12), jnp.ones(12), jnp.ones(12), jnp.ones(12)]), 4, 3)
    assert int(res.iterations[0]) == 0 and bool(res.converged[0])
    assert np.all(np.asarray(res.x[0]) == 0)
    assert not bool(res.converged[1])
    assert int(res.iterations[1]) <= 3 + 1  # the cap, plus the closing residual product
    # named statuses: the zero right-hand side converged, the capped solve did not
    assert jp.Status(int(res.status[0])) is jp.Status.SUCCESSFUL
    assert jp.Status(int(res.status[1])) is jp.Status.MAX_ITER
    with pytest.raises(jp.StatusError, match="MAX_ITER"):
        jp.check_status(res)
    x = np.asarray(res.x[1])
    assert np.all(np.isfinite(x))
    # the reported residual is the explicit one
    true_rel = np.linalg.norm(1 - np.asarray(M) @ x) / np.sqrt(12)
    np.testing.assert_allclose(float(res.residual[1]), true_rel, rtol=1e-10)


# --------------------------------------------------------------------------- tangent


def fd_tangent(A, c, alpha, xi, h=1e-5):
    """dθ/ds and dl/ds of the closed-form Pareto set along α(s) = α + s ξ."""
    tp, tm = theta_of(A, c, alpha + h * xi), theta_of(A, c, alpha - h * xi)
    dtheta = (tp - tm) / (2 * h)
    dloss = (np_losses(A, c, tp) - np_losses(A, c, tm)) / (2 * h)
    return dtheta, dloss


def helmert(m):
    q = np.zeros((m, m - 1))
    for j in range(1, m):
        q[:j, j - 1] = 1
        q[j, j - 1] = -j
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return q


@pytest.mark.parametrize("m,n,count", [(2, 8, 8), (3, 6, 6)])
def test_tangent_matches_closed_form_pareto_set(m, n, count):
    """vmapped over random instances: v = dθ/dα·ξ, δl = dl/dα·ξ, and δl is the best
    achievable first-order loss change for the request d (least squares over the
    finite-difference tangent space of the closed form)."""
    rng = np.random.default_rng(10 + m)
    insts = [quadratics(100 * m + i, m, n) for i in range(count)]
    alphas = rng.dirichlet(np.ones(m) * 3, size=count)
    thetas = np.stack([theta_of(A, c, a) for (A, c), a in zip(insts, alphas)])
    ds = rng.normal(size=(count, m))
    As = jnp.asarray(np.stack([A for A, _ in insts]))
    cs = jnp.asarray(np.stack([c for _, c in insts]))
    tangents = jax.jit(jax.vmap(
        lambda th, al, d, A, c: ppe.tangent(quad, th, al, d, A, c, BIG)))(
        jnp.asarray(thetas), jnp.asarray(alphas), jnp.asarray(ds), As, cs)
    worst_cos, worst_v, worst_dl, worst_ls = 1.0, 0.0, 0.0, 0.0
    for i, ((A, c), alpha) in enumerate(zip(insts, alphas)):
        xi = np.asarray(tangents.xi[i])
        v = np.asarray(tangents.v[i])
        assert abs(xi.sum()) < 1e-12
        dtheta, dloss = fd_tangent(A, c, alpha, xi)
        worst_cos = min(worst_cos, cosine(v, dtheta))
        worst_v = max(worst_v, np.linalg.norm(v - dtheta) / np.linalg.norm(dtheta))
        dl = np.asarray(tangents.delta_losses[i])
        worst_dl = max(worst_dl, np.linalg.norm(dl - dloss) / np.linalg.norm(dloss))
        # Oracle for eq. 4: loss-space tangent vectors of the closed form, one per
        # basis direction of {1ᵀξ = 0}; the best first-order change is the LS fit.
        D = np.stack([fd_tangent(A, c, alpha, q)[1] for q in helmert(m).T], axis=1)
        best = D @ np.linalg.lstsq(D, ds[i], rcond=None)[0]
        worst_ls = max(worst_ls, np.linalg.norm(dl - best) / np.linalg.norm(best))
        # S = J H⁻¹ Jᵀ (analytic) and S α = 0 at a Pareto point
        J = np_grads(A, c, thetas[i])
        S = J @ np.linalg.solve(np.einsum("i,ijk->jk", alpha, A), J.T)
        np.testing.assert_allclose(np.asarray(tangents.s_matrix[i]), S, rtol=1e-8, atol=1e-10)
        assert np.linalg.norm(S @ alpha) < 1e-10 * np.linalg.norm(S)
        assert np.all(np.asarray(tangents.converged[i]))
        assert np.all(np.asarray(tangents.residuals[i]) <= 1e-10)
        assert np.all(np.asarray(tangents.iterations[i]) >= 1)
        its = np.asarray(tangents.iterations[i])
        assert float(tangents.cost[i]) == m + 2 * m * its.max()
    print(f"m={m}: worst cos {worst_cos:.16f}, v err {worst_v:.2e}, dl err {worst_dl:.2e}, "
          f"LS err {worst_ls:.2e}, GMRES its {np.asarray(tangents.iterations).max()}")
    assert worst_cos >= 0.9999
    assert worst_v < 1e-6 and worst_dl < 1e-6 and worst_ls < 1e-6


def test_tangent_float32_and_unbatched():
    A, c = quadratics(7, 2, 8)
    alpha = np.array([0.3, 0.7])
    theta = theta_of(A, c, alpha)
    d = np.array([-1.0, 0.0])
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    t = jax.jit(lambda th, al, d, A, c: ppe.tangent(quad, th, al, d, A, c, jnp.float32(1e30),
                                                      batched=False))(
        f32(theta), f32(alpha), f32(d), f32(A), f32(c))
    assert t.v.dtype == jnp.float32 and t.s_matrix.dtype == jnp.float32
    assert t.delta_losses.dtype == jnp.float32 and t.cost.dtype == jnp.float32
    dtheta, dloss = fd_tangent(A, c, alpha, np.asarray(t.xi, np.float64))
    assert cosine(np.asarray(t.v, np.float64), dtheta) >= 0.9999
    assert np.all(np.asarray(t.converged))
    # unbatched cost: m + 2·Σ iterations
    assert float(t.cost) == 2 + 2 * int(np.sum(np.asarray(t.iterations)))


@jax.jit
def tangent_jit(theta, alpha, d, A, c, damping, maxiter):
    return ppe.tangent(quad, theta, alpha, d, A, c, BIG, damping=damping, maxiter=maxiter)


def test_damping_on_singular_hessian():
    """Over-parameterised quadratics: A_i = Bᵀ D_i B with rank 20 < n = 30 and a spread
    spectrum, so H_α is singular and ill-conditioned on its range."""
    rng = np.random.default_rng(3)
    n, k = 30, 20
    B = np.linalg.qr(rng.normal(size=(n, n)))[0][:k]
    spectrum = np.logspace(-6, 0, k)
    A = np.stack([B.T @ np.diag(spectrum * rng.uniform(0.8, 1.25, k)) @ B for _ in range(2)])
    c = rng.normal(size=(2, n))
    alpha = np.array([0.4, 0.6])
    H = np.einsum("i,ijk->jk", alpha, A)
    theta = np.linalg.pinv(H) @ np.einsum("i,ijk,ik->j", alpha, A, c)  # a Pareto point
    assert min_norm_np(np_grads(A, c, theta)) < 1e-10
    d = jnp.asarray([-1.0, 0.0])
    args = (jnp.asarray(theta), jnp.asarray(alpha), d, jnp.asarray(A), jnp.asarray(c))
    plain = tangent_jit(*args, 0.0, 100)
    its0 = np.asarray(plain.iterations)
    figures = []
    for lam in (1e-4, 1e-3, 1e-2):
        damped = tangent_jit(*args, lam, 100)
        its1 = np.asarray(damped.iterations)
        assert np.all(np.asarray(damped.converged))
        dl = np.asarray(damped.delta_losses)
        assert dl[0] < 0 < dl[1]  # still lowers task 0 and raises task 1
        figures.append((lam, its1.tolist(), cosine(dl, np.asarray(plain.delta_losses))))
    print(f"singular H (n={n}, rank {k}): GMRES iterations undamped {its0.tolist()}; "
          + "; ".join(f"λ={lam:g}: {its} (δl cosine {cs:.6f})" for lam, its, cs in figures))
    assert np.all(np.asarray(plain.converged))
    assert figures[-1][1][0] < its0[0] and figures[-1][1][1] < its0[1]
    # Undamped: the min-norm solution H⁺∇l_i (Krylov spaces stay in range(H)).
    J = np_grads(A, c, theta)
    S = J @ np.linalg.pinv(H) @ J.T
    np.testing.assert_allclose(np.asarray(plain.s_matrix), S, rtol=1e-6)
    # An iteration cap works as a regulariser: finite, flagged as not converged.
    capped = tangent_jit(*args, 0.0, 3)
    assert not np.any(np.asarray(capped.converged))
    assert np.all(np.isfinite(np.asarray(capped.v))) and np.all(np.asarray(capped.iterations) <= 4)


def test_tangent_zero_gradients_and_nan_are_flagged():
    A, c = quadratics(4, 2, 30)
    c_same = np.stack([c[0], c[0]])  # common minimiser: every gradient vanishes there
    alpha = jnp.asarray([0.5, 0.5])
    d = jnp.asarray([-1.0, 0.0])
    t = tangent_jit(jnp.asarray(c[0]), alpha, d, jnp.asarray(A), jnp.asarray(c_same), 0.0, 100)
    assert bool(t.degenerate) and bool(t.finite)
    assert np.all(np.asarray(t.v) == 0) and np.all(np.asarray(t.xi) == 0)
    nan = tangent_jit(jnp.full(30, jnp.nan, jnp.float64), alpha, d, jnp.asarray(A),
                      jnp.asarray(c), 0.0, 100)
    assert bool(nan.degenerate) and not bool(nan.finite)
    for leaf in (nan.v, nan.xi, nan.delta_losses, nan.s_matrix):
        assert np.all(np.isfinite(np.asarray(leaf)))


# ------------------------------------------------------------------------- corrector


def test_corrector_mgda_vmap_dominates_start():
    """From perturbed Pareto points, MGDA steps reach Pareto-stationarity and, with the
    Armijo test on every loss, end at a point that dominates the start."""
    A, c = quadratics(5, 2, 8)
    rng = np.random.default_rng(5)
    starts = np.stack([theta_of(A, c, np.array([a, 1 - a])) + 0.3 * rng.normal(size=8)
                       for a in np.linspace(0.1, 0.9, 6)])
    res = jax.jit(jax.vmap(lambda p: ppe.corrector(quad, p, jnp.asarray(A), jnp.asarray(c), BIG)))(
        jnp.asarray(starts))
    for i in range(len(starts)):
        final = np.asarray(res.params[i])
        assert bool(res.converged[i]) and not bool(res.degenerate[i])
        assert min_norm_np(np_grads(A, c, final)) <= 1e-7
        assert np.all(np_losses(A, c, final) <= np_losses(A, c, starts[i]) + 1e-12)
        np.testing.assert_allclose(np.asarray(res.losses[i]), np_losses(A, c, final), rtol=1e-12)
        # cost: one Jacobian (m = 2) per evaluation plus 0.5 per line-search trial
        assert float(res.cost[i]) >= 2 * (int(res.steps[i]) + 1)


def test_corrector_epo_moves_onto_the_ray():
    A, c = quadratics(6, 2, 8)
    start = theta_of(A, c, np.array([0.5, 0.5]))
    r = np.array([1.0, 2.0])
    res = jax.jit(lambda p, A, c, r: ppe.corrector(quad, p, A, c, BIG, method="epo",
                                                   preference=r, steps=500, lr=0.1))(
        jnp.asarray(start), jnp.asarray(A), jnp.asarray(c), jnp.asarray(r))
    final = np.asarray(res.params)
    rl = r * np_losses(A, c, final)
    lhat = rl / rl.sum()
    kl = float(np.sum(lhat * np.log(2 * lhat)))
    rl0 = r * np_losses(A, c, start)
    kl0 = float(np.sum(rl0 / rl0.sum() * np.log(2 * rl0 / rl0.sum())))
    assert kl < min(kl0, 1e-3)
    assert min_norm_np(np_grads(A, c, final)) < 1e-4


# ----------------------------------------------------------------------------- trace


def front_oracle_m2(A, c, l0_target):
    """ε-constraint: the Pareto point with l_0 = l0_target (brentq over α_0)."""
    f = lambda a: np_losses(A, c, theta_of(A, c, np.array([a, 1 - a])))[0] - l0_target  # noqa: E731
    a = optimize.brentq(f, 1e-12, 1 - 1e-12, xtol=1e-15, rtol=1e-15, maxiter=500)
    th = theta_of(A, c, np.array([a, 1 - a]))
    return th, np_losses(A, c, th)


TRACE_SEED = 11


def test_trace_quadratic_front_m2():
    A, c = quadratics(TRACE_SEED, 2, 8)
    start = theta_of(A, c, np.array([0.3, 0.7]))
    tr = ppe.trace(quad, jnp.asarray(start), ppe.improve_direction(2, 0), 14,
                   jnp.asarray(A), jnp.asarray(c), BIG, step_size=0.25)
    K = int(tr.length)
    assert K >= 10
    L = np.asarray(tr.losses)[:K]
    P = np.asarray(tr.params)[:K]
    worst_stat = max(min_norm_np(np_grads(A, c, p)) for p in P)
    worst_front = 0.0
    for p, l in zip(P[1:], L[1:]):
        th, lo = front_oracle_m2(A, c, l[0])
        worst_front = max(worst_front, abs(lo[1] - l[1]), np.linalg.norm(th - p))
    print(f"trace m=2: {K} points, worst stationarity {worst_stat:.2e}, worst front error "
          f"{worst_front:.2e}, GMRES its/solve {np.asarray(tr.gmres_iterations)[1:K].max()}, "
          f"corrector steps {np.asarray(tr.corrector_steps)[1:K]}, "
          f"cost {float(tr.cost_gradient_evals):.0f} gradient evals")
    assert worst_stat <= 1e-6 and worst_front <= 1e-6
    assert np.all(np.diff(L[:, 0]) < 0) and np.all(np.diff(L[:, 1]) > 0)
    np.testing.assert_allclose(L, np.stack([np_losses(A, c, p) for p in P]), rtol=1e-12)
    assert np.all(np.asarray(tr.gmres_residual)[1:K] <= 1e-10)
    assert np.all(np.asarray(tr.valid)[:K]) and not np.any(np.asarray(tr.valid)[K:])
    # total cost = the recorded points' costs, plus the tangent that decided to stop
    recorded = np.asarray(tr.cost)[:K].sum()
    if int(tr.stop_reason) == ppe.BUDGET:
        np.testing.assert_allclose(float(tr.cost_gradient_evals), recorded, rtol=1e-12)
    else:
        assert float(tr.cost_gradient_evals) > recorded > 0
    # the trace is linear in its loss-space step: steps never exceed step_size
    assert np.all(np.asarray(tr.step)[:K] <= 0.25 + 1e-12)


def test_trace_quadratic_end_of_front_and_nan_region():
    A, c = quadratics(TRACE_SEED, 2, 8)
    start = theta_of(A, c, np.array([0.3, 0.7]))
    Aj, cj = jnp.asarray(A), jnp.asarray(c)
    # Improving task 1 to the end: its minimiser c_1 (α = (0, 1)).
    tr = ppe.trace(quad, jnp.asarray(start), ppe.improve_direction(2, 1), 14, Aj, cj, BIG,
                   step_size=1.0)
    K = int(tr.length)
    assert int(tr.stop_reason) == ppe.END_OF_FRONT
    assert float(tr.alpha[K - 1, 0]) <= 1e-4
    assert np.linalg.norm(np.asarray(tr.params[K - 1]) - c[1]) < 1e-4
    assert np.all(np.diff(np.asarray(tr.losses)[:K, 1]) < 0)
    # A region where the losses are NaN (θ₀ beyond a bound) cuts the path to task 0's
    # minimiser c_0: the trace stays finite and stops before it. Reflecting coordinate 0
    # (an isometry) makes θ₀ grow along the path whatever the seed.
    if c[0, 0] < start[0]:
        flip = np.diag([-1.0] + [1.0] * 7)
        A, c, start = flip @ A @ flip, c @ flip, flip @ start
    bound = 0.5 * (start[0] + c[0, 0])
    tr = ppe.trace(quad, jnp.asarray(start), ppe.improve_direction(2, 0), 14, jnp.asarray(A),
                   jnp.asarray(c), jnp.asarray(bound), step_size=1.0)
    K = int(tr.length)
    for leaf in (tr.params, tr.losses, tr.alpha, tr.stationarity, tr.cost):
        assert np.all(np.isfinite(np.asarray(leaf)))
    print(f"NaN region: {K} points, stop {int(tr.stop_reason)}, "
          f"closest θ₀ {tr.params[K - 1, 0]:.6f} to the bound {bound:.6f}")
    # Rejected attempts (non-finite corrector) shrink the step: the trace creeps up to
    # the bound until its budget or its shrink limit runs out, never across.
    assert int(tr.stop_reason) in (ppe.BUDGET, ppe.STEP_TOO_SMALL)
    assert np.asarray(tr.rejected)[:K].sum() > 0
    assert np.all(np.asarray(tr.params)[:K, 0] < bound)
    assert bound - float(tr.params[K - 1, 0]) < 1e-2 * abs(bound - start[0])


def test_trace_degenerate_starts():
    A, c = quadratics(TRACE_SEED, 2, 8)
    Aj = jnp.asarray(A)
    c_same = jnp.asarray(np.stack([c[0], c[0]]))
    tr = ppe.trace(quad, jnp.asarray(c[0]), ppe.improve_direction(2, 0), 14, Aj, c_same, BIG,
                   step_size=0.25)
    assert int(tr.length) == 1 and int(tr.stop_reason) == ppe.NO_PROGRESS
    assert np.all(np.isfinite(np.asarray(tr.params)))
    tr = ppe.trace(quad, jnp.full(8, jnp.nan, jnp.float64), ppe.improve_direction(2, 0), 14, Aj,
                   jnp.asarray(c), BIG, step_size=0.25)
    assert int(tr.length) == 1 and int(tr.stop_reason) == ppe.NON_FINITE


def ray_oracle_m3(A, c, r):
    """The Pareto point whose losses lie on the ray 1/r (scipy least squares over α)."""
    def resid(z):
        a = np.exp(z) / np.exp(z).sum()
        rl = r * np_losses(A, c, theta_of(A, c, a))
        return rl / rl.sum() - 1 / 3

    sol = optimize.least_squares(resid, np.zeros(3), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    a = np.exp(sol.x) / np.exp(sol.x).sum()
    return np_losses(A, c, theta_of(A, c, a)), theta_of(A, c, a)


def test_trace_toward_preference_m3():
    A, c = quadratics(21, 3, 6)
    start = theta_of(A, c, np.ones(3) / 3)
    r = np.array([1.0, 2.0, 1.5])
    tr = ppe.trace(quad, jnp.asarray(start), "toward", 16, jnp.asarray(A), jnp.asarray(c), BIG,
                   preference=jnp.asarray(r), step_size=0.3)
    K = int(tr.length)
    L = np.asarray(tr.losses)[:K]
    P = np.asarray(tr.params)[:K]
    assert int(tr.stop_reason) == ppe.TARGET_REACHED
    worst_stat = max(min_norm_np(np_grads(A, c, p)) for p in P)
    target_l, target_theta = ray_oracle_m3(A, c, r)
    u = (1 / r) / np.linalg.norm(1 / r)
    sines = [np.linalg.norm(l - (l @ u) * u) / np.linalg.norm(l) for l in L]
    print(f"trace m=3 toward r={r}: {K} points, worst stationarity {worst_stat:.2e}, "
          f"ray sines {np.array(sines)}, final loss error {np.abs(L[-1] - target_l).max():.2e}")
    assert worst_stat <= 1e-6
    np.testing.assert_allclose(L[-1], target_l, atol=1e-6)
    np.testing.assert_allclose(P[-1], target_theta, atol=1e-5)
    assert np.all(np.diff(sines) < 0)


def epo_losses(theta):
    n = theta.shape[0]
    a = jnp.ones(n, theta.dtype) / jnp.sqrt(n)
    return 1 - jnp.exp(-jnp.stack([jnp.sum((theta - a) ** 2), jnp.sum((theta + a) ** 2)]))


def epo_alpha(t):
    """KKT weights on the EPO segment θ = t·a: α ∝ ((1+t)e^{-(1+t)²}, (1−t)e^{-(1−t)²})."""
    w = np.array([(1 + t) * np.exp(-(1 + t) ** 2), (1 - t) * np.exp(-(1 - t) ** 2)])
    return w / w.sum()


@pytest.mark.parametrize("task", [0, 1])
def test_trace_epo_synthetic_moves_along_segment_to_the_end(task):
    n = 20
    a = np.ones(n) / np.sqrt(n)
    tr = ppe.trace(epo_losses, jnp.zeros(n), ppe.improve_direction(2, task), 30, step_size=0.1)
    K = int(tr.length)
    P = np.asarray(tr.params)[:K]
    L = np.asarray(tr.losses)[:K]
    t = P @ a
    dist = np.linalg.norm(P - t[:, None] * a[None], axis=1)
    sign = 1 if task == 0 else -1  # task 0's minimiser is +a
    print(f"EPO synthetic, task {task}: {K} points, t = {np.round(t, 4)}, max distance to the "
          f"segment {dist.max():.1e}, stop {int(tr.stop_reason)}, "
          f"cost {float(tr.cost_gradient_evals):.0f}")
    assert K >= 5
    assert dist.max() < 1e-8
    assert np.all(np.diff(sign * t) > 0)
    assert np.all(np.diff(L[:, task]) < 0)
    assert int(tr.stop_reason) == ppe.END_OF_FRONT
    assert sign * t[-1] >= 1 - 1e-4
    np.testing.assert_allclose(np.asarray(tr.alpha)[:K], np.stack([epo_alpha(x) for x in t]),
                               atol=1e-6)


def test_trace_epo_synthetic_first_tangent_with_indefinite_hessian():
    """At t = 0 (θ = 0, α = (½, ½)) H_α = (2/e)(I − 2aaᵀ) is indefinite. The first
    predictor step must move the losses and the weights along the analytic tangent of
    the segment: δl ∝ dl/dt = (2/e)(−1, 1) and δα/δl₀ = (dα/dt)/(dl₀/dt)."""
    n = 20
    alpha0 = jnp.asarray(epo_alpha(0.0))
    H = np.asarray(jax.jit(jax.hessian(lambda th: jnp.dot(alpha0, epo_losses(th))))(jnp.zeros(n)))
    ev = np.linalg.eigvalsh(H)
    np.testing.assert_allclose([ev.min(), ev.max()], [-2 / math.e, 2 / math.e], rtol=1e-12)
    tr = ppe.trace(epo_losses, jnp.zeros(n), ppe.improve_direction(2, 0), 30, step_size=0.1)
    dl = np.asarray(tr.predicted_losses[1] - tr.losses[0])
    dalpha = np.asarray(tr.predicted_alpha[1] - tr.alpha[0])
    h = 1e-6
    dalpha_dt = (epo_alpha(h) - epo_alpha(-h)) / (2 * h)
    dl_dt = 2 / math.e * np.array([-1.0, 1.0])
    assert cosine(dl, dl_dt) > 1 - 1e-12 and abs(np.linalg.norm(dl) - 0.1) < 1e-12
    np.testing.assert_allclose(dalpha / dl[0], dalpha_dt / dl_dt[0], rtol=1e-7)
    assert np.all(np.asarray(tr.gmres_iterations)[1:int(tr.length)] <= 3)


# ------------------------------------------------------------------------- navigator


def test_navigator_improve_undo_toward_round_trip():
    A, c = quadratics(TRACE_SEED, 2, 8)
    start = theta_of(A, c, np.array([0.3, 0.7]))
    # max_points = 14 like the other m = 2 traces: every move reuses their executable.
    nav = ppe.Navigator(quad, jnp.asarray(start), jnp.asarray(A), jnp.asarray(c), BIG,
                        step_size=0.25, max_points=14)
    with pytest.raises(ValueError, match="undo"):
        nav.undo()
    l_start = np.asarray(nav.losses)
    p_start = np.asarray(nav.params)
    np.testing.assert_allclose(p_start, start, atol=1e-7)

    move = nav.improve(0, 0.6)
    assert int(move.stop_reason) == ppe.TARGET_REACHED
    l_new = np.asarray(nav.losses)
    assert abs(l_new[0] - (l_start[0] - 0.6)) <= 1e-6 and l_new[1] > l_start[1]
    th, lo = front_oracle_m2(A, c, l_new[0])
    assert np.linalg.norm(np.asarray(nav.params) - th) < 1e-6
    assert nav.front.shape == (int(move.length), 2)

    restored = nav.undo()
    np.testing.assert_array_equal(np.asarray(restored), p_start)
    assert nav.front.shape == (1, 2)

    nav.improve(0, 0.6)
    back = nav.toward(1 / l_start)  # the ray through the start: the start itself
    assert int(back.stop_reason) == ppe.TARGET_REACHED
    np.testing.assert_allclose(np.asarray(nav.losses), l_start, atol=1e-6)
    np.testing.assert_allclose(np.asarray(nav.params), p_start, atol=1e-5)
    assert len(nav.history) == 3 and nav.cost > 0
    front = nav.front
    assert front.shape[0] == int(nav.history[1].length) + int(back.length) - 1
    print(f"navigator: improve {int(nav.history[1].length) - 1} steps, toward "
          f"{int(back.length) - 1} steps, cost {nav.cost:.0f} gradient evals, "
          f"round-trip loss error {np.abs(np.asarray(nav.losses) - l_start).max():.1e}")


# ------------------------------------------------------------------------ validation


def test_bad_static_input_raises_naming_the_argument():
    A, c = quadratics(TRACE_SEED, 2, 8)
    Aj, cj = jnp.asarray(A), jnp.asarray(c)
    th = jnp.zeros(8)
    with pytest.raises(ValueError, match="alpha"):
        ppe.tangent(quad, th, jnp.ones(3) / 3, jnp.zeros(2), Aj, cj, BIG)
    with pytest.raises(ValueError, match="direction"):
        ppe.tangent(quad, th, jnp.ones(2) / 2, jnp.zeros(3), Aj, cj, BIG)
    with pytest.raises(ValueError, match="damping"):
        ppe.tangent(quad, th, jnp.ones(2) / 2, jnp.zeros(2), Aj, cj, BIG, damping=-1.0)
    with pytest.raises(ValueError, match="v"):
        ppe.hvp(quad, th, jnp.ones(2) / 2, jnp.zeros(7), Aj, cj, BIG)
    with pytest.raises(ValueError, match="num_points"):
        ppe.trace(quad, th, jnp.zeros(2), 0, Aj, cj, BIG)
    with pytest.raises(ValueError, match="step_size"):
        ppe.trace(quad, th, jnp.zeros(2), 5, Aj, cj, BIG, step_size=0.0)
    with pytest.raises(ValueError, match="corrector"):
        ppe.trace(quad, th, jnp.zeros(2), 5, Aj, cj, BIG, corrector="newton")
    with pytest.raises(ValueError, match="preference"):
        ppe.trace(quad, th, "toward", 5, Aj, cj, BIG)
    with pytest.raises(ValueError, match="direction"):
        ppe.trace(quad, th, "away", 5, Aj, cj, BIG)
    with pytest.raises(ValueError, match="method"):
        ppe.corrector(quad, th, Aj, cj, BIG, method="sgd")
    with pytest.raises(ValueError, match="preference"):
        ppe.corrector(quad, th, Aj, cj, BIG, method="epo")
    with pytest.raises(ValueError, match="task"):
        ppe.improve_direction(2, 2)
    with pytest.raises(ValueError, match="amount"):
        ppe.improve_direction(2, 0, -1.0)
    with pytest.raises(ValueError, match="preference"):
        ppe.toward_direction(jnp.ones(2), jnp.asarray([1.0, -1.0]))
    with pytest.raises(TypeError, match="params"):
        ppe.tangent(quad, jnp.zeros(8, jnp.int32), jnp.ones(2) / 2, jnp.zeros(2), Aj, cj, BIG)
    with pytest.raises(ValueError, match="loss_fn"):
        ppe.tangent(lambda p: jnp.sum(p), th, jnp.ones(2) / 2, jnp.zeros(2))
    with pytest.raises(ValueError, match="b"):
        ppe.gmres(lambda x: x, jnp.zeros((2, 2)))


def on_ray(point, u):
    """3-D: ``point`` is parallel to ``u`` (relative cross product ≤ 1e-12)."""
    return np.linalg.norm(np.cross(point, u)) < 1e-12 * np.linalg.norm(point) * np.linalg.norm(u)


def test_directions():
    d = ppe.improve_direction(3, 1, 0.5)
    np.testing.assert_array_equal(np.asarray(d), [0, -0.5, 0])
    rng = np.random.default_rng(8)
    for _ in range(20):
        l = rng.uniform(0.1, 2, 3)
        r = rng.uniform(0.2, 3, 3)
        alpha = rng.dirichlet(np.ones(3))
        u = 1 / r
        d = np.asarray(ppe.toward_direction(jnp.asarray(l), jnp.asarray(r)))
        target = l + d
        assert abs(d @ l) < 1e-12 * (l @ l)  # perpendicular to l
        assert on_ray(target, u)
        d = np.asarray(ppe.toward_direction(jnp.asarray(l), jnp.asarray(r), jnp.asarray(alpha)))
        target = l + d
        assert abs(d @ alpha) < 1e-12  # in the tangent plane of the front
        assert on_ray(target, u)
    l_on_ray = jnp.asarray([2.0, 1.0])
    d_on_ray = ppe.toward_direction(l_on_ray, jnp.asarray([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(d_on_ray), 0, atol=1e-15)
    assert np.all(np.asarray(ppe.toward_direction(jnp.zeros(2), jnp.ones(2))) == 0)


def test_predictor_pytree():
    params = {"a": jnp.ones(3), "b": jnp.zeros((2, 2), jnp.float32)}
    v = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2), jnp.float32)}
    fake = ppe.Tangent(v, *([None] * 10))
    out = jax.jit(ppe.predictor)(params, fake, 0.5)
    np.testing.assert_allclose(np.asarray(out["a"]), 1 + 0.5 * np.arange(3.0))
    assert out["b"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out["b"]), 0.5)


# ------------------------------------------------------------------- slow (pytest -m slow)


@pytest.mark.slow
def test_trace_vmap_matches_single_traces():
    A, c = quadratics(TRACE_SEED, 2, 8)
    starts = np.stack([theta_of(A, c, np.array([a, 1 - a])) for a in (0.3, 0.5, 0.7)])
    def run(p):
        return ppe.trace(quad, p, ppe.improve_direction(2, 0), 14, jnp.asarray(A),
                         jnp.asarray(c), BIG, step_size=0.25)

    batched = jax.jit(jax.vmap(run))(jnp.asarray(starts))
    for i, start in enumerate(starts):
        single = run(jnp.asarray(start))
        assert int(batched.length[i]) == int(single.length)
        np.testing.assert_allclose(np.asarray(batched.losses[i]), np.asarray(single.losses),
                                   rtol=1e-10)


@pytest.mark.slow
def test_trace_float32():
    A, c = quadratics(TRACE_SEED, 2, 8)
    start = theta_of(A, c, np.array([0.3, 0.7]))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    tr = ppe.trace(quad, f32(start), ppe.improve_direction(2, 0, dtype=jnp.float32), 14, f32(A),
                   f32(c), jnp.float32(1e30), step_size=0.25)
    K = int(tr.length)
    assert K >= 10
    for leaf in (tr.params, tr.losses, tr.alpha, tr.stationarity, tr.cost_gradient_evals):
        assert leaf.dtype == jnp.float32
    P = np.asarray(tr.params, np.float64)[:K]
    assert max(min_norm_np(np_grads(A, c, p)) for p in P) <= 1e-3
    assert np.all(np.diff(np.asarray(tr.losses)[:K, 0]) < 0)


@pytest.mark.slow
def test_trace_with_epo_corrector_toward_preference():
    A, c = quadratics(TRACE_SEED, 2, 8)
    start = theta_of(A, c, np.array([0.3, 0.7]))
    r = np.array([1.0, 3.0])
    tr = ppe.trace(quad, jnp.asarray(start), "toward", 14, jnp.asarray(A), jnp.asarray(c), BIG,
                   preference=jnp.asarray(r), step_size=0.25, corrector="epo", corrector_lr=0.2,
                   corrector_steps=400)
    K = int(tr.length)
    assert int(tr.stop_reason) == ppe.TARGET_REACHED
    P = np.asarray(tr.params)[:K]
    assert max(min_norm_np(np_grads(A, c, p)) for p in P) <= 1e-6
    final = np_losses(A, c, P[-1])
    th, lo = front_oracle_m2(A, c, final[0])
    assert np.abs(lo - final).max() < 1e-6
    u = 1 / r
    sine = abs(final[0] * u[1] - final[1] * u[0]) / (np.linalg.norm(final) * np.linalg.norm(u))
    assert sine < 1e-6
