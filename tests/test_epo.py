"""Tests of the EPO search weights.

Oracle: the LP (24) of Mahapatra & Rajan (2020) is rebuilt here in numpy from the
paper's definitions (not from the library's constraint builder) and solved with scipy's
HiGHS; the library's weights must be feasible for it and reach its optimum. Directional
checks use analytic gradients and finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog, minimize

import jaxpareto as jp
from jaxpareto.weighting.epo import EpoState, epo, epo_weights
from jaxpareto.weighting.lp import MAX_ITER, OPTIMAL

EPS = 1e-4
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}

_epo = jax.jit(epo_weights, static_argnames=("eps", "adjustment", "descent", "fallback", "max_iter"))


# ----------------------------------------------------------------------------- oracle


def oracle_adjustments(losses, pref, adjustment="paper"):
    """μ and a from the paper's definitions (eq. 9 and 13), in numpy."""
    m = len(losses)
    rl = pref * losses
    l_hat = rl / rl.sum()
    pos = l_hat > 0
    mu = np.sum(l_hat[pos] * np.log(m * l_hat[pos]))
    a = np.log(m * l_hat) - mu
    return mu, (pref * a if adjustment == "paper" else a), rl


def oracle_lp(gram, losses, pref, adjustment="paper", descent="relaxed", eps=EPS):
    """The LP (24) as (objective, rows, rhs, balance, Ca), rows meaning rows @ β ≥ rhs."""
    m = len(losses)
    mu, a, rl = oracle_adjustments(losses, pref, adjustment)
    ca = np.array([a @ gram[:, j] for j in range(m)])  # aᵀc_j
    if mu > eps:
        j_set = [j for j in range(m) if ca[j] > 0]
        j_star = [j for j in range(m) if rl[j] == rl.max()]
        rows, rhs = [], []
        for j in range(m):
            if j in j_star:
                rows.append(gram[:, j]), rhs.append(0.0)
            elif not j_set:
                rows.append(gram[:, j]), rhs.append(0.0)
            elif j not in j_set:
                rows.append(gram[:, j]), rhs.append(ca[j])
        return ca, np.array(rows), np.array(rhs), True, ca
    rows = [gram[:, j] for j in range(m)]
    rhs = [0.0] * m
    if descent == "restricted":
        rows.append(ca), rhs.append(min(ca.max(), 0.0))
    return gram @ np.ones(m), np.array(rows), np.array(rhs), False, ca


def highs(obj, rows, rhs):
    m = len(obj)
    res = linprog(-obj, A_ub=-rows, b_ub=-rhs, A_eq=np.ones((1, m)), b_eq=[1.0],
                  bounds=(0, None), method="highs", options=_HIGHS_OPTIONS)
    return res.status, (-res.fun if res.status == 0 else None)


def check_against_oracle(gram, losses, pref, weights, adjustment="paper", descent="relaxed"):
    """Return (objective error, violation, status) of ``weights`` for the oracle LP;
    errors are relative to the LP's natural scale max|objective vector|."""
    obj, rows, rhs, _, _ = oracle_lp(gram, losses, pref, adjustment, descent)
    status, optimum = highs(obj, rows, rhs)
    if status != 0:
        return None, None, status
    w = np.asarray(weights, np.float64)
    scale = max(np.max(np.abs(obj)), abs(optimum), 1e-300)
    obj_err = abs(obj @ w - optimum) / scale
    # Rows are compared at their own scale, floored at 1e-6 of the Gramian's: a row of
    # rounding noise (the restricted row Ca on the ray) is not a constraint to 1e-9.
    row_scale = np.maximum(np.max(np.abs(rows), axis=1), np.abs(rhs))
    row_scale = np.maximum(row_scale, 1e-6 * np.max(np.abs(gram)))
    viol = max(np.max((rhs - rows @ w) / row_scale), -np.min(w), abs(w.sum() - 1))
    return obj_err, max(viol, 0.0), status


def ambiguous(gram, losses, pref, adjustment="paper"):
    """Instances where rounding could flip the mode or the set J (skipped, counted)."""
    mu, a, _ = oracle_adjustments(losses, pref, adjustment)
    ca = gram @ a
    tiny = 1e-10 * np.max(np.abs(gram)) * np.max(np.abs(a))
    return abs(mu - EPS) < 1e-10 or np.any((ca != 0) & (np.abs(ca) < tiny))


