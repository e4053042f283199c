"""Tests of the min-norm (MGDA) solver against independent oracles.

Oracles: exact enumeration of supports (numpy lstsq on each support's KKT system) for
m ≤ 8, scipy SLSQP plus an independent numpy KKT check for m up to 32, a numpy
transcription of the MGDA-UB reference solvers (written here from the reference's
description, loop for loop) for the faithful methods, hand-computed normalizers.
"""

from __future__ import annotations

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from scipy.optimize import minimize

from jaxpareto.weighting.base import Weighting
from jaxpareto.weighting.min_norm import MgdaState, MinNormResult, mgda, min_norm_weights

KINDS = (
    "full_rank", "rank_deficient", "duplicated", "opposite", "zero", "near_dependent",
    "shared", "scaled",
)


# ------------------------------------------------------------------------------ oracles


def make_jacobian(rng, m: int, kind: str) -> np.ndarray:
    """Task gradients ``G: [m, n]`` of a given degenerate kind."""
    if kind == "rank_deficient":
        n = int(rng.integers(1, max(2, m)))  # n < m (n = 1 allowed)
    else:
        n = int(rng.integers(m, m + 8))
    g = rng.standard_normal((m, n)) * rng.uniform(0.2, 5.0, size=(m, 1))
    if kind == "duplicated":
        g[rng.integers(0, m, size=max(1, m // 2))] = g[m - 1]
    elif kind == "opposite":
        g[0] = -g[1] * rng.uniform(0.3, 3.0)
    elif kind == "zero":
        g[rng.integers(m)] = 0.0
    elif kind == "near_dependent":  # rank-2 gradients plus 1e-7 noise: ill-conditioned
        g = rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
        g = g + 1e-7 * rng.standard_normal((m, n))
    elif kind == "shared":  # a large common component: the optimum is far from 0
        g = g + 4.0 * rng.standard_normal(n)
    elif kind == "scaled":
        g = g * 10.0 ** rng.uniform(-3, 3, size=(m, 1))
    return g


def enumeration_oracle(gram: np.ndarray) -> tuple[float, np.ndarray]:
    """min_{β∈Δ} βᵀCβ by enumerating supports S and solving the KKT system on S.

    On S: [2 C_SS 1; 1ᵀ 0] [β; λ] = [0; 1] (lstsq: consistent even when singular);
    keep solutions with β ≥ 0 and take the smallest objective.
    """
    m = gram.shape[0]
    best, best_beta = np.inf, None
    for k in range(1, m + 1):
        for sup in itertools.combinations(range(m), k):
            idx = list(sup)
            a = gram[np.ix_(idx, idx)]
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = 2 * a
            kkt[:k, k] = 1
            kkt[k, :k] = 1
            rhs = np.zeros(k + 1)
            rhs[k] = 1
            z = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
            if abs(z.sum() - 1) > 1e-9 or z.min() < -1e-12:
                continue
            z = np.maximum(z, 0)
            z /= z.sum()
            val = z @ a @ z
            if val < best:
                best = val
                best_beta = np.zeros(m)
                best_beta[idx] = z
    return float(best), best_beta


def slsqp_oracle(gram: np.ndarray) -> float:
    m = gram.shape[0]
    res = minimize(
        lambda b: b @ gram @ b,
        np.full(m, 1.0 / m),
        jac=lambda b: 2 * gram @ b,
        method="SLSQP",
        bounds=[(0, 1)] * m,
        constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1, "jac": lambda b: np.ones(m)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    b = np.maximum(res.x, 0)
    b /= b.sum()
    return float(b @ gram @ b)


def numpy_kkt(gram: np.ndarray, beta: np.ndarray) -> float:
    """The KKT residual as documented, recomputed independently in numpy."""
    g = gram @ beta
    v = beta @ g
    n = np.sqrt(np.maximum(np.diag(gram), 0))
    nbar = np.abs(beta) @ n
    den = np.maximum(nbar * (n + nbar), np.finfo(float).tiny)  # each task on its own scale
    dual = np.max(np.maximum(v - g, 0) / den)
    comp = np.max(np.abs(beta) * np.abs(g - v) / den)
    primal = abs(beta.sum() - 1) + np.maximum(-beta, 0).sum()
    return max(dual, comp, primal)


def batch(rng, m: int, count: int):
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    jacs = [make_jacobian(rng, m, k) for k in kinds]
    grams = np.stack([j @ j.T for j in jacs])
    return kinds, jacs, grams


# One compiled program per (m, dtype, configuration): every test solves through this
# helper with a fixed batch size, padding with identity Gramians.
BATCH = 32


@functools.lru_cache(maxsize=None)
def _batched_solver(method, normalization, max_iter, with_losses):
    def solve(gram, losses):
        return min_norm_weights(
            gram, method=method, normalization=normalization,
            losses=losses if with_losses else None, max_iter=max_iter,
        )

    return jax.jit(jax.vmap(solve))


def solve_batch(grams, losses=None, *, method="auto", normalization="none", max_iter=None,
                dtype=None) -> MinNormResult:
    """``jax.vmap`` of :func:`min_norm_weights` over ``grams: [k, m, m]`` (any k)."""
    grams = np.asarray(grams)
    k, m = grams.shape[0], grams.shape[1]
    dtype = dtype or grams.dtype
    pad = (-k) % BATCH
    grams = np.concatenate([grams, np.broadcast_to(np.eye(m), (pad, m, m))])
    if losses is None:
        losses_arr = np.ones((k + pad, m))
    else:
        losses_arr = np.concatenate([np.asarray(losses), np.ones((pad, m))])
    solver = _batched_solver(method, normalization, max_iter, losses is not None)
    parts = [
        solver(jnp.asarray(grams[i:i + BATCH], dtype), jnp.asarray(losses_arr[i:i + BATCH], dtype))
        for i in range(0, k + pad, BATCH)
    ]
    out = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:k], *parts)
    return MinNormResult(*out)


# ------------------------------------------------------------------- exact solver ("auto")


@pytest.mark.parametrize("m", [2, 3, 5, 8])
def test_auto_matches_support_enumeration(m):
    rng = np.random.default_rng(100 + m)
    kinds, jacs, grams = batch(rng, m, 64)
    res = solve_batch(grams)
    assert np.all(res.converged)
    assert not np.any(res.degenerate)
    for i, (kind, g, c) in enumerate(zip(kinds, jacs, grams)):
        beta = res.weights[i]
        s = np.max(np.diag(c))
        best, _ = enumeration_oracle(c)
        assert abs(res.objective[i] - best) <= 1e-10 * s, (kind, i)
        assert abs(beta @ c @ beta - best) <= 1e-10 * s
        assert np.all(beta >= 0) and abs(beta.sum() - 1) <= 1e-12
        kkt = numpy_kkt(c, beta)
        assert kkt <= 1e-8, (kind, i, kkt)
        np.testing.assert_allclose(res.kkt_residual[i], kkt, atol=1e-13)
        # Common descent direction: ⟨g_i, Gᵀβ⟩ ≥ ‖Gᵀβ‖² ≥ 0, from the gradients themselves.
        d = g.T @ beta
        assert np.all(g @ d >= d @ d - 1e-9 * s), (kind, i)


@pytest.mark.parametrize("m", [32])
def test_auto_large_m_kkt_and_slsqp(m):
    rng = np.random.default_rng(200 + m)
    kinds, jacs, grams = batch(rng, m, 32)
    res = solve_batch(grams)
    assert np.all(res.converged)
    for i, (kind, g, c) in enumerate(zip(kinds, jacs, grams)):
        beta = res.weights[i]
        s = np.max(np.diag(c))
        assert numpy_kkt(c, beta) <= 1e-8, (kind, i)
        d = g.T @ beta
        assert np.all(g @ d >= d @ d - 1e-9 * s), (kind, i)
        if i < 8:  # SLSQP is slow; it is only approximately optimal: never be worse.
            assert beta @ c @ beta <= slsqp_oracle(c) + 1e-9 * s, (kind, i)


def test_two_tasks_closed_form_is_exact_not_clipped():
    # Interior optimum close to a vertex: g1 = (1, 0), g2 = (1 − δ, 1) gives
    # γ* = 1 − δ / (1 + δ²) ≈ 0.9995; every method gets it (no clipping in the interior).
    inner = np.array([[1.0, 0.0], [1.0 - 5e-4, 1.0]])
    # Vertex optima (⟨g1, g2⟩ ≥ ‖g1‖², then the roles swapped): exact (1, 0) / (0, 1);
    # the reference's line search returns its clipped (0.999, 0.001) / (0.001, 0.999).
    vertex = np.array([[1.0, 0.0], [2.0, 1.0]])
    grams = np.stack([j @ j.T for j in (inner, vertex, vertex[::-1])])
    oracle = [enumeration_oracle(c) for c in grams]
    assert 0.999 < oracle[0][1][0] < 1.0
    assert oracle[1][1].tolist() == [1.0, 0.0] and oracle[2][1].tolist() == [0.0, 1.0]
    for method in ("auto", "frank_wolfe", "projected_gradient"):
        res = solve_batch(grams, method=method)
        assert np.all(res.iterations == 0) and np.all(res.converged)
        np.testing.assert_allclose(res.weights[0], oracle[0][1], atol=1e-12)
        assert abs(res.objective[0] - oracle[0][0]) <= 1e-14
        if method == "auto":
            np.testing.assert_array_equal(res.weights[1:], [[1, 0], [0, 1]])
        else:
            np.testing.assert_allclose(res.weights[1:], [[0.999, 0.001], [0.001, 0.999]], rtol=1e-15)


def test_permutation_and_scale_equivariance():
    rng = np.random.default_rng(7)
    m = 5
    grams, perms = [], []
    for _ in range(10):
        g = rng.standard_normal((m, m + 3))  # full rank: unique solution
        perms.append(rng.permutation(m))
        grams.append(g @ g.T)
    permuted = [c[np.ix_(p, p)] for c, p in zip(grams, perms)]
    scaled = [1e6 * c for c in grams]
    res = solve_batch(np.stack(grams + permuted + scaled))
    base = res.weights[:10]
    for k, p in enumerate(perms):
        np.testing.assert_allclose(res.weights[10 + k], base[k][p], atol=1e-9)
        np.testing.assert_allclose(res.weights[20 + k], base[k], atol=1e-9)


def test_iteration_cap_reports_not_converged():
    rng = np.random.default_rng(0)
    # Six gradients sharing a component: the optimum's support is three of them, which
    # the active-set start needs four factorisations to find.
    g = rng.standard_normal((6, 8)) + np.array([2.0] + [0] * 7)
    c = (g @ g.T)[None]
    full = solve_batch(c)
    assert full.iterations[0] >= 4 and full.converged[0]
    assert 0 < np.sum(full.weights[0] > 0) < 6
    capped = solve_batch(c, max_iter=2)
    assert capped.iterations[0] == 2 and not capped.converged[0]
    w = capped.weights[0]
    assert np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    assert capped.objective[0] >= full.objective[0] - 1e-12


# ------------------------------------------------------- reference (MGDA-UB) solvers


class _Tracker:
    """Smallest relative margin of any discontinuous branch decision: a tie at rounding
    level may go either way under different rounding (numpy vs XLA), so only runs
    without such a tie must agree exactly."""

    def __init__(self, scale):
        self.scale = scale
        self.margin = np.inf

    def seen(self, a, b, scale=None):
        self.margin = min(self.margin, abs(a - b) / (scale if scale is not None else self.scale))


def _np_line_search(v11, v12, v22, tr):
    tr.seen(v12, v11)
    if v12 >= v11:
        return 0.999
    tr.seen(v12, v22)
    if v12 >= v22:
        return 0.001
    return -1.0 * ((v12 - v22) / (v11 + v22 - 2 * v12))


def _np_best_pair(c, tr):
    m = c.shape[0]
    dmin, best = 1e8, None
    for i in range(m):
        for j in range(i + 1, m):
            v11, v12, v22 = c[i, i], c[i, j], c[j, j]
            gam = _np_line_search(v11, v12, v22, tr)
            if v12 >= v11:
                cost = v11
            elif v12 >= v22:
                cost = v22
            else:
                cost = v22 + gam * (v12 - v22)
            if best is not None:
                tr.seen(cost, dmin)
            if cost < dmin:
                dmin, best = cost, (i, j, gam)
    x = np.zeros(m)
    x[best[0]], x[best[1]] = best[2], 1 - best[2]
    return x


def _np_projection(y, tr):
    m = len(y)
    ys = np.flip(np.sort(y))
    acc, tau = 0.0, (np.sum(y) - 1.0) / m
    for i in range(m - 1):
        acc += ys[i]
        cand = (acc - 1) / (i + 1.0)  # (a tie here is harmless: the projection is continuous)
        if cand > ys[i + 1]:
            tau = cand
            break
    return np.maximum(y - tau, 0)


def _np_next_point(x, grad, tr):
    p = grad - np.sum(grad) / len(x)
    tm1 = -x[p < 0] / p[p < 0]
    tm2 = (1.0 - x[p > 0]) / p[p > 0]
    for v in np.concatenate([tm1, tm2]):
        tr.seen(v, 1e-7, 1e-7)
    t = 1
    if np.any(tm1 > 1e-7):
        t = np.min(tm1[tm1 > 1e-7])
    if np.any(tm2 > 1e-7):
        t = min(t, np.min(tm2[tm2 > 1e-7]))
    return _np_projection(p * t + x, tr)


TIE = 1e-12  # relative margin below which a branch decision counts as a rounding-level tie


def reference_transcription(c, method, max_iter=250, stop=1e-5):
    """The MGDA-UB MinNormSolver loops in numpy, plus the iteration counter it lacks."""
    tr = _Tracker(np.max(np.diag(c)))
    x = _np_best_pair(c, tr)
    m = len(x)
    if m < 3:
        return x, 0, True, tr.margin
    it = 0
    while it < max_iter:
        it += 1
        if method == "frank_wolfe":
            g = c @ x
            order = np.sort(g)
            tr.seen(order[0], order[1])
            t = int(np.argmin(g))
            gam = _np_line_search(x @ c @ x, x @ c[:, t], c[t, t], tr)
            new = gam * x
            new[t] += 1 - gam
        else:
            p = _np_next_point(x, -(c @ x), tr)
            gam = _np_line_search(x @ c @ x, x @ c @ p, p @ c @ p, tr)
            new = gam * x + (1 - gam) * p
        change = np.sum(np.abs(new - x))
        tr.seen(change, stop, stop)
        if change < stop:
            return x, it, True, tr.margin
        x = new
    return x, it, False, tr.margin


def _reference_instances(seed, m, count):
    rng = np.random.default_rng(seed)
    grams = []
    for k in range(count):
        g = rng.standard_normal((m, int(rng.integers(2, 10))))
        if k % 4 == 1:
            g[0] *= 0.05  # short first gradient: vertex optimum, early stop
        grams.append(g @ g.T)
    return np.stack(grams)


@pytest.mark.parametrize("method", ["frank_wolfe", "projected_gradient"])
def test_reference_methods_follow_the_reference_iterates(method):
    compared = capped = early = 0
    for m in (3, 6):
        grams = _reference_instances(11 + m, m, 24)
        res = solve_batch(grams, method=method)
        for i, c in enumerate(grams):
            x, it, conv, margin = reference_transcription(c, method)
            same = (
                np.max(np.abs(res.weights[i] - x)) <= 1e-10
                and res.iterations[i] == it
                and res.converged[i] == conv
            )
            # A disagreement is allowed only where the reference itself sat on a tie.
            assert same or margin < TIE, (m, i, margin)
            if margin >= TIE:
                compared += 1
                capped += it == 250 and not conv
                early += conv
    assert compared >= 24  # ties are common: at the pair optimum g_i = g_j exactly
    assert early >= 6
    if method == "frank_wolfe":
        assert capped >= 3  # the 0.999 clipping keeps FW moving: the cap must stop it


@pytest.mark.parametrize("method", ["frank_wolfe", "projected_gradient"])
def test_reference_methods_approach_the_optimum(method):
    rng = np.random.default_rng(13)
    m = 6
    grams = np.stack([
        (lambda g: g @ g.T)(rng.standard_normal((m, int(rng.integers(2, 10)))))
        for _ in range(64)
    ])
    res = solve_batch(grams, method=method)
    gaps, ok = [], []
    for i, c in enumerate(grams):
        best, _ = enumeration_oracle(c)
        s = np.max(np.diag(c))
        start = _np_best_pair(c, _Tracker(s))
        ok.append(res.objective[i] <= start @ c @ start + 1e-12 * s)  # never worse than its start
        gaps.append((res.objective[i] - best) / s)
    gaps = np.asarray(gaps)
    assert all(ok)
    assert np.all(gaps >= -1e-12)
    assert np.median(gaps) < 1e-6
    assert np.quantile(gaps, 0.9) < 1e-2
    assert np.max(gaps) < 0.05
    assert np.all(res.iterations[~res.converged] == 250)
    assert np.all(res.iterations[res.converged] < 250)
    if method == "frank_wolfe":
        assert (~res.converged).sum() >= 10  # the cap does trigger


# ------------------------------------------------------------------------ normalizations


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_normalizations_against_hand_computed_divisors(normalization):
    rng = np.random.default_rng(21)
    m = 5
    jacs = [rng.standard_normal((m, m + 2)) * rng.uniform(0.1, 10, size=(m, 1)) for _ in range(8)]
    losses = rng.uniform(0.1, 3.0, size=(8, m))
    # Guards: a zero gradient (‖g‖ = 0) and zero / negative / non-finite losses.
    jacs[6][2] = 0.0
    losses[5, 1], losses[6, 3], losses[7, 0], losses[7, 4] = 0.0, -1.0, np.nan, np.inf
    grams = np.stack([g @ g.T for g in jacs])
    uses_losses = normalization in ("loss", "loss+")
    res = solve_batch(grams, losses if uses_losses else None, normalization=normalization)
    for i, g in enumerate(jacs):
        norms = np.sqrt((g**2).sum(axis=1))
        gn = {"none": np.ones(m), "l2": norms, "loss": losses[i], "loss+": losses[i] * norms}
        gn = gn[normalization]
        bad = ~(np.isfinite(gn) & (gn > 0))
        gn = np.where(bad, 1.0, gn)  # the documented guard
        assert res.degenerate[i] == bool(bad.any()), i
        np.testing.assert_allclose(res.scales[i], gn, rtol=1e-12)
        gn_jac = g / gn[:, None]
        c_norm = gn_jac @ gn_jac.T
        best, _ = enumeration_oracle(c_norm)
        s = np.max(np.diag(c_norm))
        assert abs(res.objective[i] - best) <= 1e-10 * s, i
        assert numpy_kkt(c_norm, res.weights[i]) <= 1e-8, i
        for field in res:
            assert np.all(np.isfinite(field[i]))
    if normalization == "none":
        assert not res.degenerate.any()
    if normalization in ("l2", "loss+"):
        # The zero gradient stays zero after the guard: all weight on it is optimal.
        np.testing.assert_allclose(res.weights[6], np.eye(m)[2], atol=1e-12)


# --------------------------------------------------------------------- degenerate Gramians


@pytest.mark.parametrize("method", ["auto", "frank_wolfe", "projected_gradient"])
@pytest.mark.parametrize("m", [2, 3])
def test_zero_and_nonfinite_gramians(method, m):
    one_nan = np.eye(m)
    one_nan[1, 0] = one_nan[0, 1] = np.nan
    cases = {
        "zero": (np.zeros((m, m)), True),
        "nan": (np.full((m, m), np.nan), False),
        "one_nan": (one_nan, False),
        "inf": (np.diag(np.full(m, np.inf)), False),
        "neg_inf": (-np.diag(np.full(m, np.inf)), False),
    }
    rng = np.random.default_rng(3)
    g = rng.standard_normal((m, 4))
    grams = np.stack([c for c, _ in cases.values()] + [g @ g.T])
    res = solve_batch(grams, method=method)
    for k, (name, (_, conv)) in enumerate(cases.items()):
        np.testing.assert_allclose(res.weights[k], np.full(m, 1 / m), err_msg=name)
        assert res.degenerate[k], name
        assert res.converged[k] == conv, name
        assert res.objective[k] == 0.0 and res.kkt_residual[k] == 0.0
        for field in res:
            assert np.all(np.isfinite(field[k])), name
    # A degenerate entry does not affect its neighbour in the batch.
    alone = solve_batch(grams[-1:], method=method)
    assert not res.degenerate[-1]
    np.testing.assert_allclose(res.weights[-1], alone.weights[0], atol=1e-14)


# --------------------------------------------------------------------------------- dtypes


def test_float32_follows_input_and_is_accurate():
    rng = np.random.default_rng(41)
    kinds, jacs, grams = batch(rng, 5, 32)
    res = solve_batch(grams, dtype=jnp.float32)
    assert res.weights.dtype == np.float32 and res.objective.dtype == np.float32
    assert res.kkt_residual.dtype == np.float32 and res.scales.dtype == np.float32
    for i, c in enumerate(grams):
        c32 = c.astype(np.float32).astype(np.float64)  # the Gramian actually given
        best, _ = enumeration_oracle(c32)
        s = np.max(np.diag(c32))
        w = res.weights[i].astype(np.float64)
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6
        assert w @ c32 @ w - best <= 1e-5 * s, kinds[i]
        assert res.kkt_residual[i] <= 1e-4, kinds[i]
        assert res.converged[i], kinds[i]


def test_half_precision_is_solved_in_float32():
    g = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [-0.5, 0.2, 1.0]])
    res = min_norm_weights(jnp.asarray(g @ g.T, jnp.float16))
    assert res.weights.dtype == jnp.float16 and res.objective.dtype == jnp.float16
    _, beta = enumeration_oracle(np.asarray(jnp.asarray(g @ g.T, jnp.float16), np.float64))
    np.testing.assert_allclose(np.asarray(res.weights, np.float64), beta, atol=1e-2)
    out = jax.eval_shape(min_norm_weights, jax.ShapeDtypeStruct((3, 3), jnp.bfloat16))
    assert out.weights.dtype == jnp.bfloat16 and out.kkt_residual.dtype == jnp.bfloat16


