"""Failure-behaviour catalogue: what every public entry point does with bad input.

One parametrized test, ``test_case[<id>]``, per row of the README "Failure behaviour"
table (the ids are the table's first column; ``test_readme_table_matches`` checks that
the two agree, and fails if the README section is renamed or gone). Each case either
expects a ``ValueError`` / ``TypeError`` raised at trace time whose message names the
argument, or runs the public API end to end (``optax.chain(jp.<method>(...), optax.sgd(...))``
inside ``jax.jit`` + ``jax.lax.scan``) and checks that every parameter, update and
state leaf stays finite, that the documented flag is set, and that the numbers are
right against an independent oracle (analytic solutions, scipy's SLSQP and HiGHS).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linprog, minimize

import jaxpareto as jp
from jaxpareto import checkpoint
from jaxpareto.weighting import INFEASIBLE, MAX_ITER, NUMERICAL_ERROR, OPTIMAL

N = 3  # parameters of the toy model: params = {"w": [N]}, Jacobian {"w": [m, N]}
METHODS = ("mgda", "epo", "pmtl", "linear", "chebyshev")
G_GOOD = np.array([[1.0, 0.5, 0.0], [-0.4, 1.0, 0.3]])  # two conflicting gradients
L_GOOD = np.array([1.0, 2.0])

CASES: dict[str, callable] = {}


def case(case_id: str):
    def register(fn):
        assert case_id not in CASES, case_id
        CASES[case_id] = fn
        return fn

    return register


# ----------------------------------------------------------------------------- helpers


def _preference(m):
    return 1.0 + jnp.arange(m) / m


def _transform(name: str, m: int):
    r = _preference(m)
    return {
        "mgda": lambda: jp.mgda(num_tasks=m),
        "epo": lambda: jp.epo(r),
        "pmtl": lambda: jp.pmtl(jnp.eye(m) + 0.2, index=0),
        "linear": lambda: jp.linear(r),
        "chebyshev": lambda: jp.chebyshev(r),
    }[name]()


@functools.lru_cache(maxsize=None)
def _runner(name: str, m: int, dtype: str):
    """Jitted ``K`` steps of ``optax.chain(jp.<name>, optax.sgd(1.0))`` (a ``scan``).

    With a unit learning rate the optax update is exactly ``−d``, ``d`` the aggregated
    direction ``Σ w_i g_i``."""
    tx = optax.chain(_transform(name, m), optax.sgd(1.0))

    @jax.jit
    def run(params, jacs, losses, prefs):
        def body(carry, inp):
            p, s = carry
            j, l, r = inp
            # A run-time preference (traced) overrides the constructor's; MGDA and PMTL
            # ignore it.
            upd, s = tx.update({"w": j}, s, p, losses=l, preference=r)
            p = optax.apply_updates(p, upd)
            return (p, s), (p["w"], upd["w"], s[0])

        _, out = jax.lax.scan(body, (params, tx.init(params)), (jacs, losses, prefs))
        return out

    return run


def _steps(name, jacs, losses, dtype=jnp.float64, prefs=None):
    """Runs the steps ``jacs: [K, m, N]``, ``losses: [K, m]``; returns numpy
    ``(params [K, N], directions d = −update [K, N], AggregateState with leading axis
    K)``. A single step is run twice (K = 2 always: one compiled program per method).
    ``prefs``: ``[K, m]`` or ``[m]`` run-time preferences (default: the constructor's)."""
    jacs = jnp.asarray(jacs, dtype)
    losses = jnp.asarray(losses, dtype)
    if jacs.shape[0] == 1:
        jacs, losses = jnp.concatenate([jacs, jacs]), jnp.concatenate([losses, losses])
    m = jacs.shape[1]
    prefs = jnp.broadcast_to(_preference(m) if prefs is None else jnp.asarray(prefs), (2, m))
    params0 = {"w": jnp.full((N,), 0.5, dtype)}
    run = _runner(name, m, jnp.dtype(dtype).name)
    params, updates, state = run(params0, jacs, losses, prefs.astype(jnp.float64))
    _assert_finite(params, updates, state)
    assert params.dtype == dtype and updates.dtype == dtype
    return np.asarray(params), -np.asarray(updates), jax.tree_util.tree_map(np.asarray, state)


def _assert_finite(*trees):
    for leaf in jax.tree_util.tree_leaves(trees):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact) or leaf.dtype.kind == "V":
            assert np.all(np.isfinite(leaf.astype(np.float64))), leaf