# ----------------------------------------------------------------------------- instances

FAMILIES = ("generic", "rank_deficient", "duplicate", "opposite", "on_ray", "near_ray",
            "tie", "j_empty", "zero_gradient")


def make_instance(rng, m, family, adjustment="paper"):
    """(gram [m, m], losses [m], preference [m]) of the given family."""
    n = int(rng.integers(m, 2 * m + 1))
    if family == "rank_deficient":
        n = int(rng.integers(1, m)) if m > 1 else 1
    pref = rng.uniform(0.2, 2.0, m)
    losses = rng.uniform(0.1, 2.0, m)
    g = rng.normal(size=(n, m)) * np.exp(rng.normal(0, 0.5, m))  # columns: task gradients
    i, j = rng.choice(m, 2, replace=False)
    if family == "duplicate":
        g[:, j] = g[:, i]
    elif family == "opposite":
        g[:, j] = -g[:, i]
    elif family == "on_ray":
        losses = rng.uniform(0.5, 2.0) / pref
    elif family == "near_ray":
        losses = (1 + 0.01 * rng.normal(size=m)) / pref
    elif family == "tie":
        top = int(np.argmax(pref * losses))
        other = (top + 1) % m
        pref[other], losses[other] = pref[top], losses[top]
    elif family == "j_empty":
        # Gradients with g_jᵀ(G a) < 0 for every j: G a = κ e_0 with κ > 0 and every
        # gradient has a negative first coordinate.
        _, a, _ = oracle_adjustments(losses, pref, adjustment)
        s = np.where(a < 0, rng.uniform(1, 2, m), rng.uniform(0, 0.1, m))
        w = rng.normal(size=(m, m))
        w -= np.outer(w @ a, a) / (a @ a)
        g = np.vstack([-s, w])
        if a @ s >= 0:  # κ = −aᵀs must be positive
            g[0] = np.where(a < 0, -s, 0.0)
    elif family == "zero_gradient":
        g[:, j] = 0
    return g.T @ g, losses, pref


def make_batch(rng, m, count, adjustment="paper"):
    fams = [FAMILIES[k % len(FAMILIES)] for k in range(count)]
    inst = [make_instance(rng, m, f, adjustment) for f in fams]
    return fams, [np.stack(v) for v in zip(*inst)]


# ----------------------------------------------------------------------------- sweep