def test_losses_dtype_promotes():
    out = jax.eval_shape(
        lambda c, l: min_norm_weights(c, normalization="loss", losses=l),
        jax.ShapeDtypeStruct((3, 3), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.float64),
    )
    assert out.weights.dtype == jnp.float64 and out.iterations.dtype == jnp.int32
    assert out.converged.dtype == jnp.bool_ and out.degenerate.dtype == jnp.bool_


# ------------------------------------------------------------------- jit / no jit (chex)


class VariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("auto",))
    def test_jit_and_eager_agree_with_oracle(self, method):
        rng = np.random.default_rng(51)
        fn = self.variant(lambda x: min_norm_weights(x, method=method))
        for _ in range(3):
            g = rng.standard_normal((4, 4)) + 2.0 * rng.standard_normal(4)
            c = g @ g.T
            res = fn(jnp.asarray(c))
            chex.assert_shape(res.weights, (4,))
            chex.assert_type(res.iterations, jnp.int32)
            best, _ = enumeration_oracle(c)
            s = np.max(np.diag(c))
            if method == "auto":
                assert float(res.objective) - best <= 1e-10 * s
                assert float(res.kkt_residual) <= 1e-8
            else:
                x, it, conv, margin = reference_transcription(c, method)
                if margin >= TIE:
                    np.testing.assert_allclose(np.asarray(res.weights), x, atol=1e-10)
                    assert int(res.iterations) == it