def _bad_then_good(name, bad_jac, bad_losses):
    """Step 1 bad, step 2 good: step 1 must be skipped, step 2 must equal the first
    step of an all-good run (the bad step left no trace in the state)."""
    params, upd, state = _steps(name, [bad_jac, G_GOOD], [bad_losses, L_GOOD])
    ref_params, ref_upd, ref_state = _steps(name, [G_GOOD, G_GOOD], [L_GOOD, L_GOOD])
    np.testing.assert_array_equal(params[0], np.full(N, 0.5))  # unchanged
    np.testing.assert_array_equal(upd[0], 0.0)
    np.testing.assert_array_equal(state.skipped, [1, 1])
    np.testing.assert_array_equal(state.weights[0], np.full(2, 0.5))  # init weights kept
    np.testing.assert_allclose(upd[1], ref_upd[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ref_state.skipped, [0, 0])


def _min_norm_oracle(gram):
    """scipy SLSQP on the simplex QP ``min βᵀCβ`` from the best of a few starts."""
    m = gram.shape[0]
    s = np.max(np.diag(gram))
    c = gram / s
    best = None
    for start in [np.full(m, 1.0 / m), *np.eye(m)]:
        res = minimize(
            lambda b: b @ c @ b, start, jac=lambda b: 2 * c @ b, method="SLSQP",
            bounds=[(0, 1)] * m, constraints=[{"type": "eq", "fun": lambda b: np.sum(b) - 1}],
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        if best is None or res.fun < best.fun:
            best = res
    return best.fun * s


def _kkt(gram, w):
    """Scale-free KKT residual of the simplex QP, computed here in numpy."""
    g = gram @ w
    v = w @ g
    s = np.max(np.diag(gram))
    return max(np.max(np.maximum(v - g, 0)) / s, np.max(w * np.abs(g - v)) / s,
               abs(np.sum(w) - 1) + np.sum(np.maximum(-w, 0)))


# ------------------------------------------------------- trace-time errors (no compile)


def _two_losses(p):
    return jnp.stack([jnp.sum(p**2), jnp.sum((p - 1.0) ** 2)])


@case("int-params")
def _():
    for fn in (jp.value_and_jacobian(_two_losses), jax.jit(jp.value_and_jacobian(_two_losses))):
        with pytest.raises(TypeError, match="floating parameters"):
            fn(jnp.arange(3))
    with pytest.raises(TypeError, match="`params` has a leaf of dtype int"):
        jp.ppe.corrector(_two_losses, jnp.arange(3), steps=1)


@case("scalar-loss-output")
def _():
    with pytest.raises(ValueError, match="`fun` must return a 1-D vector"):
        jp.value_and_jacobian(lambda p: jnp.sum(p))(jnp.ones(3))
    with pytest.raises(ValueError, match="`loss_fn` must return a 1-D vector"):
        jp.ppe.corrector(lambda p: jnp.sum(p), jnp.ones(3), steps=1)


@case("int-jacobian")
def _():
    params = {"w": jnp.ones(N)}
    for name in METHODS:
        tx = _transform(name, 2)
        with pytest.raises(TypeError, match="`jac` must have a floating dtype"):
            tx.update({"w": jnp.ones((2, N), jnp.int32)}, tx.init(params), params,
                      losses=jnp.asarray(L_GOOD))
    with pytest.raises(TypeError, match="`jac` must have a floating dtype"):
        jp.gramian({"w": jnp.ones((2, N), jnp.int32)})


@case("int-losses")
def _():
    params = {"w": jnp.ones(N)}
    for name in METHODS:
        tx = _transform(name, 2)
        with pytest.raises(TypeError, match="`losses` must have a floating dtype"):
            jax.jit(lambda j, l: tx.update(j, tx.init(params), params, losses=l))(
                {"w": jnp.asarray(G_GOOD)}, jnp.array([1, 2]))
    with pytest.raises(TypeError, match="`losses` must have a floating dtype"):
        jp.epo_weights(jnp.eye(2), jnp.array([1, 2]), jnp.ones(2))


@case("mismatched-task-axis")
def _():
    params = {"a": jnp.ones(N), "b": jnp.ones(N)}
    jac = {"a": jnp.ones((2, N)), "b": jnp.ones((3, N))}
    for name in METHODS:
        tx = _transform(name, 2)
        with pytest.raises(ValueError, match="`jac` leaves must share a leading task axis"):
            tx.update(jac, tx.init(params), params, losses=jnp.asarray(L_GOOD))


@case("jacobian-m-mismatch")
def _():
    params = {"w": jnp.ones(N)}
    for name in METHODS:
        tx = _transform(name, 3)
        with pytest.raises(ValueError, match=r"`updates` \(the Jacobian\) has m=2 tasks"):
            tx.update({"w": jnp.asarray(G_GOOD)}, tx.init(params), params,
                      losses=jnp.asarray(L_GOOD))


@case("mismatched-pytree")
def _():
    def losses(p):
        return jnp.stack([jnp.sum(p["a"] ** 2), jnp.sum((p["b"] - 1) ** 2)])

    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match="`v` must have the pytree structure of `params`"):
        jp.ppe.hvp(losses, params, jnp.array([0.5, 0.5]), {"a": jnp.ones(2)})
    with pytest.raises(ValueError, match="`v` leaf shape"):
        jp.ppe.hvp(losses, params, jnp.array([0.5, 0.5]), {"a": jnp.ones(2), "b": jnp.ones(3)})


@case("checkpoint-mismatched-tree")
def _(tmp_path):
    params = {"w": jnp.ones(N)}
    tx = optax.chain(jp.epo(_preference(2)), optax.adam(1e-3))
    path = tmp_path / "state.npz"
    checkpoint.save(path, (params, tx.init(params)))
    with pytest.raises(ValueError, match="`like` has a different pytree structure"):
        checkpoint.restore(path, (params, optax.adam(1e-3).init(params)))
    with pytest.raises(ValueError, match="`like` leaf 0 is float32"):
        checkpoint.restore(path, ({"w": jnp.ones(N, jnp.float32)}, tx.init(params)))
    with pytest.raises(ValueError, match=r"`like` leaf 0 is float64\[4\]"):
        checkpoint.restore(path, ({"w": jnp.ones(N + 1)}, tx.init(params)))


@case("combine-weights-length")
def _():
    with pytest.raises(ValueError, match="`weights` shape"):
        jp.combine({"w": jnp.asarray(G_GOOD)}, jnp.ones(3) / 3)
    with pytest.raises(TypeError, match="`weights` must have a floating dtype"):
        jp.combine({"w": jnp.asarray(G_GOOD)}, jnp.array([1, 0]))


@case("losses-wrong-length")
def _():
    params = {"w": jnp.ones(N)}
    for name in METHODS:
        tx = _transform(name, 2)
        with pytest.raises(ValueError, match=r"`losses` must have shape \(2,\)"):
            tx.update({"w": jnp.asarray(G_GOOD)}, tx.init(params), params, losses=jnp.ones(3))


@case("missing-losses")
def _():
    params = {"w": jnp.ones(N)}
    for name in ("epo", "pmtl", "chebyshev"):
        tx = _transform(name, 2)
        with pytest.raises(ValueError, match="`losses`.*required"):
            tx.update({"w": jnp.asarray(G_GOOD)}, tx.init(params), params)


def _preference_entry_points(r):
    """Every public function taking a preference, called with ``r`` (m = 2)."""
    params = {"w": jnp.ones(N)}
    hparams = _hypernet()
    tx = jp.linear(num_tasks=2)
    return {
        "jp.epo": lambda: jp.epo(r),
        "jp.linear": lambda: jp.linear(r),
        "jp.chebyshev": lambda: jp.chebyshev(r),
        "jp.epo_weights": lambda: jp.epo_weights(jnp.eye(2), jnp.ones(2), r),
        "jp.linear_weights": lambda: jp.linear_weights(r),
        "tx.update(preference=)": lambda: tx.update(
            {"w": jnp.asarray(G_GOOD)}, tx.init(params), params, preference=r),
        "hypernetwork.apply": lambda: jp.hypernetwork.apply(hparams, r),
        "ppe.trace": lambda: jp.ppe.trace(_two_losses, jnp.ones(2), "toward", 2, preference=r),
        "ppe.toward_direction": lambda: jp.ppe.toward_direction(jnp.ones(2), r),
    }


def _check_preference_errors(r, pattern, exc=ValueError):
    for where, call in _preference_entry_points(r).items():
        with pytest.raises(exc, match=pattern):
            call()
            pytest.fail(f"{where} accepted preference {r}")


@case("pref-zero")
def _():
    _check_preference_errors(jnp.array([0.0, 1.0]), "`preference` must be strictly positive")


@case("pref-negative")
def _():
    _check_preference_errors(jnp.array([-1.0, 2.0]), "`preference` must be strictly positive")


@case("pref-nan")
def _():
    _check_preference_errors(jnp.array([jnp.nan, 1.0]), "`preference` must be finite")
    _check_preference_errors(jnp.array([jnp.inf, 1.0]), "`preference` must be finite")


@case("pref-wrong-length")
def _():
    r = jnp.ones(3)
    params = {"w": jnp.ones(N)}
    tx = jp.epo(_preference(2))
    for call in (
        lambda: tx.update({"w": jnp.asarray(G_GOOD)}, tx.init(params), params,
                          losses=jnp.asarray(L_GOOD), preference=r),
        lambda: jp.epo_weights(jnp.eye(2), jnp.ones(2), r),
        lambda: jp.hypernetwork.apply(_hypernet(), r),
        lambda: jp.ppe.trace(_two_losses, jnp.ones(2), "toward", 2, preference=r),
    ):
        with pytest.raises(ValueError, match=r"`preference` must have shape \(2,\)"):
            call()
    # A constructor preference fixes m; a Jacobian with another m is then the error.
    tx3 = jp.linear(r)
    with pytest.raises(ValueError, match=r"`updates` \(the Jacobian\) has m=2 tasks"):
        tx3.update({"w": jnp.asarray(G_GOOD)}, tx3.init(params), params)


@case("m1-raises")
def _():
    # Every weighting accepts one task (case m1-scalarization); only the methods that
    # need a front (continuation, hypernetworks) still need m >= 2, and m = 0 never works.
    with pytest.raises(ValueError, match="`num_tasks` must be an int >= 1"):
        jp.weighting.mgda().init(0)
    with pytest.raises(ValueError, match="continuation needs m >= 2"):
        jp.ppe.corrector(lambda p: jnp.sum(p**2)[None], jnp.ones(2), steps=1)
    with pytest.raises(ValueError, match="`num_tasks` must be >= 2"):
        jp.hypernetwork.init(jax.random.PRNGKey(0), {"w": jnp.ones(2)}, num_tasks=1)


@case("pmtl-bad-index")
def _():
    for index in (3, -1):
        with pytest.raises(ValueError, match=r"`index` must be an int in \[0, 3\)"):
            jp.pmtl(jnp.eye(3) + 0.2, index=index)
    with pytest.raises(ValueError, match="`preferences` must be finite, non-negative"):
        jp.pmtl(-(jnp.eye(3) + 0.2), index=0)


@case("int-template")
def _():
    with pytest.raises(TypeError, match="`target_params` has a leaf of dtype int32"):
        jp.hypernetwork.init(jax.random.PRNGKey(0), {"w": jnp.ones(2, jnp.int32)})


# ------------------------------------------------------- run time: fallbacks and flags


@case("nan-losses")
def _():
    for name in METHODS:
        _bad_then_good(name, G_GOOD, [np.nan, 2.0])


@case("inf-losses")
def _():
    for name in METHODS:
        _bad_then_good(name, G_GOOD, [1.0, np.inf])


@case("nan-jacobian")
def _():
    bad = G_GOOD.copy()
    bad[1, 2] = np.nan
    for name in METHODS:
        _bad_then_good(name, bad, L_GOOD)


@case("inf-jacobian")
def _():
    bad = G_GOOD.copy()
    bad[0, 0] = -np.inf
    for name in METHODS:
        _bad_then_good(name, bad, L_GOOD)


@case("overflowing-gradients")
def _():
    # float16 gradients of 1e3 are finite but their Gramian (~1e6 > 65504) is not: the
    # step is skipped like a NaN one.
    for name in METHODS:
        params, upd, state = _steps(name, [G_GOOD * 1e3, G_GOOD], [L_GOOD, L_GOOD], jnp.float16)
        np.testing.assert_array_equal(upd[0], 0.0)
        np.testing.assert_array_equal(state.skipped, [1, 1])
        assert np.all(upd[1] != 0)


@case("zero-losses")
def _():
    for name in METHODS:
        params, upd, state = _steps(name, [G_GOOD], [[0.0, 0.0]])
        if name != "pmtl":  # PMTL's weights are signed, Σ|α| = 1
            np.testing.assert_allclose(np.sum(state.weights[0]), 1.0, rtol=1e-12)
        if name == "epo":
            assert state.inner.clipped_losses[0]
            # All r⊙l clipped alike: on the ray, pure descent; -d is a common descent
            # direction: ⟨g_i, d⟩ ≥ 0.
            assert state.inner.descent[0]
            assert np.all(G_GOOD @ upd[0] >= -1e-12)
        assert state.skipped[0] == 0


@case("negative-losses")
def _():
    for name in METHODS:
        params, upd, state = _steps(name, [G_GOOD], [[-1.0, 2.0]])
        if name == "epo":
            assert state.inner.clipped_losses[0]
            # l_1 < 0 is treated as ~0 relative loss, so task 2 holds the largest r_j l_j
            # (J*): its constraint βᵀc_2 ≥ 0 keeps l_2 from rising, ⟨g_2, d⟩ ≥ 0.
            assert G_GOOD[1] @ upd[0] >= -1e-12
            assert 0 < state.inner.non_uniformity[0] <= np.log(2) + 1e-12


@case("all-equal-losses")
def _():
    r = np.asarray(_preference(2))
    # r ⊙ l ∝ 1: EPO is on the ray (μ = 0) and takes a pure common-descent step.
    params, upd, state = _steps("epo", [G_GOOD], [1.0 / r])
    assert state.inner.non_uniformity[0] <= 1e-12 and state.inner.descent[0]
    assert not state.inner.fallback[0]
    assert np.all(G_GOOD @ upd[0] >= -1e-12) and np.any(G_GOOD @ upd[0] > 0)
    for name in METHODS:
        _steps(name, [G_GOOD], [[1.5, 1.5]])  # finite for every method


@case("zero-gradients")
def _():
    for name in METHODS:
        params, upd, state = _steps(name, [np.zeros((2, N))], [L_GOOD])
        np.testing.assert_array_equal(upd[0], 0.0)
        np.testing.assert_array_equal(params[0], np.full(N, 0.5))
        assert state.skipped[0] == 0
        flag = {"mgda": "degenerate", "epo": "fallback", "pmtl": "degenerate"}.get(name)
        if flag:
            assert getattr(state.inner, flag)[0], name


@case("identical-gradients")
def _():
    g = G_GOOD[0]
    for name in METHODS:
        params, upd, state = _steps(name, [np.stack([g, g])], [L_GOOD])
        if name == "pmtl":  # PMTL weights may be signed (Σ|α| = 1): a multiple of g
            np.testing.assert_allclose(np.cross(upd[0], g), 0.0, atol=1e-12)
        else:  # weights sum to 1: the update is g itself
            np.testing.assert_allclose(upd[0], g, rtol=1e-12, atol=1e-14)


@case("opposite-gradients")
def _():
    g = G_GOOD[0]
    params, upd, state = _steps("mgda", [np.stack([g, -g])], [L_GOOD])
    # The min-norm point of the segment [g, -g] is 0: Pareto-stationary, no move.
    np.testing.assert_allclose(upd[0], 0.0, atol=1e-15)
    assert state.inner.objective[0] <= 1e-15 and state.inner.converged[0]
    gram = jnp.asarray(np.outer([1, -1], [1, -1]) * (g @ g))
    r = _preference(2)
    res = _epo_jit(gram, 1.0 / r, r)  # on the ray: pure descent
    assert res.stationary and res.descent
    np.testing.assert_allclose(np.asarray(res.weights) @ np.array([1.0, -1.0]), 0.0, atol=1e-12)
    for name in METHODS:
        _steps(name, [np.stack([g, -g])], [L_GOOD])


@case("collinear-gradients")
def _():
    g = G_GOOD[0]
    jac = np.stack([g, 3 * g])
    params, upd, state = _steps("mgda", [jac], [L_GOOD])
    np.testing.assert_allclose(upd[0], g, rtol=1e-12)  # the shorter one (analytic)
    for name in METHODS:
        params, upd, state = _steps(name, [jac], [L_GOOD])
        if name != "pmtl":
            c = (upd[0] @ g) / (g @ g)  # update = c g with c in [1, 3]: both decrease
            np.testing.assert_allclose(upd[0], c * g, rtol=1e-12, atol=1e-14)
            assert 1 - 1e-12 <= c <= 3 + 1e-12


# One jitted object per solver, shared by every case (its cache holds one program per
# shape): compiling the LP dominates this file's run time.
_solvers6 = {
    "min_norm": jax.jit(jp.min_norm_weights),
    "epo": jax.jit(jp.epo_weights, static_argnames=("adjustment", "max_iter")),
}
_epo_jit = _solvers6["epo"]


def _check_gram_solvers(gram):
    res = _solvers6["min_norm"](jnp.asarray(gram))
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(w)) and res.converged and not res.degenerate
    assert _kkt(gram, w) <= 1e-8
    s = np.max(np.diag(gram))
    assert w @ gram @ w <= _min_norm_oracle(gram) + 1e-12 * s
    m = gram.shape[0]
    losses = jnp.linspace(1.0, 2.0, m)
    epo = _solvers6["epo"](jnp.asarray(gram), losses, jnp.ones(m))
    we = np.asarray(epo.weights)
    assert np.all(np.isfinite(we)) and np.all(we >= -1e-12) and abs(we.sum() - 1) < 1e-12
    assert bool(epo.fallback) == (int(epo.lp_status) != OPTIMAL)
    return res, epo


