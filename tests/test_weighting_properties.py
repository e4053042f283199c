"""Table-driven properties of every weighting in the library (TorchJD's aggregator
properties, checked on many random Gramians).

Each row of ``ENTRIES`` states what a method claims; the README table "Weightings and
their properties" is the same table for users. The checks use explicit random gradient
matrices ``J`` (``[m, n]``, varied row norms and ranks) and compare *updates*
``d = Jᵀw`` (weights are not unique when the Gramian is singular; the update of a
well-posed method is):

* non-conflicting: ``J d ≥ −tol`` (every task gradient has a non-negative inner product
  with the update);
* permutation invariance: relabelling the tasks (``J → PJ``, losses and preference
  permuted with them) leaves ``d`` unchanged;
* global scale: ``J → sJ`` gives ``w → s^p w`` (``p = 0``: the weights are scale free;
  Nash-MTL: ``p = −1``, the update itself is unchanged);
* linear under task scaling (TorchJD's property): ``d(diag(a c₁ + b c₂) J) =
  a d(diag(c₁) J) + b d(diag(c₂) J)`` for positive ``c₁, c₂, a, b``.

Besides: every weighting runs under ``jax.jit`` and ``jax.vmap`` (all property batches
go through one ``vmap``; one ``jit`` call is compared with it), float32 in gives float32
out, bad static input raises an error naming ``gram``, and degenerate Gramians (zero,
NaN, rank one, duplicated rows) give finite weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpareto.weighting.aligned_mtl import aligned_mtl, aligned_mtl_weights
from jaxpareto.weighting.cagrad import cagrad, cagrad_weights
from jaxpareto.weighting.dualproj import dualproj
from jaxpareto.weighting.epo import epo
from jaxpareto.weighting.hv_gradient import hv_gradient_weights
from jaxpareto.weighting.imtl import imtl_g, imtl_g_weights
from jaxpareto.weighting.min_norm import mgda
from jaxpareto.weighting.nash_mtl import nash_mtl, nash_mtl_weights
from jaxpareto.weighting.pcgrad import pcgrad, pcgrad_weights
from jaxpareto.weighting.pmtl import MAIN, pmtl_weights
from jaxpareto.weighting.scalarization import chebyshev, linear, smooth_chebyshev
from jaxpareto.weighting.upgrad import upgrad
from jaxpareto.weighting.baselines import constant
from jaxpareto.weighting.baselines import random as wrandom
from jaxpareto.weighting.baselines import sum as wsum
from jaxpareto.weighting.config import config
from jaxpareto.weighting.fairgrad import fairgrad
from jaxpareto.weighting.gradvac import gradvac
from jaxpareto.weighting.robust import krum
from jaxpareto.weighting.sdmgrad import sdmgrad
from jaxpareto.weighting.scalarization import aasf, aug_chebyshev, cosmos, pbi, pnorm

M = 4          # tasks in the property batches
N = 48         # random instances per property
DIM = 6        # parameters (rank-deficient instances use fewer directions)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One weighting and its claims."""

    name: str
    make: Callable  # () -> Weighting, or None when ``solver`` is used
    losses: bool = False
    preference: bool = False
    non_conflicting: str | None = None  # None, "all" or "full_rank"
    permutation: bool = True
    scale_degree: int | None = 0
    linear_task_scaling: bool = False
    validates_gram: bool = True
    min_tasks: int = 1  # init(num_tasks) below this must raise (m = 1 is allowed everywhere)
    full_rank_only: bool = False  # properties hold where a solution exists (full rank)
    solver: Callable | None = None  # (gram, losses, pref) -> weights, instead of make


def _pmtl(gram, losses, pref):
    # Reference vectors {r, 1}: relabelling the tasks permutes their columns.
    prefs = jnp.stack([pref, jnp.ones_like(pref)])
    return pmtl_weights(gram, losses, prefs, 0, phase=MAIN).weights