# ------------------------------------------------------------------------- bad inputs


def test_bad_static_inputs_name_the_argument():
    c = jnp.eye(3)
    with pytest.raises(ValueError, match="`gram`"):
        min_norm_weights(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="`gram`"):
        min_norm_weights(jnp.ones((2, 3, 3)))
    with pytest.raises(TypeError, match="`gram`"):
        min_norm_weights(jnp.eye(3, dtype=jnp.int32))
    with pytest.raises(ValueError, match="`method`"):
        min_norm_weights(c, method="newton")
    with pytest.raises(ValueError, match="`normalization`"):
        min_norm_weights(c, normalization="l1")
    with pytest.raises(ValueError, match="`losses`"):
        min_norm_weights(c, normalization="loss")
    with pytest.raises(ValueError, match="`losses`"):
        min_norm_weights(c, normalization="loss+", losses=jnp.ones(4))
    with pytest.raises(TypeError, match="`losses`"):
        min_norm_weights(c, normalization="loss", losses=jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match="`max_iter`"):
        min_norm_weights(c, max_iter=0)
    with pytest.raises(ValueError, match="`max_iter`"):
        min_norm_weights(c, max_iter=2.5)
    with pytest.raises(ValueError, match="`tol`"):
        min_norm_weights(c, tol=-1.0)
    with pytest.raises(ValueError, match="`method`"):
        mgda(method="fw")
    with pytest.raises(ValueError, match="`normalization`"):
        mgda(normalization="max")
    with pytest.raises(ValueError, match="`max_iter`"):
        mgda(max_iter=-3)
    # Raised at trace time, inside jit and vmap too.
    with pytest.raises(ValueError, match="`gram`"):
        jax.jit(min_norm_weights)(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="`losses`"):
        jax.vmap(lambda x: min_norm_weights(x, normalization="loss"))(jnp.ones((2, 3, 3)))