@case("rank-deficient-gram")
def _():
    rng = np.random.default_rng(1)
    for rank in (1, 2, 4):
        g = rng.normal(size=(6, rank)) @ rng.normal(size=(rank, 10))
        g[5] = g[4]  # plus a duplicated task
        _check_gram_solvers(g @ g.T)


@case("ill-conditioned-gram")
def _():
    rng = np.random.default_rng(2)
    for _ in range(3):
        q, _r = np.linalg.qr(rng.normal(size=(6, 6)))
        gram = (q * np.logspace(0, -12, 6)) @ q.T
        gram = 0.5 * (gram + gram.T)
        assert 1e11 < np.linalg.cond(gram) < 1e13
        _check_gram_solvers(gram)


@case("m2")
def _():
    # Closed form for two tasks, under vmap: γ = clip((C22 − C12)/‖g1 − g2‖², 0, 1).
    rng = np.random.default_rng(3)
    g = rng.normal(size=(64, 2, 4))
    g[:8, 1] = g[:8, 0]  # identical pairs: any γ is optimal, (1/2, 1/2) returned
    grams = np.einsum("bin,bjn->bij", g, g)
    w = np.asarray(jax.vmap(jp.min_norm_weights)(jnp.asarray(grams)).weights)
    a, b, c = grams[:, 0, 0], grams[:, 0, 1], grams[:, 1, 1]
    den = a + c - 2 * b
    gamma = np.where(den > 1e-14, np.clip((c - b) / np.where(den > 1e-14, den, 1), 0, 1), 0.5)
    np.testing.assert_allclose(w[:, 0], gamma, rtol=1e-10, atol=1e-12)