@pytest.mark.parametrize("m, count", [(2, 540), (20, 540)])
def test_matches_highs_on_random_instances(m, count):
    """Default options (paper adjustments, relaxed descent) against the HiGHS oracle."""
    rng = np.random.default_rng(2024 + m)
    fams, (grams, losses, prefs) = make_batch(rng, m, count)
    # The fallback is never needed here (the relaxed LP is always feasible), so the
    # cheaper-to-compile preference fallback is used; fallback=False is asserted.
    solve = jax.jit(jax.vmap(lambda g, l, r: epo_weights(g, l, r, fallback="preference")))
    res = solve(grams, losses, prefs)
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w)) and np.allclose(w.sum(1), 1, atol=1e-12)
    worst_obj = worst_viol = 0.0
    skipped, modes, j_empty = 0, set(), 0
    for k in range(count):
        if ambiguous(grams[k], losses[k], prefs[k]):
            skipped += 1
            continue
        mu, a, _ = oracle_adjustments(losses[k], prefs[k])
        np.testing.assert_allclose(float(res.non_uniformity[k]), max(mu, 0), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(np.asarray(res.adjustments[k]), a, rtol=1e-9, atol=1e-12)
        _, _, _, balance, ca = oracle_lp(grams[k], losses[k], prefs[k])
        assert bool(res.descent[k]) == (not balance), k
        modes.add(balance)
        j_empty += balance and not np.any(ca > 0)
        assert int(res.lp_status[k]) == OPTIMAL and not bool(res.fallback[k]), (k, fams[k])
        obj_err, viol, status = check_against_oracle(grams[k], losses[k], prefs[k], w[k])
        assert status == 0
        worst_obj, worst_viol = max(worst_obj, obj_err), max(worst_viol, viol)
        obj_vec = oracle_lp(grams[k], losses[k], prefs[k])[0]
        np.testing.assert_allclose(float(res.objective[k]), obj_vec @ w[k], rtol=1e-9,
                                   atol=1e-12 * np.max(np.abs(obj_vec)))
    print(f"m={m}: {count} instances, {skipped} skipped as ambiguous, {j_empty} with J empty, "
          f"worst rel objective error {worst_obj:.2e}, worst violation {worst_viol:.2e}, "
          f"max pivots {int(np.max(res.iterations))}")
    assert worst_obj <= 1e-9 and worst_viol <= 1e-9
    assert modes == {True, False}  # both balance and descent instances were checked
    assert j_empty > 0
    assert skipped <= count // 20


def test_reference_adjustment_restricted_descent():
    """adjustment="reference", descent="restricted", default min-norm fallback: LP
    optimum vs HiGHS; where the restricted LP is infeasible, the min-norm weights
    (checked against scipy SLSQP on min βᵀCβ over the simplex)."""
    m, count = 4, 240
    rng = np.random.default_rng(77)
    _, (grams, losses, prefs) = make_batch(rng, m, count, adjustment="reference")
    # Two thirds of the instances close to the ray (μ ≤ eps mostly): descent mode, where
    # the restricted row lives.
    near = np.arange(count) % 3 != 0
    losses[near] = (1 + 0.01 * rng.normal(size=(near.sum(), m))) / prefs[near]
    solve = jax.jit(jax.vmap(
        lambda g, l, r: epo_weights(g, l, r, adjustment="reference", descent="restricted")))
    res = solve(grams, losses, prefs)
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w))
    worst_obj = worst_viol = 0.0
    fallbacks = descent_mode = binding = 0
    for k in range(count):
        if ambiguous(grams[k], losses[k], prefs[k], "reference"):
            continue
        _, a, _ = oracle_adjustments(losses[k], prefs[k], "reference")
        np.testing.assert_allclose(np.asarray(res.adjustments[k]), a, rtol=1e-9, atol=1e-12)
        obj, rows, rhs, balance, _ = oracle_lp(grams[k], losses[k], prefs[k], "reference",
                                               "restricted")
        assert bool(res.descent[k]) == (not balance)
        obj_err, viol, status = check_against_oracle(
            grams[k], losses[k], prefs[k], w[k], "reference", "restricted")
        descent_mode += not balance
        if status == 2:
            fallbacks += 1
            assert bool(res.fallback[k]) and int(res.lp_status[k]) != OPTIMAL
            gram = grams[k]
            sol = minimize(lambda b: b @ gram @ b, np.full(m, 1 / m), jac=lambda b: 2 * gram @ b,
                           method="SLSQP", bounds=[(0, 1)] * m,
                           constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1}],
                           options={"ftol": 1e-15, "maxiter": 500})
            scale = np.max(np.diag(gram))
            assert w[k] @ gram @ w[k] <= sol.fun + 1e-8 * scale
            continue
        assert int(res.lp_status[k]) == OPTIMAL and not bool(res.fallback[k])
        worst_obj, worst_viol = max(worst_obj, obj_err), max(worst_viol, viol)
        if not balance:  # does the restricted row change the optimum?
            _, relaxed_opt = highs(obj, rows[:-1], rhs[:-1])
            binding += relaxed_opt - obj @ w[k] > 1e-6 * np.max(np.abs(obj))
    print(f"reference/restricted m={m}: {descent_mode} descent-mode instances, {binding} where "
          f"the restricted row binds, {fallbacks} infeasible -> min-norm fallback, worst "
          f"objective error {worst_obj:.2e}, worst violation {worst_viol:.2e}")
    assert worst_obj <= 1e-9 and worst_viol <= 1e-9
    assert descent_mode > 100 and binding > 20 and fallbacks > 0


# ----------------------------------------------------------------------------- behaviour


def _problem(theta):
    """Three quadratic losses in R^2 (n < m: a rank-deficient Gramian)."""
    targets = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    losses = 0.5 * np.sum((theta[None] - targets) ** 2, axis=1) + 0.1
    grads = theta[None] - targets  # rows: ∇l_i
    return losses, grads