# ---------------------------------------------------------------------------- weighting


def test_mgda_weighting_protocol_and_scan():
    rng = np.random.default_rng(61)
    w = mgda()
    assert isinstance(w, Weighting) and w.num_tasks is None
    state = w.init(5)
    assert isinstance(state, MgdaState)
    np.testing.assert_allclose(np.asarray(state.weights), np.full(5, 0.2))
    assert state.weights.dtype == jnp.float32 and state.iterations.dtype == jnp.int32

    grams = np.stack([(lambda g: g @ g.T)(rng.standard_normal((5, 3))) for _ in range(6)])

    def step(st, c):
        weights, st = w.update(c, st, preference=jnp.ones(5))  # preference is ignored
        return st, weights

    final, ws = jax.jit(lambda s, cs: jax.lax.scan(step, s, cs))(state, jnp.asarray(grams))
    assert ws.dtype == jnp.float32 and final.weights.dtype == jnp.float32
    ref = solve_batch(grams)
    # Five gradients in R³: the min-norm direction is unique, the weights need not be
    # (the warm-started weighting may pick another minimiser), so compare directions:
    # ‖Jᵀ(w − w_ref)‖² = (w − w_ref)ᵀ C (w − w_ref).
    for c, w_step, w_ref in zip(grams, np.asarray(ws, float), ref.weights):
        diff = w_step - w_ref
        assert diff @ c @ diff <= 1e-10 * np.max(np.diag(c))
        assert np.all(w_step >= 0) and abs(w_step.sum() - 1) < 1e-6
    assert bool(final.converged) and not bool(final.degenerate)
    np.testing.assert_allclose(float(final.objective), ref.objective[-1], rtol=1e-5)