@case("m64")
def _():
    rng = np.random.default_rng(4)
    m, n = 64, 100
    jac = rng.normal(size=(m, n)) + 0.5  # correlated tasks: a common descent exists
    losses = rng.uniform(0.5, 2.0, m)
    params = {"w": jnp.zeros(n)}
    for tx in (optax.chain(jp.mgda(num_tasks=m), optax.sgd(0.1)),
               optax.chain(jp.epo(jnp.ones(m)), optax.sgd(0.1))):
        upd, state = jax.jit(lambda j, l: tx.update(j, tx.init(params), params, losses=l))(
            {"w": jnp.asarray(jac)}, jnp.asarray(losses))
        _assert_finite(upd, state)
        w = np.asarray(state[0].weights)
        assert np.all(w >= -1e-12) and abs(w.sum() - 1) < 1e-10
        inner = state[0].inner
        if not hasattr(inner, "lp_status"):  # MGDA (EPO has `converged` too now)
            assert inner.converged and _kkt(jac @ jac.T, w) <= 1e-8
        else:
            assert int(inner.lp_status) == OPTIMAL and not inner.fallback


@case("pref-unnormalised")
def _():
    rng = np.random.default_rng(5)
    g = rng.normal(size=(6, 8))
    gram, losses = jnp.asarray(g @ g.T), jnp.asarray(rng.uniform(0.5, 2.0, 6))
    r = jnp.arange(1.0, 7.0)
    ref = functools.partial(_epo_jit, adjustment="reference")
    paper = _epo_jit(gram, losses, r)
    for c in (1e-3, 7.5, 1e4):
        # The reference adjustments a_j = log(m l̂_j) − μ depend on r only through l̂:
        # the weights are scale invariant.
        np.testing.assert_allclose(ref(gram, losses, c * r).weights, ref(gram, losses, r).weights,
                                   rtol=1e-9, atol=1e-12)
        # The paper's a_j = r_j (log(m l̂_j) − μ) (eq. 13) scales with r, and so do the
        # balance constraints' right-hand sides: only μ (and the ray) are invariant.
        np.testing.assert_allclose(_epo_jit(gram, losses, c * r).non_uniformity,
                                   paper.non_uniformity, rtol=1e-12)
        np.testing.assert_allclose(jp.linear_weights(c * r), r / r.sum(), rtol=1e-14)
        np.testing.assert_array_equal(jp.chebyshev_weights(losses, c * r),
                                      jp.chebyshev_weights(losses, r))
        hp = _hypernet()
        np.testing.assert_allclose(jp.hypernetwork.apply(hp, c * r[:2])["w"],
                                   jp.hypernetwork.apply(hp, r[:2])["w"], rtol=1e-12)