ENTRIES = [
    Entry("mgda", lambda: mgda(), non_conflicting="all", min_tasks=1),
    Entry("epo", lambda: epo(), losses=True, preference=True),
    Entry("pmtl", None, losses=True, preference=True, solver=_pmtl),
    Entry("linear", lambda: linear(), preference=True, linear_task_scaling=True, validates_gram=False),
    Entry("chebyshev", lambda: chebyshev(), losses=True, preference=True,
          linear_task_scaling=True, validates_gram=False),
    Entry("smooth_chebyshev", lambda: smooth_chebyshev(smoothing=0.5), losses=True, preference=True,
          linear_task_scaling=True, validates_gram=False),
    Entry("pcgrad", lambda: pcgrad(seed=0), permutation=False),
    Entry("cagrad", lambda: cagrad(0.5)),
    Entry("cagrad_c1", lambda: cagrad(1.0), non_conflicting="all"),
    Entry("nash_mtl", lambda: nash_mtl(warm_start=False), non_conflicting="all", scale_degree=-1,
          full_rank_only=True),
    Entry("imtl_g", lambda: imtl_g()),
    Entry("aligned_mtl", lambda: aligned_mtl()),
    Entry("upgrad", lambda: upgrad(), non_conflicting="all", linear_task_scaling=True,
          min_tasks=1),
    Entry("dualproj", lambda: dualproj(), non_conflicting="all", min_tasks=1),
    # The wider field (tests/test_weightings_field.py holds their peer oracles).
    Entry("krum", lambda: krum(0)),
    Entry("sum", lambda: wsum(), linear_task_scaling=True),
    Entry("constant", lambda: constant(jnp.array([1.0, 2.0, 0.5, 1.5])), permutation=False,
          linear_task_scaling=True, validates_gram=False),
    Entry("random", lambda: wrandom(0), permutation=False, scale_degree=None),
    # ConFIG is linear under task scaling too (tested on full-rank Jacobians in
    # test_weightings_field.py; where d ≈ 0 on rank-deficient ones rounding dominates).
    Entry("config", lambda: config(), non_conflicting="full_rank", full_rank_only=True),
    Entry("gradvac", lambda: gradvac(0), permutation=False, scale_degree=None),
    Entry("fairgrad", lambda: fairgrad(2.0), non_conflicting="full_rank", scale_degree=-4 / 3,
          full_rank_only=True),
    Entry("pbi", lambda: pbi(), losses=True, preference=True, linear_task_scaling=True,
          validates_gram=False),
    Entry("cosmos", lambda: cosmos(), losses=True, preference=True, linear_task_scaling=True,
          validates_gram=False),
    Entry("aasf", lambda: aasf(), losses=True, preference=True, linear_task_scaling=True,
          validates_gram=False),
    Entry("aug_chebyshev", lambda: aug_chebyshev(), losses=True, preference=True,
          linear_task_scaling=True, validates_gram=False),
    Entry("pnorm", lambda: pnorm(), losses=True, preference=True, linear_task_scaling=True,
          validates_gram=False),
    Entry("sdmgrad", lambda: sdmgrad(0.3), scale_degree=None),  # the 1e-8 in A/(s² + 1e-8)
]
BY_NAME = {e.name: e for e in ENTRIES}


def weights_fn(entry: Entry):
    """``(gram [m, m], losses [m], pref [m]) -> weights [m]`` through the public API."""
    if entry.solver is not None:
        return entry.solver
    weighting = entry.make()

    def fn(gram, losses, pref):
        state = weighting.init(gram.shape[0], gram.dtype)
        kwargs = {}
        if entry.losses:
            kwargs["losses"] = losses
        if entry.preference:
            kwargs["preference"] = pref
        return weighting.update(gram, state, **kwargs)[0]

    return fn


# ------------------------------------------------------------------------- instances


def _instances(seed: int):
    """``J [N, M, DIM]``, losses, preferences, full-rank mask, and the transforms."""
    rng = np.random.default_rng(seed)
    j = np.empty((N, M, DIM))
    full = np.zeros(N, bool)
    for k in range(N):
        r = M if k % 2 == 0 else int(rng.integers(1, M))
        g = rng.standard_normal((M, r)) @ rng.standard_normal((r, DIM))
        g[0] -= rng.uniform(0, 2) * g[1]
        g *= np.exp(rng.uniform(-1.5, 1.5, size=(M, 1)))
        j[k] = g
        full[k] = np.linalg.matrix_rank(g) == M
    losses = rng.uniform(0.2, 2.0, (N, M))
    prefs = rng.uniform(0.2, 2.0, (N, M))
    perms = np.stack([rng.permutation(M) for _ in range(N)])
    scale = np.exp(rng.uniform(-2, 2, N))
    c1 = rng.uniform(0.2, 3.0, (N, M))
    c2 = rng.uniform(0.2, 3.0, (N, M))
    ab = rng.uniform(0.2, 2.0, (N, 2))
    return j, losses, prefs, full, perms, scale, c1, c2, ab