def test_mgda_weighting_loss_normalization_needs_losses():
    w = mgda(normalization="loss+", method="projected_gradient")
    state = w.init(3, jnp.float64)
    c = jnp.asarray(np.diag([1.0, 4.0, 9.0]))
    with pytest.raises(ValueError, match="`losses`"):
        w.update(c, state)
    losses = jnp.asarray([1.0, 0.5, 2.0])
    weights, new_state = w.update(c, state, losses=losses)
    # gn = L·‖g‖ = (1, 1, 6): C' = diag(1, 4, 9) / gn² = diag(1, 4, 1/4); the min-norm
    # point of diag(d) is ∝ 1/d = (1, 1/4, 4) / 5.25 (the reference PG lands close).
    np.testing.assert_allclose(np.asarray(new_state.weights), np.array([1, 0.25, 4]) / 5.25, atol=1e-3)
    np.testing.assert_allclose(np.asarray(weights), np.asarray(new_state.weights))
    assert new_state.weights.dtype == jnp.float64
    with pytest.raises(ValueError, match="`num_tasks`"):
        w.init(0)
    with pytest.raises(ValueError, match="`gram`"):
        w.update(jnp.eye(4), state, losses=jnp.ones(4))


def test_identity_gram_gives_uniform_weights():
    res = solve_batch(np.eye(3)[None])
    np.testing.assert_allclose(res.weights[0], np.full(3, 1 / 3), atol=1e-15)
    np.testing.assert_allclose(res.objective[0], 1 / 3, rtol=1e-14)