@case("pref-traced-invalid")
def _():
    bad = jnp.array([jnp.nan, 1.0])
    for name in ("linear", "chebyshev", "epo"):
        params, d, state = _steps(name, [G_GOOD], [L_GOOD], prefs=bad)
        _, d_ref, _ = _steps(name, [G_GOOD], [L_GOOD], prefs=jnp.ones(2))
        np.testing.assert_array_equal(d, d_ref)  # replaced by r = 1
        assert np.all(state.inner.invalid_preference)
    gram = jnp.asarray(G_GOOD @ G_GOOD.T)
    res = _epo_jit(gram, jnp.asarray(L_GOOD), bad)
    ref = _epo_jit(gram, jnp.asarray(L_GOOD), jnp.ones(2))
    assert res.invalid_preference
    np.testing.assert_array_equal(res.weights, ref.weights)  # replaced by ones
    hp = _hypernet()
    for r in (bad, jnp.array([-1.0, 1.0]), jnp.array([0.0, 1.0])):
        np.testing.assert_array_equal(jax.jit(jp.hypernetwork.apply)(hp, r)["w"],
                                      jax.jit(jp.hypernetwork.apply)(hp, jnp.ones(2))["w"])


@case("pref-traced-invalid-epo-state")
def _():
    params, d, state = _steps("epo", [G_GOOD], [L_GOOD], prefs=jnp.array([jnp.nan, 1.0]))
    assert np.all(state.inner.invalid_preference)  # and the weights are those of r = 1