INST = _instances(0)


def _batch():
    """All property variants of every instance stacked in one batch (one compile)."""
    j, losses, prefs, _, perms, scale, c1, c2, ab = INST
    rows = np.arange(N)[:, None]
    variants = [
        (j, losses, prefs),                                                  # base
        (j[rows, perms], losses[rows, perms], prefs[rows, perms]),           # permuted
        (j * scale[:, None, None], losses, prefs),                           # scaled
        (j * c1[:, :, None], losses, prefs),                                 # task-scaled c1
        (j * c2[:, :, None], losses, prefs),                                 # task-scaled c2
        (j * (ab[:, :1] * c1 + ab[:, 1:] * c2)[:, :, None], losses, prefs),  # combination
    ]
    js = np.concatenate([v[0] for v in variants] + [DEGENERATE])
    ls = np.concatenate([v[1] for v in variants] + [np.full((len(DEGENERATE), M), 0.5)])
    ps = np.concatenate([v[2] for v in variants] + [np.ones((len(DEGENERATE), M))])
    return js, ls, ps


def _degenerate():
    """Jacobians ``[5, M, DIM]``: zero, NaN, rank one, duplicated rows, one zero row."""
    g = np.random.default_rng(5).standard_normal(DIM)
    eye = np.eye(M, DIM)
    return np.stack([
        np.zeros((M, DIM)),
        np.full((M, DIM), np.nan),
        np.outer([1.0, -2.0, 0.5, 3.0], g),
        np.stack([g, g, -g, 2 * g]),
        eye * np.array([1.0, 0.0, 2.0, 0.5])[:, None],
    ])


DEGENERATE = _degenerate()
BATCH = _batch()




@functools.lru_cache(maxsize=None)
def batch_updates(name: str, dtype=np.float64):
    """Updates ``d = Jᵀw`` ``[6, N, DIM]`` and weights of one entry on ``BATCH``."""
    js, ls, ps = (x.astype(dtype) for x in BATCH)
    grams = np.einsum("kin,kjn->kij", js, js)
    w = jax.vmap(weights_fn(BY_NAME[name]))(jnp.asarray(grams), jnp.asarray(ls), jnp.asarray(ps))
    w = np.asarray(w)
    regular = 6 * N
    d = np.einsum("kin,ki->kn", js[:regular].astype(np.float64), w[:regular].astype(np.float64))
    return d.reshape(6, N, DIM), w[:regular].reshape(6, N, M), w[regular:]


NAMES = [e.name for e in ENTRIES]


# ------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", NAMES)
def test_finite_and_vmapped(name):
    d, w, degenerate = batch_updates(name)
    assert np.all(np.isfinite(w)), name
    # zero, NaN, rank-one, duplicated and zero-row Jacobians: finite weights too
    assert np.all(np.isfinite(degenerate)), (name, degenerate)


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.non_conflicting])
def test_non_conflicting(name):
    entry = BY_NAME[name]
    j = INST[0]
    d, w, _ = batch_updates(name)
    mask = INST[3] if entry.full_rank_only else np.ones(N, bool)
    inner = np.einsum("kin,kn->ki", j, d[0])
    # Relative to the size the inner products could have: max ‖g_i‖² Σ|w_i|.
    scale = np.max(np.sum(j * j, axis=2), axis=1) * np.maximum(np.sum(np.abs(w[0]), axis=1), 1e-300)
    worst = np.min((inner / scale[:, None])[mask])
    assert worst >= -1e-8, (name, worst)


def _domain(entry):
    return INST[3] if entry.full_rank_only else np.ones(N, bool)