def _mu(losses, pref):
    return oracle_adjustments(losses, pref)[0]


def test_direction_decreases_non_uniformity():
    """Balance mode: moving along −d, d = Gᵀβ, changes μ at the rate −βᵀCa / Σ r l
    (paper adjustments: ∇μ = G a / Σ r l); checked by central finite differences."""
    pref = np.array([1.0, 2.0, 3.0])
    theta = np.array([0.3, -0.2])
    losses, grads = _problem(theta)
    res = _epo(grads @ grads.T, losses, pref)
    assert not bool(res.descent) and int(res.lp_status) == OPTIMAL
    d = grads.T @ np.asarray(res.weights)
    h = 1e-6
    rate = (_mu(_problem(theta - h * d)[0], pref) - _mu(_problem(theta + h * d)[0], pref)) / (2 * h)
    assert rate < 0
    np.testing.assert_allclose(rate, -float(res.objective) / np.sum(pref * losses), rtol=1e-6)
    # And a small step really lowers μ.
    assert _mu(_problem(theta - 1e-2 * d)[0], pref) < _mu(losses, pref)


def test_descent_mode_decreases_every_loss():
    theta = np.array([0.3, -0.2])
    losses, grads = _problem(theta)
    pref = 1.0 / losses  # on the ray: μ = 0
    res = _epo(grads @ grads.T, losses, pref)
    assert bool(res.descent) and int(res.lp_status) == OPTIMAL
    d = grads.T @ np.asarray(res.weights)
    h = 1e-6
    rates = (_problem(theta - h * d)[0] - _problem(theta + h * d)[0]) / (2 * h)
    assert np.all(rates <= 1e-9)
    np.testing.assert_allclose(rates, -grads @ d, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "case", ["zero_losses", "negative_losses", "nan_losses", "inf_losses", "zero_gradients",
             "nan_gram", "opposite_gradients", "collinear_gradients", "bad_traced_preference"],
)
def test_degenerate_inputs_are_finite_and_flagged(case):
    rng = np.random.default_rng(5)
    g = rng.normal(size=(4, 3))
    gram, losses, pref = g.T @ g, np.array([0.5, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])
    if case == "zero_losses":
        losses = np.array([0.0, 1.0, 2.0])
    elif case == "negative_losses":
        losses = np.array([-0.5, 1.0, 2.0])
    elif case == "nan_losses":
        losses = np.array([np.nan, 1.0, 2.0])
    elif case == "inf_losses":
        losses = np.array([np.inf, 1.0, 2.0])
    elif case == "zero_gradients":
        gram = np.zeros((3, 3))
    elif case == "nan_gram":
        gram = gram.copy()
        gram[0, 1] = np.nan
    elif case in ("opposite_gradients", "collinear_gradients"):
        v = rng.normal(size=4)
        sign = -1.0 if case == "opposite_gradients" else 2.0
        g = np.stack([v, sign * v, v], axis=1)
        gram = g.T @ g
        losses = 1.0 / pref  # descent mode
    res = _epo(gram, losses, pref) if case != "bad_traced_preference" else \
        _epo(gram, losses, np.array([-1.0, 1.0, np.nan]))  # traced under jit
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    np.testing.assert_allclose(w.sum(), 1, atol=1e-12)
    for field in res:
        assert np.all(np.isfinite(np.asarray(field, np.float64)))
    if case in ("zero_losses", "negative_losses", "nan_losses", "inf_losses"):
        assert bool(res.clipped_losses) and not bool(res.fallback)
        # The clipped task has (almost) zero relative loss: it gets the most negative
        # adjustment and the LP is still solved exactly.
        assert int(np.argmin(np.asarray(res.adjustments))) == 0
        assert int(res.lp_status) == OPTIMAL
    elif case in ("zero_gradients", "nan_gram"):
        assert bool(res.fallback) and bool(res.stationary)
        np.testing.assert_allclose(w, np.full(3, 1 / 3))  # min-norm of the stand-in
    elif case == "opposite_gradients":
        # d·g_1 ≥ 0 and d·g_2 = -d·g_1 ≥ 0 force d = 0: Pareto stationary.
        assert int(res.lp_status) == OPTIMAL and bool(res.stationary)
        assert abs(w @ gram @ w) <= 1e-12 * np.max(np.diag(gram))
    elif case == "collinear_gradients":
        assert int(res.lp_status) == OPTIMAL and not bool(res.stationary)
        obj_err, viol, _ = check_against_oracle(gram, losses, pref, w)
        assert obj_err <= 1e-9 and viol <= 1e-9
    else:
        assert bool(res.invalid_preference)
        obj_err, viol, _ = check_against_oracle(gram, losses, np.ones(3), w)
        assert obj_err <= 1e-9 and viol <= 1e-9