def test_gradient_through_the_solver_treats_weights_as_constants():
    rng = np.random.default_rng(71)
    jac = jnp.asarray(rng.standard_normal((4, 4)) + 1.5 * rng.standard_normal(4))

    def weighted_sq_norms(g):  # Σ_i w_i(G Gᵀ) ‖g_i‖², with w held fixed by the solver
        w = min_norm_weights(g @ g.T).weights
        return jnp.sum(w * jnp.sum(g**2, axis=1))

    grad = jax.grad(weighted_sq_norms)(jac)
    w = min_norm_weights(jac @ jac.T).weights
    np.testing.assert_allclose(np.asarray(grad), 2 * np.asarray(w)[:, None] * np.asarray(jac),
                               rtol=1e-12)


def test_negative_diagonal_is_flagged():
    c = np.diag([-1.0, 2.0, 2.0])  # not a Gramian: solved, but flagged
    c_all_negative = -np.eye(3)  # nothing usable: uniform, not converged
    res = solve_batch(np.stack([c, c_all_negative]))
    assert res.degenerate.all()
    assert np.all(np.isfinite(res.weights))
    np.testing.assert_allclose(res.weights[1], np.full(3, 1 / 3))
    assert not res.converged[1]


def test_rounding_level_cycle_stops_early_and_accurately():
    # A near-dependent instance (rank 2 + 1e-7 noise) whose optimum is ~1e-16: a
    # violation at noise level used to be added and dropped again until the cap.
    kinds, jacs, grams = batch(np.random.default_rng(1008), 8, 128)
    c = grams[117]
    assert kinds[117] == "near_dependent"
    res = solve_batch(c[None])
    assert res.converged[0] and res.iterations[0] < 20
    best, _ = enumeration_oracle(c)
    s = np.max(np.diag(c))
    assert numpy_kkt(c, res.weights[0]) <= 1e-8
    assert abs(res.objective[0] - best) <= 1e-10 * s