@case("m1-scalarization")
def _():
    params = {"w": jnp.ones(N)}
    g = jnp.asarray(G_GOOD[:1])
    for tx in (jp.linear(num_tasks=1), jp.chebyshev(jnp.ones(1)), jp.mgda(num_tasks=1),
               jp.epo(jnp.ones(1)), jp.pmtl(jnp.ones((2, 1)), index=0),
               jp.aggregate(jp.weighting.upgrad(), num_tasks=1),
               jp.aggregate(jp.weighting.cagrad(), num_tasks=1)):
        upd, state = jax.jit(lambda j: tx.update(j, tx.init(params), params, losses=jnp.ones(1)))(
            {"w": g})
        np.testing.assert_array_equal(upd["w"], g[0])
        np.testing.assert_array_equal(state.weights, [1.0])


def _low_precision(dtype, methods=METHODS):
    for name in methods:
        params, upd, state = _steps(name, [G_GOOD], [L_GOOD], dtype)
        ref_params, ref_upd, ref_state = _steps(name, [G_GOOD], [L_GOOD])
        assert state.weights.dtype == np.float32  # weights solved in float32
        np.testing.assert_allclose(upd[0].astype(np.float64), ref_upd[0], rtol=2e-2, atol=1e-2)
        np.testing.assert_allclose(state.weights[0], ref_state.weights[0], atol=1e-2)


@case("float16")
def _():
    _low_precision(jnp.float16)


@case("bfloat16")
def _():
    # MGDA and PMTL's min-norm solves run in float32 exactly as for float16 (and inside
    # EPO's fallback); three methods keep this case's compile time down.
    _low_precision(jnp.bfloat16, ("epo", "linear", "chebyshev"))


_lp_jit = jax.jit(jp.linprog_simplex)


@case("lp-infeasible")
def _():
    c = jnp.array([1.0, 1.0, 0.0])
    a = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bs = jnp.array([[0.7, 0.7], [0.3, 0.3]])  # β1 + β2 ≥ 1.4 is impossible; ≥ 0.6 is not
    res = [_lp_jit(c, a, b, jnp.array([True, True])) for b in bs]
    assert [int(x.status) for x in res] == [INFEASIBLE, OPTIMAL]
    _assert_finite(res)
    np.testing.assert_allclose(res[0].x, np.full(3, 1 / 3))  # documented: uniform point
    for b, status in zip(np.asarray(bs), (2, 0)):  # scipy: 2 = infeasible, 0 = optimal
        ref = linprog(-np.asarray(c), A_ub=-np.asarray(a), b_ub=-b, A_eq=np.ones((1, 3)),
                      b_eq=[1.0], bounds=[(0, None)] * 3, method="highs")
        assert ref.status == status


@case("lp-max-iter")
def _():
    rng = np.random.default_rng(6)
    g = rng.normal(size=(6, 8))
    gram = jnp.asarray(g @ g.T)
    epo = _epo_jit(gram, jnp.arange(1.0, 7.0), jnp.ones(6), max_iter=1)
    assert int(epo.lp_status) == MAX_ITER and epo.fallback
    _assert_finite(epo)
    # The documented fallback: the min-norm weights (a common descent direction).
    np.testing.assert_allclose(epo.weights, _solvers6["min_norm"](gram).weights, atol=1e-12)
    assert np.all(np.asarray(gram @ epo.weights) >= -1e-12)


@case("lp-nan")
def _():
    res = _lp_jit(jnp.array([1.0, jnp.nan, 0.0]), jnp.eye(3)[:2], jnp.full(2, 0.1),
                  jnp.ones(2, bool))
    assert int(res.status) == NUMERICAL_ERROR
    _assert_finite(res.x)


def _nan_region_loss(p):
    # The EPO synthetic problem, undefined (NaN) for p[0] < 0.2.
    return jp.problems.epo_synthetic(4).loss_fn(p) + jnp.where(p[0] < 0.2, jnp.nan, 0.0)


@case("ppe-nan-start")
def _():
    res = jp.ppe.corrector(_nan_region_loss, jnp.full(4, jnp.nan), steps=5, line_search=False)
    assert res.degenerate and not res.converged


