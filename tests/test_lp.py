"""Tests of the jittable simplex LP solver against scipy's HiGHS.

The oracle is ``scipy.optimize.linprog(method="highs")`` on the same LP written out in
numpy (``max cᵀβ`` ⇔ ``min −cᵀβ``; ``Aβ ≥ b`` ⇔ ``−Aβ ≤ −b``; only the unmasked rows).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from jaxpareto.weighting import lp
from jaxpareto.weighting.lp import INFEASIBLE, MAX_ITER, NUMERICAL_ERROR, OPTIMAL, linprog_simplex

_solve = jax.jit(linprog_simplex, static_argnames="max_iter")
_solve_batch = jax.jit(jax.vmap(linprog_simplex))

# Oracle settings: tighter than HiGHS's 1e-7 defaults so that the oracle itself is
# accurate to the 1e-9 we ask of the solver.
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def highs(c, a, b, mask):
    """HiGHS on max cᵀβ, β ∈ Δ, a[mask] β ≥ b[mask]; returns (status, optimum, x)."""
    c, a, b, mask = (np.asarray(v) for v in (c, a, b, mask))
    m = c.shape[0]
    # Each row is divided by its max-abs entry (the same LP): HiGHS's tolerances are
    # absolute, and a row with coefficients ~1e-6 would otherwise be "feasible" while
    # violated by 1e-5 of its own scale.
    scale = np.maximum(np.max(np.abs(a), axis=1, initial=0), np.abs(b))
    scale = np.where(scale > 0, scale, 1)
    rows, rhs = (a / scale[:, None])[mask], (b / scale)[mask]
    res = linprog(
        -c,
        A_ub=-rows if rows.size else None,
        b_ub=-rhs if rows.size else None,
        A_eq=np.ones((1, m)),
        b_eq=[1.0],
        bounds=(0, None),
        method="highs",
        options=_HIGHS_OPTIONS,
    )
    return res.status, (-res.fun if res.status == 0 else None), res.x


def residuals(c, a, b, mask, x, optimum):
    """(relative objective error, feasibility violation) of ``x`` for the LP."""
    c, a, b, mask, x = (np.asarray(v, np.float64) for v in (c, a, b, mask, x))
    mask = mask.astype(bool)
    scale_obj = max(abs(optimum), np.max(np.abs(c)), 1e-300)
    obj_err = abs(c @ x - optimum) / scale_obj
    row_scale = np.maximum(np.max(np.abs(a), axis=1, initial=0), np.abs(b))[mask]
    row_scale = np.where(row_scale > 0, row_scale, 1)
    viol = np.max((b[mask] - a[mask] @ x) / row_scale, initial=0)
    viol = max(viol, -np.min(x), abs(np.sum(x) - 1))
    return obj_err, viol


def random_lp(rng, m, k):
    """A random LP of one of several kinds, shapes c [m], a [k, m], b [k], mask [k]."""
    kind = rng.integers(6)
    c = rng.normal(size=m)
    if kind == 0:  # dense random rows; b mostly slack, sometimes infeasible
        a = rng.normal(size=(k, m))
        b = rng.normal(size=k) * 0.6 - 0.3
    elif kind == 1:  # Gramian rows with homogeneous rhs (EPO descent-like, degenerate)
        g = rng.normal(size=(rng.integers(1, 2 * m + 1), m))
        gram = g.T @ g
        pool = np.concatenate([gram, gram.sum(0, keepdims=True)])
        a = pool[np.arange(k) % len(pool)]
        b = np.zeros(k)
    elif kind == 2:  # Gramian rows, rhs in [min row, 0] (EPO balance-like)
        g = rng.normal(size=(rng.integers(1, 2 * m + 1), m))
        gram = g.T @ g
        pool = np.concatenate([gram, rng.normal(size=(1, m))])
        a = pool[np.arange(k) % len(pool)]
        b = np.minimum(rng.uniform(-1, 0.3, size=k) * np.abs(a).max(1), 0)
    elif kind == 3:  # duplicated and opposite rows, tight equalities
        base = rng.normal(size=(max(k // 3, 1), m))
        pool = np.concatenate([base, base, -base, base])
        a = pool[np.arange(k) % len(pool)]
        b = np.zeros(k)
    elif kind == 4:  # zero rows (feasible iff b <= 0) and badly scaled rows
        a = rng.normal(size=(k, m)) * 10.0 ** rng.uniform(-6, 6, size=(k, 1))
        a[rng.random(k) < 0.3] = 0
        b = np.where(np.all(a == 0, axis=1), -rng.random(k), 0.2 * (a @ rng.dirichlet(np.ones(m))))
    else:  # c with ties (integer-valued): many optimal vertices
        c = rng.integers(-2, 3, size=m).astype(float)
        a = rng.integers(-2, 3, size=(k, m)).astype(float)
        b = rng.integers(-2, 1, size=k).astype(float) / 2
    mask = rng.random(k) < 0.8
    return c, a, b, mask


@pytest.mark.parametrize("m, k, count", [(3, 4, 500), (20, 21, 500)])
def test_matches_highs_on_random_lps(m, k, count):
    rng = np.random.default_rng(1000 + m)
    problems = [random_lp(rng, m, k) for _ in range(count)]
    c, a, b, mask = (np.stack(v) for v in zip(*problems))
    res = _solve_batch(c, a, b, mask)
    x, status = np.asarray(res.x), np.asarray(res.status)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(np.asarray(res.objective)))
    worst_obj = worst_viol = 0.0
    infeasible = 0
    for i in range(count):
        st, optimum, _ = highs(c[i], a[i], b[i], mask[i])
        assert st in (0, 2), st
        if st == 2:
            infeasible += 1
            assert status[i] == INFEASIBLE, (i, status[i])
            np.testing.assert_allclose(x[i], np.full(m, 1 / m))
            continue
        assert status[i] == OPTIMAL, (i, status[i])
        obj_err, viol = residuals(c[i], a[i], b[i], mask[i], x[i], optimum)
        worst_obj, worst_viol = max(worst_obj, obj_err), max(worst_viol, viol)
        np.testing.assert_allclose(float(res.objective[i]), c[i] @ x[i], rtol=1e-12, atol=1e-14)
    print(f"m={m} k={k}: {count} LPs, {infeasible} infeasible, worst rel objective "
          f"error {worst_obj:.2e}, worst violation {worst_viol:.2e}, "
          f"max pivots {int(np.max(res.iterations))}")
    assert worst_obj <= 1e-9
    assert worst_viol <= 1e-9
    assert infeasible > 0  # the generator does produce infeasible instances
    assert np.all(np.asarray(res.iterations) < lp.default_max_iter(m, k))


def test_beale_cycling_example():
    """Beale's (1955) LP, which cycles under Dantzig's rule without anti-cycling, written
    on the simplex: β_1..β_4 = s·(x4..x7), β_5 takes the remaining mass."""
    s = 0.2
    c = -np.array([-0.75, 150.0, -0.02, 6.0, 0.0])  # maximise −(Beale's objective)
    a = -np.array(
        [[0.25, -60.0, -0.04, 9.0, 0.0], [0.5, -90.0, -0.02, 3.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]]
    )
    b = -np.array([0.0, 0.0, s])
    mask = np.ones(3, bool)
    res = _solve(c, a, b, mask)
    _, optimum, _ = highs(c, a, b, mask)
    assert int(res.status) == OPTIMAL
    # Beale's optimum −1/20 at x = (1/25, 0, 1, 0), scaled by s.
    np.testing.assert_allclose(optimum, s / 20, rtol=1e-9)
    np.testing.assert_allclose(float(res.objective), optimum, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(res.x)[:4], s * np.array([1 / 25, 0, 1, 0]), atol=1e-12)


def test_no_active_rows_is_argmax_vertex():
    c = np.array([0.3, -1.0, 2.5])
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    res = _solve(c, a, np.ones(3), np.zeros(3, bool))
    assert int(res.status) == OPTIMAL
    np.testing.assert_array_equal(np.asarray(res.x), np.eye(3)[2])
    assert float(res.objective) == 2.5


def test_infeasible_reported_and_mask_repairs_it():
    c = np.array([1.0, 0.0, -1.0])
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([0.7, 0.7, -1.0])
    for mask in ([True, True, False], [False, False, True], [True, False, True]):
        mask = np.array(mask)
        res = _solve(c, a, b, mask)
        st, optimum, _ = highs(c, a, b, mask)
        if st == 2:
            assert int(res.status) == INFEASIBLE
            np.testing.assert_allclose(np.asarray(res.x), np.full(3, 1 / 3))
            np.testing.assert_allclose(float(res.objective), 0.0, atol=1e-15)
        else:
            assert int(res.status) == OPTIMAL
            np.testing.assert_allclose(float(res.objective), optimum, rtol=1e-12)
    # A zero row with positive rhs (0 ≥ 1) is infeasible.
    res = _solve(c, a, np.array([0.0, 0.0, 1.0]), np.array([False, False, True]))
    assert int(res.status) == INFEASIBLE


def test_masked_rows_are_ignored_even_if_non_finite():
    c = np.array([1.0, 2.0, 0.5])
    a = np.array([[np.nan, 1.0, 1.0], [1.0, -1.0, 0.0], [np.inf, 0.0, 0.0]])
    b = np.array([np.inf, 0.1, 3.0])
    mask = np.array([False, True, False])
    res = _solve(c, a, b, mask)
    st, optimum, _ = highs(c, np.nan_to_num(a), np.nan_to_num(b), mask)
    assert st == 0 and int(res.status) == OPTIMAL
    np.testing.assert_allclose(float(res.objective), optimum, rtol=1e-12)
    # Non-finite data on an active row or in c is a status, never NaN.
    for c_, mask_ in ((c, np.array([True, True, False])), (np.array([np.nan, 1.0, 0.0]), mask)):
        res = _solve(c_, a, b, mask_)
        assert int(res.status) == NUMERICAL_ERROR
        assert np.all(np.isfinite(np.asarray(res.x))) and np.isfinite(float(res.objective))


def test_max_iter_status():
    rng = np.random.default_rng(7)
    g = rng.normal(size=(8, 5))
    gram = g.T @ g
    c, a, b, mask = rng.normal(size=5), gram[:3], np.zeros(3), np.ones(3, bool)
    full = _solve(c, a, b, mask)
    assert int(full.status) == OPTIMAL and int(full.iterations) > 1
    capped = _solve(c, a, b, mask, max_iter=1)
    assert int(capped.status) == MAX_ITER
    assert int(capped.iterations) == 1
    np.testing.assert_allclose(np.asarray(capped.x), np.full(5, 0.2))


def test_float32_inputs():
    rng = np.random.default_rng(11)
    problems = [random_lp(rng, 6, 7) for _ in range(40)]
    c, a, b, mask = (np.stack(v) for v in zip(*problems))
    res = _solve_batch(c.astype(np.float32), a.astype(np.float32), b.astype(np.float32), mask)
    assert res.x.dtype == jnp.float32 and res.objective.dtype == jnp.float32
    checked = 0
    for i in range(len(problems)):
        st, optimum, _ = highs(c[i], a[i], b[i], mask[i])
        if st != 0 or int(res.status[i]) != OPTIMAL:
            continue  # float32 may judge a nearly infeasible LP either way
        obj_err, viol = residuals(c[i], a[i], b[i], mask[i], np.asarray(res.x[i]), optimum)
        assert obj_err < 1e-4 and viol < 1e-4, (i, obj_err, viol)
        checked += 1
    assert checked >= 25


class VariantsTest(chex.TestCase):
    # Without jit every jnp op of the solver is dispatched (and compiled) on its own,
    # which costs ~10 s on this machine for no extra coverage of the while loop (always
    # compiled); the jitted and vmapped paths are covered above.
    @chex.variants(with_jit=True)
    def test_small_lp(self):
        c = jnp.array([1.0, 3.0, 2.0])
        a = jnp.array([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0], [5.0, 5.0, 5.0]])
        b = jnp.array([0.0, 0.5, 10.0])
        mask = jnp.array([True, True, False])
        res = self.variant(linprog_simplex)(c, a, b, mask)
        _, optimum, _ = highs(c, a, b, mask)
        assert int(res.status) == OPTIMAL
        np.testing.assert_allclose(float(res.objective), optimum, rtol=1e-12)
        # The optimum: β_1 ≥ β_2 forces β = (1/2, 1/2, 0) -> 2.
        np.testing.assert_allclose(np.asarray(res.x), [0.5, 0.5, 0.0], atol=1e-14)


@pytest.mark.parametrize(
    "args, kwargs, exc, name",
    [
        ((np.ones((2, 2)), np.ones((1, 2)), np.ones(1), np.ones(1, bool)), {}, ValueError, "`c`"),
        ((np.ones(0), np.ones((1, 0)), np.ones(1), np.ones(1, bool)), {}, ValueError, "`c`"),
        ((np.ones(3, int), np.ones((1, 3)), np.ones(1), np.ones(1, bool)), {}, TypeError, "`c`"),
        ((np.ones(3), np.ones((1, 2)), np.ones(1), np.ones(1, bool)), {}, ValueError, "`a_ub`"),
        ((np.ones(3), np.ones(3), np.ones(1), np.ones(1, bool)), {}, ValueError, "`a_ub`"),
        ((np.ones(3), np.ones((2, 3)), np.ones(3), np.ones(2, bool)), {}, ValueError, "`b_ub`"),
        ((np.ones(3), np.ones((2, 3)), np.ones(2), np.ones(3, bool)), {}, ValueError, "`mask`"),
        ((np.ones(3), np.ones((2, 3)), np.ones(2), np.ones(2)), {}, TypeError, "`mask`"),
        ((np.ones(3), np.ones((2, 3)), np.ones(2), np.ones(2, bool)), {"max_iter": 0}, ValueError,
         "`max_iter`"),
        ((np.ones(3), np.ones((2, 3)), np.ones(2), np.ones(2, bool)), {"max_iter": 2.5},
         ValueError, "`max_iter`"),
    ],
)
def test_bad_static_input(args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        linprog_simplex(*args, **kwargs)
