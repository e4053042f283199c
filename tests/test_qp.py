"""Tests of the batched QP solver (jaxpareto.weighting.qp).

Oracles: exhaustive enumeration of active sets with numpy least squares (exact for
m ≤ 6), quadprog (Goldfarb–Idnani, what TorchJD uses; skipped if not installed) and
scipy SLSQP; derivatives against central finite differences.
"""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadprog  # the oracle (dev extra)
from scipy.optimize import minimize

from jaxpareto.weighting.qp import (
    INFEASIBLE,
    MAX_ITER,
    NUMERICAL_ERROR,
    OPTIMAL,
    QPResult,
    project_dual_cone,
    qp_kkt_residual,
    solve_qp,
)

jax.config.update("jax_enable_x64", True)


# ------------------------------------------------------------------------ instances


def random_psd(rng, m, kind):
    """PSD matrices of the kinds the weightings meet: full rank, rank deficient,
    ill-conditioned, duplicated rows (collinear gradients)."""
    if kind == "full":
        j = rng.standard_normal((m, m + 3))
    elif kind == "rank_deficient":
        j = rng.standard_normal((m, max(1, m // 2)))
    elif kind == "ill":
        u, _ = np.linalg.qr(rng.standard_normal((m, m)))
        return (u * np.logspace(0, -9, m)) @ u.T * rng.uniform(0.1, 10)
    else:  # duplicated
        j = rng.standard_normal((m, m + 1))
        j[1] = j[0]
        j[2] = -0.5 * j[0]
    j = j + 0.3 * rng.standard_normal(j.shape[1])  # a common component: realistic
    return j @ j.T * rng.uniform(0.1, 10)


KINDS = ("full", "rank_deficient", "ill", "duplicated")


def enumerate_qp(q, c, lo, hi, total=None):
    """Exact solution by enumeration of active sets: (objective, Qx) of a KKT point."""
    m = q.shape[0]
    scale = max(np.abs(np.diag(q)).max(), np.abs(c).max(), 1e-300)
    best = None
    choices = [[s for s in (0, 1, 2) if s == 0 or (s == 1 and np.isfinite(lo[i]))
                or (s == 2 and np.isfinite(hi[i]))] for i in range(m)]
    for states in itertools.product(*choices):
        states = np.array(states)
        x = np.where(states == 1, lo, np.where(states == 2, hi, 0.0))
        free = states == 0
        nf = int(free.sum())
        eq = total is not None
        size = nf + int(eq)
        if size:
            a = np.zeros((size, size))
            rhs = np.zeros(size)
            a[:nf, :nf] = q[np.ix_(free, free)]
            rhs[:nf] = -c[free] - q[np.ix_(free, ~free)] @ x[~free]
            if eq:
                a[:nf, nf] = 1
                a[nf, :nf] = 1
                rhs[nf] = total - x[~free].sum()
            sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
            if np.abs(a @ sol - rhs).max() > 1e-9 * scale * (1 + np.abs(sol).max()):
                continue
            x[free] = sol[:nf]
            y = sol[nf] if eq else 0.0
        else:
            y = 0.0
            if eq and abs(x.sum() - total) > 1e-12:
                continue
        if eq and nf == 0:
            # y is free: pick the one that makes the fixed multipliers sign-feasible
            g0 = q @ x + c
            cand = [-g0[i] for i in range(m)] + [0.0]
            ok = False
            for y in cand:
                g = g0 + y
                if np.all(np.where(states == 1, g >= -1e-9 * scale, g <= 1e-9 * scale)):
                    ok = True
                    break
            if not ok:
                continue
        g = q @ x + c + y
        tol = 1e-9 * scale * (1 + np.abs(x).max())
        if np.any(x < lo - 1e-9) or np.any(x > hi + 1e-9):
            continue
        if np.any((states == 1) & (g < -tol)) or np.any((states == 2) & (g > tol)):
            continue
        obj = 0.5 * x @ q @ x + c @ x
        if best is None or obj < best[0]:
            best = (obj, q @ x, x)
    return best


# One compiled program per configuration, shared by the tests (compiles dominate).
_BATCH = jax.jit(jax.vmap(lambda q, c, lo, hi: solve_qp(q, c, lower=lo, upper=hi)))
_BATCH_SIMPLEX = jax.jit(jax.vmap(lambda q, c, lo: solve_qp(q, c, lower=lo, total=1.0)))
M, K = 5, 40  # every batched test uses [K, M] problems


def batch_solve(qs, cs, los, his, total=None):
    if total is None:
        return _BATCH(*(jnp.asarray(np.stack(a)) for a in (qs, cs, los, his)))
    return _BATCH_SIMPLEX(*(jnp.asarray(np.stack(a)) for a in (qs, cs, los)))


def pad(items):
    """Pad a list of problems to the batch size K (repeating the last one)."""
    return list(items) + [items[-1]] * (K - len(items))


# --------------------------------------------------------------------------- oracle


def _instances(problem, seed):
    rng = np.random.default_rng(seed)
    m, k = M, K
    qs, cs, los, his = [], [], [], []
    for i in range(k):
        q = random_psd(rng, m, KINDS[i % 4])
        # half of the "bounds" batch are dual-cone projections (c = 0 or c = Qw, x >= u,
        # some entries unbounded), half are boxes with a linear term
        if problem == "simplex":
            c = rng.standard_normal(m) * np.abs(np.diag(q)).max() * (i % 2)
            lo, hi = np.zeros(m), np.full(m, np.inf)
        elif i < k // 2:
            c = np.zeros(m) if i % 2 else q @ rng.standard_normal(m)
            lo = np.where(rng.random(m) < 0.7, rng.standard_normal(m), -np.inf)
            hi = np.full(m, np.inf)
        else:
            c = rng.standard_normal(m) * np.abs(np.diag(q)).max()
            lo = rng.standard_normal(m) - 0.5
            hi = lo + rng.uniform(0.1, 2, m)
            hi[0] = np.inf
        qs.append(q), cs.append(c), los.append(lo), his.append(hi)
    return qs, cs, los, his


@pytest.mark.parametrize("problem", ["bounds", "simplex"])
def test_matches_enumeration_oracle(problem):
    qs, cs, los, his = _instances(problem, {"bounds": 1, "simplex": 3}[problem])
    total = 1.0 if problem == "simplex" else None
    res = batch_solve(qs, cs, los, his, total)
    assert isinstance(res, QPResult)
    assert bool(jnp.all(res.converged)), np.asarray(res.kkt_residual)
    assert float(jnp.max(res.kkt_residual)) <= 1e-8
    for i in range(K):
        obj, qx, _ = enumerate_qp(qs[i], cs[i], los[i], his[i], total)
        scale = max(np.abs(np.diag(qs[i])).max(), np.abs(cs[i]).max())
        xs = max(1.0, np.abs(res.x[i]).max())
        assert abs(float(res.objective[i]) - obj) <= 1e-9 * scale * xs**2, (i, problem)
        # Q x is unique even when x is not (singular Q).
        np.testing.assert_allclose(qs[i] @ np.asarray(res.x[i]), qx, atol=1e-7 * scale * xs)
        # the returned duals satisfy stationarity
        g = qs[i] @ np.asarray(res.x[i]) + cs[i] + float(res.dual_eq[i])
        np.testing.assert_allclose(g, np.asarray(res.dual_lower[i] - res.dual_upper[i]),
                                   atol=1e-8 * scale * xs)


_BATCH_AS = jax.jit(jax.vmap(
    lambda q, c, lo, hi, x0: solve_qp(q, c, lower=lo, upper=hi, method="active_set", start=x0)
))


@pytest.mark.parametrize("start", ["default", "perturbed_solution"])
def test_active_set_method_matches_enumeration_or_says_it_did_not(start):
    """``method="active_set"`` (no interior point): every problem it reports converged
    is solved (the enumeration oracle's objective), the rest are flagged MAX_ITER, never
    silently wrong; from a perturbed solution (a warm start) it converges everywhere."""
    qs, cs, los, his = _instances("bounds", 1)
    ref = batch_solve(qs, cs, los, his)
    rng = np.random.default_rng(2)
    if start == "default":
        x0 = np.full((K, M), np.nan)  # non-finite entries: the default start
    else:
        x0 = np.asarray(ref.x) + 1e-3 * rng.standard_normal((K, M))
    res = _BATCH_AS(*(jnp.asarray(np.stack(a)) for a in (qs, cs, los, his)), jnp.asarray(x0))
    assert np.all(np.asarray(res.iterations) == 0)
    conv = np.asarray(res.converged)
    assert np.all(conv == (np.asarray(res.status) == OPTIMAL))
    assert np.all(np.asarray(res.status)[~conv] == MAX_ITER)
    assert np.all(np.asarray(res.kkt_residual)[~conv] > 1e-9)
    for i in np.flatnonzero(conv):
        obj, _, _ = enumerate_qp(qs[i], cs[i], los[i], his[i])
        scale = max(np.abs(np.diag(qs[i])).max(), np.abs(cs[i]).max())
        xs = max(1.0, np.abs(res.x[i]).max())
        assert abs(float(res.objective[i]) - obj) <= 1e-9 * scale * xs**2, i
    assert conv.mean() >= (0.9 if start == "default" else 1.0), conv.mean()
    with pytest.raises(ValueError, match="`method`"):
        solve_qp(jnp.eye(2), method="newton")
    with pytest.raises(ValueError, match="`start`"):
        solve_qp(jnp.eye(2), start=jnp.zeros(2))
    with pytest.raises(ValueError, match="`start`"):
        solve_qp(jnp.eye(2), method="active_set", start=jnp.zeros(3))


def test_matches_quadprog_on_positive_definite_lower_bounds():
    # TorchJD's use: 8 Gramians × the M rows u = e_i, each solved by quadprog.
    rng = np.random.default_rng(11)
    grams = [random_psd(rng, M, "full") for _ in range(K // M)]
    qs = [g for g in grams for _ in range(M)]
    los = [np.eye(M)[i] for _ in grams for i in range(M)]
    res = batch_solve(qs, [np.zeros(M)] * K, los, [np.full(M, np.inf)] * K)
    assert float(jnp.max(res.kkt_residual)) <= 1e-8
    worst = 0.0
    for i in range(K):
        ref = quadprog.solve_qp(qs[i], np.zeros(M), np.eye(M), los[i])[0]
        worst = max(worst, np.abs(np.asarray(res.x[i]) - ref).max() / np.abs(ref).max())
    assert worst <= 1e-8, worst


def test_matches_scipy_slsqp():
    rng = np.random.default_rng(12)
    qs = [random_psd(rng, M, KINDS[i % 2]) for i in range(K)]
    cs = [rng.standard_normal(M) * np.diag(q).max() for q in qs]
    res = batch_solve(qs, cs, [np.zeros(M)] * K, [np.full(M, 2.0)] * K)
    for i in range(0, K, 5):
        q, c = qs[i], cs[i]
        ref = minimize(lambda x: 0.5 * x @ q @ x + c @ x, np.full(M, 0.5), method="SLSQP",
                       jac=lambda x: q @ x + c, bounds=[(0, 2)] * M,
                       options={"ftol": 1e-15, "maxiter": 500})
        assert ref.success
        scale = np.diag(q).max()
        assert float(res.objective[i]) <= ref.fun + 1e-9 * scale
        assert float(res.objective[i]) >= ref.fun - 1e-6 * scale  # SLSQP is the less accurate


def test_batched_dual_cone_projection_m32_accuracy():
    rng = np.random.default_rng(64)
    m = 32
    project = jax.jit(project_dual_cone)
    for n in (8, 64):  # rank deficient and full rank
        j = rng.standard_normal((m, n)) + 0.3 * rng.standard_normal(n)
        g = j @ j.T
        res = project(g, jnp.eye(m))
        assert bool(jnp.all(res.converged))
        assert float(jnp.max(res.kkt_residual)) <= 1e-8
        # non-conflicting: every projected row lies in the dual cone {d : J d >= 0}
        assert float(jnp.min(res.x @ g)) >= -1e-10 * np.abs(g).max()
        assert bool(jnp.all(res.x >= jnp.eye(m) - 1e-12))


@pytest.mark.slow
@pytest.mark.parametrize("m", [64, 128])
def test_batched_dual_cone_projection_large_m_accuracy(m):
    rng = np.random.default_rng(m)
    for n in (m // 4, 2 * m):
        j = rng.standard_normal((m, n)) + 0.3 * rng.standard_normal(n)
        g = j @ j.T
        res = jax.jit(project_dual_cone)(g, jnp.eye(m))
        assert bool(jnp.all(res.converged))
        assert float(jnp.max(res.kkt_residual)) <= 1e-8


def test_kkt_residual_function_agrees_and_detects_bad_points():
    qs, cs, los, his = _instances("simplex", 5)
    res = batch_solve(qs, cs, los, his, total=1.0)
    kkt = jax.jit(lambda q, c, x, y: qp_kkt_residual(q, c, x, lower=jnp.zeros(M), total=1.0,
                                                     dual_eq=y))
    for i in (0, 1):
        k = kkt(qs[i], cs[i], res.x[i], res.dual_eq[i])
        np.testing.assert_allclose(float(k), float(res.kkt_residual[i]), atol=1e-14)
    bad = kkt(qs[1], cs[1], jnp.full(M, 1 / M), res.dual_eq[1])
    assert float(bad) > 1e-3


# ---------------------------------------------------------------- jit / vmap / dtypes


class JitVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_variants_agree(self):
        rng = np.random.default_rng(7)
        q = random_psd(rng, M, "rank_deficient")
        c = rng.standard_normal(M)
        fn = self.variant(lambda q, c: solve_qp(q, c, lower=jnp.zeros(M), upper=jnp.ones(M)))
        res = fn(jnp.asarray(q), jnp.asarray(c))
        assert bool(res.converged)
        obj, _, _ = enumerate_qp(q, c, np.zeros(M), np.ones(M))
        np.testing.assert_allclose(float(res.objective), obj, atol=1e-10 * np.diag(q).max())


def test_vmap_matches_single_solves():
    qs, cs, los, his = _instances("bounds", 8)
    batched = batch_solve(qs, cs, los, his)
    for i in (0, 4, K // 2 + 4):  # full-rank Q: x is unique
        single = solve_qp(qs[i], cs[i], lower=los[i], upper=his[i])
        np.testing.assert_allclose(np.asarray(batched.x[i]), np.asarray(single.x), atol=1e-12)


def test_float32_inputs_stay_float32():
    rng = np.random.default_rng(9)
    q = random_psd(rng, M, "full").astype(np.float32)
    res = solve_qp(jnp.asarray(q), None, lower=jnp.eye(M, dtype=jnp.float32)[0])
    assert res.x.dtype == jnp.float32 and res.objective.dtype == jnp.float32
    assert bool(res.converged)
    ref = solve_qp(q.astype(np.float64), None, lower=np.eye(M)[0])
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(ref.x), atol=1e-4)


# --------------------------------------------------------------- errors, degeneracy


def test_bad_static_input_names_the_argument():
    with pytest.raises(ValueError, match="`quad`"):
        solve_qp(jnp.ones((3, 2)))
    with pytest.raises(TypeError, match="`quad`"):
        solve_qp(jnp.eye(3, dtype=jnp.int32))
    with pytest.raises(ValueError, match="`linear`"):
        solve_qp(jnp.eye(3), jnp.ones(2))
    with pytest.raises(ValueError, match="`lower`"):
        solve_qp(jnp.eye(3), lower=jnp.ones(2))
    with pytest.raises(ValueError, match="`lower`"):
        solve_qp(jnp.eye(2), lower=jnp.array([1.0, 1.0]), upper=jnp.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="`upper`"):
        solve_qp(jnp.eye(2), upper=jnp.array([np.nan, 1.0]))
    with pytest.raises(TypeError, match="`total`"):
        solve_qp(jnp.eye(2), total=jnp.ones(2))
    with pytest.raises(ValueError, match="`tol`"):
        solve_qp(jnp.eye(2), tol=-1.0)
    with pytest.raises(ValueError, match="`bounds`"):
        project_dual_cone(jnp.eye(2), jnp.ones((1, 2, 2)))


def test_degenerate_inputs_give_finite_flagged_results():
    lo, hi = np.zeros(M), np.ones(M)
    qs = [np.full((M, M), np.nan), np.zeros((M, M)), np.eye(M)]
    # bounds crossed at run time (traced, so not caught at trace time)
    res = batch_solve(qs, [np.zeros(M)] * 3, [lo, lo, hi], [hi, hi, lo])
    assert bool(jnp.all(jnp.isfinite(res.x)))
    assert np.asarray(res.degenerate).tolist() == [True, True, True]
    assert np.asarray(res.status).tolist() == [NUMERICAL_ERROR, OPTIMAL, INFEASIBLE]
    assert bool(jnp.all((res.x[1] >= 0) & (res.x[1] <= 1)))  # zero problem: feasible
    # simplex with Σ lower > total: infeasible
    neg = batch_solve(pad([np.eye(M)]), pad([np.zeros(M)]), pad([np.full(M, 0.5)]), None,
                      total=1.0)
    assert int(neg.status[0]) == INFEASIBLE and bool(jnp.all(jnp.isfinite(neg.x)))


# ----------------------------------------------------------------------- derivatives


def directional_check(loss, args, solve_batch, seed, h=1e-6):
    """Compare ⟨∇loss, d⟩ with central differences along random directions d that
    perturb one argument at a time. ``loss(x)`` of the solution; ``solve_batch`` solves
    the perturbed problems (a [K, ...] batch, the shared compiled program)."""
    rng = np.random.default_rng(seed)
    args = [np.asarray(a, float) for a in args]
    grads = jax.jit(jax.grad(lambda *a: loss(solve_batch.single(*a)),
                             argnums=tuple(range(len(args)))))(*args)
    dirs = []
    for k, a in enumerate(args):
        for _ in range(2):
            d = [np.zeros_like(b) for b in args]
            d[k] = np.where(np.isfinite(a), rng.standard_normal(a.shape), 0)
            if k == 0:
                d[k] = d[k] + d[k].T
            dirs.append(d)
    problems = [[a + sign * h * d[k] for k, a in enumerate(args)]
                for d in dirs for sign in (1, -1)]
    xs = solve_batch(pad(problems))
    vals = np.array([float(loss(xs[i])) for i in range(len(problems))])
    fd = (vals[0::2] - vals[1::2]) / (2 * h)
    ad = np.array([sum(float(np.sum(np.where(np.isfinite(g), g, 0) * dk))
                       for g, dk in zip(grads, d)) for d in dirs])
    np.testing.assert_allclose(ad, fd, atol=1e-7 * max(1.0, np.abs(fd).max()))
    return fd


class _BoundsSolver:
    @staticmethod
    def single(q, c, lo, hi):
        return solve_qp(q, c, lower=lo, upper=hi).x

    def __call__(self, problems):
        return batch_solve(*zip(*problems)).x


class _SimplexSolver:
    @staticmethod
    def single(q, c, lo):
        return solve_qp(q, c, lower=lo, total=1.0).x

    def __call__(self, problems):
        qs, cs, los = zip(*problems)
        return batch_solve(qs, cs, los, None, total=1.0).x


@pytest.mark.parametrize("problem", ["bounds", "simplex"])
def test_gradient_matches_finite_differences(problem):
    rng = np.random.default_rng({"bounds": 21, "simplex": 23}[problem])
    j = rng.standard_normal((M, 8)) + 0.3 * rng.standard_normal(8)
    q = j @ j.T
    c = rng.standard_normal(M)
    weights = rng.standard_normal(M)

    def loss(x):
        return jnp.sum(weights * jnp.sin(x))

    if problem == "bounds":  # lower-only, box and free entries
        lo = np.array([0.1, -0.2, -np.inf, 0.3, -0.1])
        hi = np.array([np.inf, 0.1, np.inf, 0.8, 0.2])
        args, solver = (q, c, lo, hi), _BoundsSolver()
        res = solve_qp(q, c, lower=lo, upper=hi)
    else:  # the total enters through lower: Σx = 1 with x ≥ lo
        lo = np.array([0.05, 0.0, 0.1, 0.0, 0.02])
        args, solver = (q, c, lo), _SimplexSolver()
        res = solve_qp(q, c, lower=lo, total=1.0)
    assert bool(res.converged)
    active = np.sum(np.asarray(res.dual_lower + res.dual_upper) > 1e-6)
    assert 1 <= active <= M - 1  # a non-trivial active set
    fd = directional_check(loss, args, solver, seed=problem == "bounds")
    assert np.sum(np.abs(fd) > 1e-3) >= len(args)


def test_gradient_with_respect_to_total():
    rng = np.random.default_rng(24)
    j = rng.standard_normal((M, 8))
    q = j @ j.T
    f = jax.jit(lambda t: solve_qp(q, None, lower=jnp.zeros(M), total=t).x)
    jac = jax.jit(jax.jacrev(f))(1.0)
    h = 1e-6
    np.testing.assert_allclose(np.asarray(jac), np.asarray((f(1 + h) - f(1 - h)) / (2 * h)),
                               atol=1e-7)
    # min ½xᵀQx over {x ≥ 0, Σx = t} is homogeneous: x(t) = t x(1) on a fixed support
    np.testing.assert_allclose(np.asarray(jac), np.asarray(f(1.0)), atol=1e-9)


def test_gradient_under_vmap_and_singular_gram_is_finite():
    rng = np.random.default_rng(31)
    j = rng.standard_normal((M, 2))
    g = j @ j.T  # rank 2: the minimiser is not unique

    def loss(g, u):
        return jnp.sum(solve_qp(g, None, lower=u).x ** 2)

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(jnp.asarray(g), jnp.eye(M))
    assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_kkt_residual_is_linear_in_the_distance_to_the_active_face(dtype):
    """The complementarity term is the min-map ``min(ĝ₊, |x − l|)``, not the product: a
    point whose inactive coordinates sit δ off their bounds with multipliers δ has
    residual ≈ δ (the product would say δ², and a float32 solve stopped there with
    ``converged=True`` 5e-4 away from the exact ``x = e₀`` of ``min ½‖x‖²`` s.t.
    ``x ≥ e₀``). The exact answer is the analytic one; UPGrad on ``C = I`` (no conflict)
    must return ``w = p = 1/m`` to the dtype's accuracy."""
    eps = float(jnp.finfo(dtype).eps)
    q = jnp.eye(3, dtype=dtype)
    lower = jnp.eye(3, dtype=dtype)[0]
    for delta in (1e-3, 1e-2):
        bad = jnp.asarray([1.0, delta, delta], dtype)
        res = float(qp_kkt_residual(q, None, bad, lower=lower))
        assert delta / 2 <= res <= 2 * delta, (delta, res)
    sol = solve_qp(q, None, lower=lower)
    np.testing.assert_allclose(np.asarray(sol.x), [1.0, 0.0, 0.0], atol=8 * eps)
    assert bool(sol.converged)
    from jaxpareto.weighting import upgrad_weights

    w = upgrad_weights(jnp.eye(4, dtype=dtype)).weights
    np.testing.assert_allclose(np.asarray(w), np.full(4, 0.25), rtol=0, atol=8 * eps)