def test_affine_subproblem_singular_and_indefinite():
    # The equality-constrained sub-problem on a support (private helper): exact on a
    # singular PSD block (duplicated gradients); finite and near-exact through the
    # eigenvalue fallback when the block is indefinite beyond rounding.
    from jaxpareto.weighting.min_norm import _affine_min

    rng = np.random.default_rng(81)
    g = rng.standard_normal((5, 3))
    g[3] = g[1]
    c = g @ g.T
    c /= np.max(np.diag(c))
    support = np.array([True, True, False, True, True])
    idx = np.flatnonzero(support)
    kkt = np.zeros((5, 5))
    kkt[:4, :4] = 2 * c[np.ix_(idx, idx)]
    kkt[:4, 4] = kkt[4, :4] = 1
    z = np.linalg.lstsq(kkt, np.eye(5)[4], rcond=None)[0][:4]
    oracle = z @ c[np.ix_(idx, idx)] @ z
    v = np.zeros(5)
    v[1], v[3] = 1 / np.sqrt(2), -1 / np.sqrt(2)
    for gram, tol in ((c, 1e-14), (c - 1e-6 * np.outer(v, v), 1e-6)):
        beta = np.asarray(_affine_min(jnp.asarray(gram), jnp.asarray(support)))
        assert np.all(np.isfinite(beta)) and abs(beta.sum() - 1) < 1e-12
        assert np.all(beta[~support] == 0)
        assert abs(beta @ c @ beta - oracle) <= tol


def test_mgda_warm_start_option_changes_speed_not_the_direction():
    """``mgda(warm_start=False)`` solves every step cold; both give the same update
    direction on a scan of Gramians, and the warm one needs no more factorisations."""
    rng = np.random.default_rng(62)
    base = rng.standard_normal((12, 30)) + np.array([1.5] + [0] * 29)
    grams = np.stack([(lambda g: g @ g.T)(base * (1 + 0.05 * rng.standard_normal((12, 1))))
                      for _ in range(6)])
    out = {}
    for warm in (True, False):
        w = mgda(warm_start=warm)

        def step(st, c, w=w):
            weights, st = w.update(c, st)
            return st, (weights, st.iterations)

        _, out[warm] = jax.jit(lambda s, cs, w=w, step=step: jax.lax.scan(step, s, cs))(
            w.init(12, jnp.float64), jnp.asarray(grams))
    for c, a, b in zip(grams, np.asarray(out[True][0]), np.asarray(out[False][0])):
        assert (a - b) @ c @ (a - b) <= 1e-20 * np.max(np.diag(c))
    assert np.sum(out[True][1]) <= np.sum(out[False][1])
    with pytest.raises(TypeError, match="`warm_start`"):
        mgda(warm_start="yes")