def _rel_err(a, b, j):
    """Per instance ``‖a − b‖ / max(‖b‖, 1e-6 max_i ‖g_i‖)``: near-stationary points
    (``d ≈ 0``) are compared at the gradients' scale, not at rounding level."""
    floor = 1e-6 * np.max(np.linalg.norm(j, axis=2), axis=1)
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), floor)


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.permutation])
def test_permutation_invariance(name):
    d, _, _ = batch_updates(name)
    err = _rel_err(d[1], d[0], INST[0])[_domain(BY_NAME[name])]
    assert np.max(err) < 1e-7, (name, np.max(err))


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.scale_degree is not None])
def test_global_scale(name):
    # J → sJ: w → s^p w, i.e. d → s^(1+p) d (compared on updates: with a singular
    # Gramian the weights of a well-posed method need not be unique).
    p = BY_NAME[name].scale_degree
    d, _, _ = batch_updates(name)
    s = INST[5][:, None]
    err = _rel_err(d[2], d[0] * s ** (1 + p), INST[0] * s[:, :, None] ** (1 + p))[_domain(BY_NAME[name])]
    assert np.max(err) < 1e-7, (name, np.max(err))


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.linear_task_scaling])
def test_linear_under_task_scaling(name):
    d, _, _ = batch_updates(name)
    ab = INST[8]
    expected = ab[:, :1] * d[3] + ab[:, 1:] * d[4]
    err = _rel_err(d[5], expected, INST[0])
    assert np.max(err) < 1e-6, (name, np.max(err))


def test_claims_are_not_vacuous():
    # The properties fail for methods that do not claim them, on these very instances:
    # the checks can fail.
    d, _, _ = batch_updates("cagrad")        # c < 1: conflicts occur
    assert np.min(np.einsum("kin,kn->ki", INST[0], d[0])) < -1e-6
    d, _, _ = batch_updates("aligned_mtl")   # not linear under task scaling
    ab = INST[8]
    assert np.max(np.abs(d[5] - ab[:, :1] * d[3] - ab[:, 1:] * d[4])) > 1e-3
    _, w, _ = batch_updates("nash_mtl")      # weights not scale free
    assert np.max(np.abs(w[2] - w[0])) > 1e-3
    # The wider field: unclaimed properties fail on these instances too.
    j = INST[0]
    for name in ("krum", "config", "fairgrad", "gradvac", "sum", "pbi", "sdmgrad"):  # conflicts
        d, _, _ = batch_updates(name)
        assert np.min(np.einsum("kin,kn->ki", j, d[0])) < -1e-6, name
    for name in ("krum", "fairgrad", "sdmgrad"):  # not linear under task scaling
        d, _, _ = batch_updates(name)
        assert np.max(np.abs(d[5] - ab[:, :1] * d[3] - ab[:, 1:] * d[4])) > 1e-3, name
    d, _, _ = batch_updates("sdmgrad")  # not exactly scale free (A / (s² + 1e-8))
    s = INST[5][:, None]
    assert np.max(_rel_err(d[2], d[0] * s, j * s[:, :, None])) > 1e-7
    d, _, _ = batch_updates("gradvac")  # task scaling: the φ < φ̂ decisions can flip
    assert np.max(_rel_err(d[5], ab[:, :1] * d[3] + ab[:, 1:] * d[4], j)) > 1e-2
    for name in ("constant", "random", "gradvac"):  # not permutation invariant (as stated)
        d, _, _ = batch_updates(name)
        assert np.max(_rel_err(d[1], d[0], j)) > 1e-3, name


def test_pcgrad_permutation_with_fixed_orders():
    # PCGrad is permutation invariant in distribution; with the orders relabelled along
    # with the tasks it is exactly equivariant.
    j, _, _, _, perms, *_ = INST
    rng = np.random.default_rng(3)
    orders = np.stack([np.stack([rng.permutation(M) for _ in range(M)]) for _ in range(N)])
    grams = np.einsum("kin,kjn->kij", j, j)
    base = jax.vmap(lambda g, o: pcgrad_weights(g, orders=o).weights)(jnp.asarray(grams), jnp.asarray(orders))
    inv = np.argsort(perms, axis=1)
    rows = np.arange(N)[:, None]
    j_p = j[rows, perms]
    # New task a is old task perms[a]; it visits the old order relabelled by inv.
    orders_p = np.stack([inv[k][orders[k][perms[k]]] for k in range(N)])
    w_p = jax.vmap(lambda g, o: pcgrad_weights(g, orders=o).weights)(
        jnp.asarray(np.einsum("kin,kjn->kij", j_p, j_p)), jnp.asarray(orders_p))
    d = np.einsum("kin,ki->kn", j, np.asarray(base))
    d_p = np.einsum("kin,ki->kn", j_p, np.asarray(w_p))
    np.testing.assert_allclose(d_p, d, atol=1e-10 * np.abs(j).max())