@case("ppe-nan-during-correction")
def _():
    # Plain MGDA steps of lr 2 from (0.5, -0.1, ...) head for the Pareto segment
    # (p[0] ≈ 0.05) through the NaN region: the corrector stops at the last finite
    # iterate and flags it.
    start = jnp.array([0.5, -0.1, 0.1, -0.1])
    res = jp.ppe.corrector(_nan_region_loss, start, steps=5, line_search=False, lr=2.0)
    assert res.degenerate
    _assert_finite(res.params, res.losses, res.alpha, res.stationarity)
    assert float(res.params[0]) >= 0.2 and int(res.steps) >= 1


@functools.lru_cache(maxsize=None)
def _hypernet():
    return jp.hypernetwork.init(jax.random.PRNGKey(0), {"w": jnp.zeros(4)}, embed_dim=4,
                                hidden=(8,))


@case("hn-nan-losses")
def _():
    hp = _hypernet()
    opt = optax.adam(1e-2)
    loss = lambda p: jp.problems.epo_synthetic(4).loss_fn(p["w"]) * jnp.array([jnp.nan, 1.0])
    for rule in ("linear",):  # the Jacobian rules share the aggregate skip: nan-losses
        step = jax.jit(jp.hypernetwork.train_step(loss, opt, rule=rule, num_preferences=2))
        opt_state = opt.init(hp)
        new_hp, new_opt, info = step(hp, opt_state, jax.random.PRNGKey(1))
        assert info.skipped
        for new, old in zip(jax.tree_util.tree_leaves((new_hp, new_opt)),
                            jax.tree_util.tree_leaves((hp, opt_state))):
            np.testing.assert_array_equal(new, old)


@case("mtl-nan-batch")
def _():
    def encode(p, batch):
        return jnp.tanh(batch @ p["enc"])

    def heads(p, z, batch):
        return jnp.stack([jnp.mean((z @ p["h1"]) ** 2), jnp.mean((z @ p["h2"] - 1) ** 2)])

    params = {"enc": jnp.full((3, 4), 0.1), "h1": jnp.ones(4), "h2": -jnp.ones(4)}
    weighting = jp.weighting.mgda()
    step = jax.jit(jp.mtl_value_and_grad(encode, heads, weighting))
    opt = optax.sgd(0.1)
    batch = jnp.full((5, 3), jnp.nan)
    (losses, grads), state = step(params, batch, weighting.init(2, jnp.float64))
    _assert_finite(state)
    assert state.degenerate  # the weighting saw a NaN Gramian: uniform weights, flagged
    assert not np.all(np.isfinite(np.asarray(losses)))  # the losses show it
    for g in jax.tree_util.tree_leaves(grads):
        np.testing.assert_array_equal(g, np.zeros_like(g))  # guarded: zero gradient
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
    # A finite batch afterwards gives the clean step's gradient.
    good = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    (_, g_good), _ = step(params, good, weighting.init(2, jnp.float64))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree_util.tree_leaves(g_good))


# ------------------------------------------------------------- loss-based weightings

LOSS_METHODS = ("famo", "uncertainty", "dwa", "rlw", "gls", "imtl_l", "gradnorm")


def _loss_step(name: str, m: int):
    """A jitted ``(params, state, losses_offset) -> (params, state, update)`` for
    ``optax.chain(jp.<name>(m), optax.sgd(0.1))`` on ``l_i = ½‖w − a_i‖² + offset_i``
    through ``jp.loss_vjp`` (GradNorm gets the Gramian of the whole ``w``)."""
    a = jnp.arange(m * N, dtype=jnp.float64).reshape(m, N) / (m * N)
    tx = optax.chain(getattr(jp, name)(m), optax.sgd(0.1))

    def losses(p, offset):
        return 0.5 * jnp.sum((p["w"] - a) ** 2, axis=1) + offset

    @jax.jit
    def step(p, state, offset):
        gram = jp.gramian(jp.value_and_jacobian(losses)(p, offset)[1])
        u, state = tx.update(jp.loss_vjp(losses)(p, offset), state, p, gram=gram)
        return optax.apply_updates(p, u), state, u

    return tx, step


@case("loss-based-bad-losses")
def _():
    for name in LOSS_METHODS:
        tx, step = _loss_step(name, 2)
        p0 = {"w": jnp.ones(N)}
        p1, s1, _ = step(p0, tx.init(p0), jnp.array([0.1, 0.2]))
        for bad in ([np.nan, 0.2], [0.1, np.inf]):
            p2, s2, u = step(p1, s1, jnp.asarray(bad))
            np.testing.assert_array_equal(u["w"], 0.0)
            np.testing.assert_array_equal(p2["w"], p1["w"])
            assert int(s2[0].skipped) == 1, name
            jax.tree_util.tree_map(np.testing.assert_array_equal, s2[0].inner, s1[0].inner)
            # The next good step is exactly the one a clean run takes.
            clean = step(p1, s1, jnp.array([0.1, 0.2]))[0]["w"]
            np.testing.assert_array_equal(step(p2, s2, jnp.array([0.1, 0.2]))[0]["w"], clean)


@case("loss-based-zero-losses")
def _():
    for name in LOSS_METHODS:
        tx, step = _loss_step(name, 2)
        p = {"w": jnp.ones(N)}
        state = tx.init(p)
        for offset in ([-0.5, 0.0], [-10.0, -10.0]):  # l_0 = 0 at w = a_0 / negative
            p_new, state, u = step(p, state, jnp.asarray(offset))
            assert np.all(np.isfinite(u["w"])) and np.all(np.isfinite(state[0].weights)), name
            assert int(state[0].skipped) == 0, name
        if name in ("gls", "famo"):  # logarithm / division by the losses: clamped, counted
            assert int(state[0].clamped) >= 1, name
        if name == "famo":
            np.testing.assert_allclose(np.sum(state[0].weights), 1.0, rtol=1e-12)