def test_max_iter_falls_back():
    rng = np.random.default_rng(9)
    g = rng.normal(size=(6, 3))
    gram, losses, pref = g.T @ g, np.array([0.3, 1.0, 2.0]), np.array([1.0, 2.0, 1.0])
    res = _epo(gram, losses, pref, max_iter=1, fallback="preference")
    assert int(res.lp_status) == MAX_ITER and bool(res.fallback)
    np.testing.assert_allclose(np.asarray(res.weights), pref / pref.sum(), rtol=1e-12)


def test_float32_and_vmap_over_preferences():
    """The weighting with a run-time preference, vmapped over a batch of preferences
    (how hypernetwork training uses it), in float32, against the float64 HiGHS oracle."""
    rng = np.random.default_rng(13)
    g = rng.normal(size=(5, 3))
    gram, losses = g.T @ g, np.array([0.4, 1.0, 1.7])
    prefs = rng.uniform(0.2, 2.0, size=(24, 3))
    f32 = np.float32
    weighting = epo()
    state = weighting.init(3, dtype=jnp.float32)

    @jax.jit
    @jax.vmap
    def batch(pref):
        return weighting.update(gram.astype(f32), state, losses=losses.astype(f32),
                                preference=pref)

    w, new_state = batch(prefs.astype(f32))
    # The preference is a parameter: a float64 one does not upcast float32 data.
    shapes = jax.eval_shape(epo_weights, gram.astype(f32), losses.astype(f32), prefs[0])
    assert shapes.weights.dtype == jnp.float32 and shapes.objective.dtype == jnp.float32
    assert w.dtype == jnp.float32 and new_state.non_uniformity.dtype == jnp.float32
    w = np.asarray(w)
    assert np.all(np.isfinite(w)) and np.allclose(w.sum(1), 1, atol=1e-6)
    checked = 0
    for k in range(len(prefs)):
        if ambiguous(gram, losses, prefs[k]):
            continue
        mu = oracle_adjustments(losses, prefs[k])[0]
        if abs(mu - EPS) < 1e-5:
            continue  # float32 may pick the other mode
        assert bool(new_state.descent[k]) == (mu <= EPS)
        obj_err, viol, status = check_against_oracle(gram, losses, prefs[k], w[k])
        assert status == 0 and int(new_state.lp_status[k]) == OPTIMAL
        assert obj_err <= 1e-4 and viol <= 1e-4, (k, obj_err, viol)
        checked += 1
    assert checked >= 20


# ----------------------------------------------------------------------------- weighting


def test_weighting_factory_under_jit():
    rng = np.random.default_rng(21)
    g = rng.normal(size=(5, 3))
    gram, losses, pref = g.T @ g, np.array([0.4, 1.0, 1.7]), np.array([2.0, 1.0, 1.0])
    fixed = epo(pref)
    assert fixed.num_tasks == 3 and epo().num_tasks is None
    state = fixed.init(3, dtype=jnp.float64)
    assert isinstance(state, EpoState)
    np.testing.assert_allclose(np.asarray(state.weights), np.full(3, 1 / 3))
    assert int(state.lp_status) == 0 and not bool(state.descent) and not bool(state.fallback)
    w, new_state = jax.jit(lambda g, l, s: fixed.update(g, s, losses=l))(gram, losses, state)
    direct = _epo(gram, losses, pref)
    np.testing.assert_allclose(np.asarray(w), np.asarray(direct.weights), rtol=1e-12)
    assert float(new_state.non_uniformity) == pytest.approx(float(direct.non_uniformity))
    assert int(new_state.lp_status) == OPTIMAL and not bool(new_state.fallback)
    assert bool(new_state.descent) == bool(direct.descent)
    obj_err, viol, _ = check_against_oracle(gram, losses, pref, w)
    assert obj_err <= 1e-9 and viol <= 1e-9