# Entries from other modules have their own jit / float32 tests; here they run only with
# ``-m slow`` to keep the default suite fast (one compile per entry).
_OWN = {"pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "mgda"}


@pytest.mark.parametrize(
    "name", [n if n in _OWN else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
)
def test_jit_float32_matches_vmapped_float64(name):
    # One jitted float32 call (a full-rank instance) gives float32 weights whose update
    # is close to the vmapped float64 batch's.
    entry = BY_NAME[name]
    j = INST[0][0]
    gram = j @ j.T
    l, r = INST[1][0], INST[2][0]
    w32 = jax.jit(weights_fn(entry))(*(jnp.asarray(x, jnp.float32) for x in (gram, l, r)))
    assert w32.dtype == jnp.float32, name
    assert bool(jnp.all(jnp.isfinite(w32))), name
    _, w64, _ = batch_updates(name)
    d64, d32 = j.T @ w64[0, 0], j.T @ np.asarray(w32, np.float64)
    assert np.linalg.norm(d32 - d64) <= 2e-3 * np.linalg.norm(d64) + 1e-6, (name, d32, d64)


def test_degenerate_flags():
    # The pure solvers on the property batch (same shapes: their compiled programs are
    # reused); rows 6N, 6N+1 are the zero and the NaN Jacobian.
    js = BATCH[0]
    grams = jnp.asarray(np.einsum("kin,kjn->kij", js, js))
    zero, nan = 6 * N, 6 * N + 1
    for solver in (cagrad_weights, nash_mtl_weights, imtl_g_weights, aligned_mtl_weights):
        res = jax.vmap(solver)(grams)
        flags = np.asarray(res.degenerate)
        assert flags[zero] and flags[nan], solver.__name__
        assert not np.any(flags[: 6 * N][np.tile(INST[3], 6)]), solver.__name__  # full rank: no flag
        assert np.all(np.isfinite(np.asarray(res.weights))), solver.__name__
    res = jax.vmap(pcgrad_weights)(grams)
    assert bool(res.degenerate[nan]) and not bool(res.degenerate[zero])


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.validates_gram and e.make is not None])
def test_bad_static_input_names_gram(name):
    entry = BY_NAME[name]
    w = entry.make()
    state = w.init(3, jnp.float64)
    kwargs = {}
    if entry.losses:
        kwargs["losses"] = jnp.ones(3)
    with pytest.raises(ValueError, match="gram"):
        w.update(jnp.ones((3, 2)), state, **kwargs)
    with pytest.raises(TypeError, match="gram"):
        w.update(jnp.eye(3, dtype=jnp.int32), state, **kwargs)
    with pytest.raises(ValueError, match="num_tasks"):
        w.init(entry.min_tasks - 1, jnp.float64)


def test_hv_gradient_properties():
    # Relabelling solutions and objectives permutes the weights; scaling objective i
    # (and the reference) by s_i divides −∂HV/∂l_{k,i} by s_i before the per-solution
    # normalization; vmap over several sets; float32 stays float32.
    rng = np.random.default_rng(9)
    sets = rng.uniform(0, 1, (8, 6, 3))
    ref = np.full(3, 1.2)
    fn = jax.vmap(lambda s: hv_gradient_weights(s, jnp.asarray(ref), normalization="none").weights)
    base = np.asarray(fn(jnp.asarray(sets)))  # the solver is jitted inside
    ps, po = rng.permutation(6), rng.permutation(3)
    perm = np.asarray(jax.vmap(lambda s: hv_gradient_weights(s, jnp.asarray(ref[po]), normalization="none").weights)(
        jnp.asarray(sets[:, ps][:, :, po])))
    np.testing.assert_allclose(perm, base[:, ps][:, :, po], rtol=1e-12, atol=1e-15)
    s = np.array([0.5, 2.0, 3.0])
    scaled = np.asarray(jax.vmap(lambda x: hv_gradient_weights(x, jnp.asarray(ref * s), normalization="none").weights)(
        jnp.asarray(sets * s)))
    np.testing.assert_allclose(scaled, base * np.prod(s) / s, rtol=1e-10, atol=1e-15)
    w32 = hv_gradient_weights(jnp.asarray(sets[0], jnp.float32), jnp.asarray(ref, jnp.float32)).weights
    assert w32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(w32)))