@case("loss-based-m1")
def _():
    for name in LOSS_METHODS:
        tx, step = _loss_step(name, 1)
        p = {"w": jnp.ones(N)}
        _, state, u = step(p, tx.init(p), jnp.array([0.3]))
        grad = -0.1 * (np.ones(N) - np.arange(N) / N)  # sgd(0.1) of ∇l = w − a
        expected = {"uncertainty": 0.5, "imtl_l": 1.0}.get(name, 1.0)  # s = 0: ½e⁰, e⁰
        np.testing.assert_allclose(u["w"], expected * grad, rtol=1e-12)
        np.testing.assert_allclose(state[0].weights, [expected], rtol=1e-12)


# ------------------------------------------------------------- the wider field

# name -> (transform for m tasks, m used besides m = 1, weight at m = 1 for g, l = 1)
FIELD = {
    "krum": (lambda m: jp.krum(0, num_tasks=m), 3, lambda g: 1.0),
    "trimmed-mean": (lambda m: jp.trimmed_mean(1 if m > 1 else 0, num_tasks=m), 3, lambda g: 1.0),
    "random": (lambda m: jp.random(0, num_tasks=m), 2, lambda g: 1.0),
    "sum": (lambda m: jp.sum(num_tasks=m), 2, lambda g: 1.0),
    "constant": (lambda m: jp.constant(jnp.full(m, 2.0)), 2, lambda g: 2.0),
    "config": (lambda m: jp.config(num_tasks=m), 2, lambda g: 1.0),
    "gradvac": (lambda m: jp.gradvac(0, num_tasks=m), 2, lambda g: 1.0),
    "graddrop": (lambda m: jp.graddrop(0, num_tasks=m), 2, lambda g: 1.0),
    "fairgrad": (lambda m: jp.fairgrad(2.0, num_tasks=m), 2, lambda g: 1.0),
    "pbi": (lambda m: jp.pbi(num_tasks=m), 2, lambda g: 1.0),
    "cosmos": (lambda m: jp.cosmos(num_tasks=m), 2, lambda g: 1.0),
    "aasf": (lambda m: jp.aasf(num_tasks=m), 2, lambda g: 1.0),
    "aug-chebyshev": (lambda m: jp.aug_chebyshev(num_tasks=m), 2, lambda g: 1.0),
    "pnorm": (lambda m: jp.pnorm(num_tasks=m), 2, lambda g: 1.0),
    "sdmgrad": (lambda m: jp.sdmgrad(0.3, num_tasks=m), 2, lambda g: 1.0),
    "moco": (lambda m: jp.moco(num_tasks=m), 2, lambda g: 1.0),
}


def _field_case(name):
    """m = 1 (the update is w·g with the documented weight), a zero Jacobian (update 0,
    not skipped, finite state), a NaN Jacobian and NaN losses (skipped, update 0), zero
    losses (finite), through ``optax.chain(jp.<name>(...), optax.sgd(1.0))`` under jit."""
    make, m_many, w_one = FIELD[name]
    rng = np.random.default_rng(0)
    for m in (1, m_many):
        tx = optax.chain(make(m), optax.sgd(1.0))
        params = {"w": jnp.zeros(N)}
        step = jax.jit(lambda j, l, s, tx=tx: tx.update({"w": j}, s, params, losses=l))
        s0 = tx.init(params)
        g = rng.standard_normal((m, N))
        ones = jnp.ones(m)
        u, s = step(jnp.asarray(g), ones, s0)
        _assert_finite(u, s)
        if m == 1:
            np.testing.assert_allclose(-u["w"], w_one(g[0]) * g[0], rtol=1e-9)
        u, s = step(jnp.zeros((m, N)), ones, s0)
        _assert_finite(u, s)
        np.testing.assert_array_equal(u["w"], 0.0)
        assert int(s[0].skipped) == 0
        for j, l in ((np.full((m, N), np.nan), ones), (g, jnp.full(m, jnp.nan))):
            u, s = step(jnp.asarray(j), jnp.asarray(l), s0)
            _assert_finite(u, s)
            np.testing.assert_array_equal(u["w"], 0.0)
            assert int(s[0].skipped) == 1
        u, s = step(jnp.asarray(g), jnp.zeros(m), s0)
        _assert_finite(u, s)


def _field(name):
    def run():
        _field_case(name)

    return run


for _name in FIELD:
    case(f"field-{_name}")(_field(_name))


# ------------------------------------------------------------------------------ runner

_XFAIL: dict = {}


@pytest.mark.parametrize(
    "case_id", [pytest.param(k, id=k, marks=_XFAIL.get(k, ())) for k in CASES]
)
def test_case(case_id, tmp_path):
    fn = CASES[case_id]
    if fn.__code__.co_argcount:
        fn(tmp_path)
    else:
        fn()


def test_catalogue_size():
    assert len(CASES) >= 25


def test_readme_table_matches():
    """The README "Failure behaviour" table lists exactly these case ids."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## Failure behaviour\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    # A renamed or moved heading must fail here, not silently drop the check.
    assert match is not None, "README.md lost its '## Failure behaviour' section"
    ids = re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", match.group(1), re.M)
    assert sorted(ids) == sorted(CASES)