def test_weighting_bad_input():
    with pytest.raises(ValueError, match="`losses`"):
        epo(np.ones(3)).update(np.eye(3), epo(np.ones(3)).init(3))
    with pytest.raises(ValueError, match="`num_tasks`"):
        epo(np.ones(3)).init(4)
    with pytest.raises(ValueError, match="`preference`"):
        epo(np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="`preference`"):
        epo(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="`descent`"):
        epo(np.ones(2), descent="strict")


# ----------------------------------------------------------------------------- validation

_G, _L, _R = np.eye(3), np.ones(3), np.ones(3)


@pytest.mark.parametrize(
    "args, kwargs, exc, name",
    [
        ((np.ones((3, 2)), _L, _R), {}, ValueError, "`gram`"),
        ((np.ones(3), _L, _R), {}, ValueError, "`gram`"),
        ((np.eye(3, dtype=int), _L, _R), {}, TypeError, "`gram`"),
        ((_G, np.ones(2), _R), {}, ValueError, "`losses`"),
        ((_G, np.ones((3, 1)), _R), {}, ValueError, "`losses`"),
        ((_G, _L, np.ones(4)), {}, ValueError, "`preference`"),
        ((_G, _L, np.array([1.0, np.inf, 1.0])), {}, ValueError, "`preference`"),
        ((_G, _L, np.array([1.0, -1.0, 1.0])), {}, ValueError, "`preference`"),
        ((_G, _L, np.array([1.0, 0.0, 1.0])), {}, ValueError, "`preference`"),
        ((_G, _L, _R), {"adjustment": "exact"}, ValueError, "`adjustment`"),
        ((_G, _L, _R), {"descent": "none"}, ValueError, "`descent`"),
        ((_G, _L, _R), {"fallback": "uniform"}, ValueError, "`fallback`"),
        ((_G, _L, _R), {"eps": -1.0}, ValueError, "`eps`"),
        ((_G, _L, _R), {"max_iter": 0}, ValueError, "`max_iter`"),
    ],
)
def test_bad_static_input(args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        epo_weights(*args, **kwargs)


def test_eager_epo_and_lp_calls_reuse_one_program():
    """``epo_weights`` and ``linprog_simplex`` are jitted inside: eager calls with new
    values of the same shapes and options do not trace again (each used to recompile,
    0.7–1.3 s a call); a new shape traces once more. Same answers as under a user's jit."""
    import importlib

    epo_mod = importlib.import_module("jaxpareto.weighting.epo")
    lp_mod = importlib.import_module("jaxpareto.weighting.lp")

    rng = np.random.default_rng(7)
    before_epo, before_lp = epo_mod._epo._cache_size(), lp_mod._linprog._cache_size()
    for i in range(3):
        J = rng.normal(size=(3, 5))
        gram, losses = jnp.asarray(J @ J.T), jnp.asarray(rng.uniform(0.5, 2, 3))
        pref = jnp.asarray(rng.uniform(0.2, 1, 3))
        res = jp.weighting.epo_weights(gram, losses, pref)
        jitted = jax.jit(jp.weighting.epo_weights)(gram, losses, pref)
        np.testing.assert_allclose(res.weights, jitted.weights, rtol=1e-12, atol=1e-15)
        lp_res = jp.linprog_simplex(jnp.asarray(rng.normal(size=3)), gram, losses,
                                    jnp.asarray([True, False, True]))
        assert lp_res.x.shape == (3,)
    assert epo_mod._epo._cache_size() <= before_epo + 1
    assert lp_mod._linprog._cache_size() <= before_lp + 2  # EPO's own LP shape + this one
    grown = lp_mod._linprog._cache_size()
    jp.linprog_simplex(jnp.ones(4), jnp.eye(4), jnp.zeros(4), jnp.ones(4, bool))
    assert lp_mod._linprog._cache_size() == grown + 1
