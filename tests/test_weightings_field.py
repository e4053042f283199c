"""Krum, TrimmedMean, Random/Sum/Constant, ConFIG, GradVac, GradDrop and FairGrad
against their peers run on the same inputs.

Oracles: TorchJD 0.18 (``torchjd.aggregation``) for every method; LibMTL 1.1.5
(``GradVac``) in addition. The peers consume the gradient *matrix* (or the Gramian for
FairGrad/GradVac's Gramian weightings); jaxpareto consumes the Gramian (or the Jacobian
for the Jacobian weightings), so every comparison is on the update ``d = Jᵀw`` or on
the weights. Randomness is fixed on both sides: TorchJD's ``torch.randperm`` /
``torch.rand`` and LibMTL's ``random.shuffle`` are patched to the draws jaxpareto is
given explicitly; ``random`` is compared in distribution (two-sample KS tests).

Disagreements, explained (also in the modules' docstrings):
* ConFIG: the pseudo-inverse cutoff is on the Gramian's eigenvalues (``10 m ε λ_max``)
  where TorchJD cuts singular values at ``max(m, n) ε σ_max``; the instances here are
  well conditioned or exactly rank deficient, where the two agree.
* GradVac vs LibMTL: LibMTL moves ``φ̂`` only after a correction (``ema="corrected"``),
  has no ``eps`` (``eps=0``) and keeps ``φ̂`` in float32 (tolerance 1e-6).
* FairGrad: TorchJD's ``least_squares`` stops at its own tolerances (rtol 1e-7 here).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import jaxpareto as jp
from _peers import libmtl_weighting
from _peers import torch as _torch
from jaxpareto.weighting.baselines import random_weights
from jaxpareto.weighting.config import config_weights
from jaxpareto.weighting.fairgrad import fairgrad_weights
from jaxpareto.weighting.graddrop import graddrop_direction
from jaxpareto.weighting.gradvac import gradvac_weights
from jaxpareto.weighting.nash_mtl import nash_mtl_weights
from jaxpareto.weighting.robust import krum_weights, trimmed_mean_direction
from jaxpareto.status import Status

torch = _torch()
agg = pytest.importorskip("torchjd.aggregation")


def jac(seed, m, n, rank=None):
    rng = np.random.default_rng(seed)
    r = m if rank is None else rank
    g = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    g[0] -= 0.8 * g[1]  # a conflict
    return g * np.exp(rng.uniform(-1, 1, (m, 1)))


def tj(matrix_aggregator, j):
    return matrix_aggregator(torch.tensor(j)).numpy()


def upd(j, w):
    return j.T @ np.asarray(w, np.float64)


# ------------------------------------------------------------------------------ Krum


@pytest.mark.parametrize("f,k", [(0, 1), (2, 1), (2, 3), (1, 4)])
def test_krum_matches_torchjd(f, k):
    for seed in range(4):
        j = jac(seed, 7, 9)
        w = krum_weights(jnp.asarray(j @ j.T), f, n_selected=k).weights
        np.testing.assert_allclose(upd(j, w), tj(agg.Krum(f, k), j), atol=1e-12)


def test_krum_paper_score_and_bad_inputs():
    # score="squared" (the paper): brute-force numpy over the definition.
    j = jac(11, 6, 5)
    d2 = ((j[:, None] - j[None]) ** 2).sum(-1)
    f = 1
    scores = [np.sort(np.delete(d2[i], i))[: 6 - f - 2].sum() for i in range(6)]
    w = krum_weights(jnp.asarray(j @ j.T), f, score="squared").weights
    assert int(np.argmax(np.asarray(w))) == int(np.argmin(scores))
    # m = 1: weight 1; m < f + 3 raises naming `gram`; NaN: uniform + NONFINITE_INPUT.
    assert float(krum_weights(jnp.ones((1, 1)), 3).weights[0]) == 1.0
    with pytest.raises(ValueError, match="gram"):
        krum_weights(jnp.eye(3), 1)
    res = krum_weights(jnp.full((5, 5), jnp.nan), 1)
    np.testing.assert_allclose(res.weights, 0.2)
    assert int(res.status) == Status.NONFINITE_INPUT
    # zero gradients: every score 0, ties to the smallest index, finite.
    res = krum_weights(jnp.zeros((5, 5)), 1)
    assert np.asarray(res.weights).tolist() == [1, 0, 0, 0, 0]


# ----------------------------------------------------------------------- TrimmedMean


@pytest.mark.parametrize("t", [0, 1, 3])
def test_trimmed_mean_matches_torchjd(t):
    j = jac(3, 7, 13)
    d, w, finite = trimmed_mean_direction(jnp.asarray(j), t)
    np.testing.assert_allclose(d, tj(agg.TrimmedMean(t), j), atol=1e-13)
    assert bool(finite) and abs(float(jnp.sum(w)) - 1) < 1e-12
    # effective weights reproduce the direction when every row is kept (t = 0)
    if t == 0:
        np.testing.assert_allclose(w, 1 / 7)


def test_trimmed_mean_pytree_transform_and_bad_inputs():
    j = jac(4, 5, 12)
    tree = {"a": jnp.asarray(j[:, :4].reshape(5, 2, 2)), "b": jnp.asarray(j[:, 4:])}
    tx = jp.trimmed_mean(1, num_tasks=5)
    state = tx.init({"a": jnp.zeros((2, 2)), "b": jnp.zeros(8)})
    d, state = jax.jit(tx.update)(tree, state)
    expected = tj(agg.TrimmedMean(1), j)
    np.testing.assert_allclose(np.concatenate([np.ravel(d["a"]), d["b"]]), expected, atol=1e-13)
    # NaN Jacobian: zero direction, skipped by the transform; pure function flags it.
    bad = jax.tree_util.tree_map(lambda x: x.at[0].set(jnp.nan), tree)
    d, state2 = tx.update(bad, state)
    assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree_util.tree_leaves(d))
    assert int(state2.skipped) == 1
    out, w, finite = trimmed_mean_direction(bad, 1)
    assert not bool(finite) and np.all(np.isfinite(np.asarray(w)))
    # m = 1: the gradient itself; m < 2t + 1 raises.
    out, _, _ = trimmed_mean_direction(jnp.asarray(j[:1]), 2)
    np.testing.assert_allclose(out, j[0])
    with pytest.raises(ValueError, match="2\\*trim_number"):
        trimmed_mean_direction(jnp.asarray(j[:3]), 2)
    with pytest.raises(TypeError, match="GramianVJP|Jacobian"):
        class _Fake(tuple):
            gram = jnp.eye(5)

            def vjp(self, w):
                return w
        tx.update(_Fake(), state)


# ------------------------------------------------------------- Random / Sum / Constant


def test_sum_constant_match_torchjd():
    j = jac(5, 4, 6)
    g = jnp.asarray(j @ j.T)
    ws = jp.weighting.sum()
    w, st = ws.update(g, ws.init(4, jnp.float64))
    np.testing.assert_allclose(upd(j, w), tj(agg.Sum(), j), atol=1e-12)
    raw = np.array([2.0, -0.5, 0.0, 3.0])
    wc = jp.weighting.constant(raw)
    w, st = wc.update(g, wc.init(4, jnp.float64))
    np.testing.assert_allclose(upd(j, w), tj(agg.Constant(torch.tensor(raw)), j), atol=1e-12)
    # non-finite Gramian: flagged, weights unchanged (they never read it)
    w, st = wc.update(jnp.full((4, 4), jnp.nan), st)
    np.testing.assert_allclose(w, raw)
    assert int(st.status) == Status.NONFINITE_INPUT
    with pytest.raises(ValueError, match="num_tasks"):
        wc.init(3)


def test_random_matches_torchjd_in_distribution():
    m, draws = 3, 3000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    ours = np.asarray(jax.vmap(lambda k: random_weights(k, m, jnp.float64))(keys))
    torch.manual_seed(0)
    rw = agg.RandomWeighting()
    mat = torch.zeros(m, 2, dtype=torch.float64)
    theirs = np.stack([rw(mat).numpy() for _ in range(draws)])
    np.testing.assert_allclose(ours.sum(1), 1, atol=1e-12)
    for i in range(m):
        assert stats.ks_2samp(ours[:, i], theirs[:, i]).pvalue > 1e-3
    # Non-vacuous: a nearby distribution (logits of standard deviation 1.3) is rejected.
    z = 1.3 * np.random.default_rng(0).standard_normal((draws, m))
    other = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert stats.ks_2samp(ours[:, 0], other[:, 0]).pvalue < 1e-3
    # The weighting splits its key: two updates differ, a rerun from the seed repeats.
    wr = jp.weighting.random(7)
    st = wr.init(m)
    w1, st = wr.update(jnp.eye(m), st)
    w2, st = wr.update(jnp.eye(m), st)
    w1b, _ = wr.update(jnp.eye(m), wr.init(m))
    assert not np.allclose(w1, w2) and np.array_equal(w1, w1b)


# --------------------------------------------------------------------------- ConFIG


@pytest.mark.parametrize("rank", [4, 2])
def test_config_matches_torchjd(rank):
    for seed in range(3):
        j = jac(seed, 4, 7, rank)
        w = config_weights(jnp.asarray(j @ j.T)).weights
        np.testing.assert_allclose(upd(j, w), tj(agg.ConFIG(), j), rtol=1e-9, atol=1e-10)
    pref = np.array([1.0, 2.0, 0.5, 1.5])
    j = jac(9, 4, 7)
    w = config_weights(jnp.asarray(j @ j.T), pref).weights
    np.testing.assert_allclose(
        upd(j, w), tj(agg.ConFIG(torch.tensor(pref)), j), rtol=1e-9, atol=1e-10
    )


def test_config_zero_row_and_bad_inputs():
    j = jac(2, 4, 7)
    j[2] = 0
    w = config_weights(jnp.asarray(j @ j.T)).weights
    np.testing.assert_allclose(upd(j, w), tj(agg.ConFIG(), j), rtol=1e-9, atol=1e-10)
    # full row rank: conflict free, U ĝ ∝ r (checked directly on the unit gradients)
    j = jac(3, 4, 7)
    d = upd(j, config_weights(jnp.asarray(j @ j.T)).weights)
    cos = (j @ d) / np.linalg.norm(j, axis=1) / np.linalg.norm(d)
    np.testing.assert_allclose(cos, cos[0], rtol=1e-9)
    res = config_weights(jnp.zeros((3, 3)))
    assert np.all(np.asarray(res.weights) == 0) and int(res.status) == Status.DEGENERATE
    res = config_weights(jnp.full((3, 3), jnp.inf))
    assert np.all(np.isfinite(res.weights)) and int(res.status) == Status.NONFINITE_INPUT
    assert float(config_weights(jnp.full((1, 1), 4.0)).weights[0]) == pytest.approx(1.0)


# -------------------------------------------------------------------------- GradVac


def test_gradvac_matches_torchjd_over_steps(monkeypatch):
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.arange(n))
    peer = agg.GradVacWeighting(beta=0.3)
    phi = None
    for step in range(4):
        j = jac(20 + step, 4, 6)
        c = j @ j.T
        res = gradvac_weights(jnp.asarray(c), phi, beta=0.3)
        phi = res.phi_hat
        np.testing.assert_allclose(res.weights, peer(torch.tensor(c)).numpy(), rtol=1e-10, atol=1e-12)
    assert int(res.iterations) > 0  # corrections happened (the check is not vacuous)


def test_gradvac_matches_libmtl(monkeypatch):
    cls = libmtl_weighting("GradVac")
    module = __import__(cls.__module__, fromlist=["random"])
    monkeypatch.setattr(module.random, "shuffle", lambda x: None)
    peer = cls()
    peer.task_num, peer.device, peer.rep_grad = 4, "cpu", False
    captured = {}
    peer._compute_grad_dim = lambda: None
    peer._reset_grad = lambda g: captured.__setitem__("d", g.numpy())
    phi = None
    for step in range(3):
        j = jac(40 + step, 4, 6)
        peer._compute_grad = lambda losses, mode, j=j: torch.tensor(j)
        w_lib = peer.backward(torch.ones(4), beta=0.5)
        res = gradvac_weights(jnp.asarray(j @ j.T), phi, eps=0.0, ema="corrected")
        phi = res.phi_hat
        np.testing.assert_allclose(res.weights, w_lib, rtol=1e-6)
        np.testing.assert_allclose(upd(j, res.weights), captured["d"], rtol=1e-6)


def test_gradvac_weighting_state_and_bad_inputs():
    w = jp.weighting.gradvac(0)
    st = w.init(3, jnp.float64)
    j = jac(1, 3, 5)
    _, st = w.update(jnp.asarray(j @ j.T), st)
    assert np.any(np.asarray(st.phi_hat) != 0)
    phi = st.phi_hat
    ww, st = w.update(jnp.full((3, 3), jnp.nan), st)
    np.testing.assert_allclose(ww, 1)
    np.testing.assert_array_equal(st.phi_hat, phi)
    assert int(st.status) == Status.NONFINITE_INPUT
    ww, _ = w.update(jnp.ones((1, 1)), w.init(1))
    assert float(ww[0]) == 1.0


# ------------------------------------------------------------------------- GradDrop


def test_graddrop_matches_torchjd(monkeypatch):
    rng = np.random.default_rng(0)
    j = jac(7, 4, 10)
    j[:, 3] = 0  # a coordinate with no gradient at all
    u = rng.uniform(size=10)
    for leak in (None, np.array([0.0, 0.3, 0.5, 1.0])):
        monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(u))
        peer = agg.GradDrop(leak=None if leak is None else torch.tensor(leak))
        expected = tj(peer, j)
        d, w, finite = graddrop_direction(jnp.asarray(j), uniforms=jnp.asarray(u), leak=leak)
        np.testing.assert_allclose(d, expected, atol=1e-13)
    # pytree Jacobian = the flat matrix, split the same way
    tree = {"a": jnp.asarray(j[:, :4]), "b": jnp.asarray(j[:, 4:].reshape(4, 3, 2))}
    ut = {"a": jnp.asarray(u[:4]), "b": jnp.asarray(u[4:].reshape(3, 2))}
    dt, _, _ = graddrop_direction(tree, uniforms=ut)
    flat = np.concatenate([np.asarray(dt["a"]), np.ravel(dt["b"])])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(u))
    np.testing.assert_allclose(flat, tj(agg.GradDrop(), j), atol=1e-13)


def test_graddrop_sign_purity_statistics():
    # E[M_ik] = P_k for g_ik > 0 and 1 − P_k for g_ik < 0 (the paper's Sec. 3).
    j = np.array([[1.0, -2.0, 0.5], [-3.0, -1.0, 0.5]])
    p = 0.5 * (1 + j.sum(0) / np.abs(j).sum(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    ds = jax.vmap(lambda k: graddrop_direction(jnp.asarray(j), k)[0])(keys)
    mean = np.asarray(ds).mean(0)
    expected = (np.where(j > 0, p, 1 - p) * j).sum(0)
    np.testing.assert_allclose(mean, expected, atol=0.08)


def test_graddrop_transform_and_bad_inputs():
    tx = jp.graddrop(0, num_tasks=3)
    params = {"w": jnp.zeros(4)}
    st = tx.init(params)
    j = {"w": jnp.asarray(jac(2, 3, 4))}
    d, st = jax.jit(tx.update)(j, st)
    assert np.all(np.isfinite(d["w"])) and int(st.skipped) == 0
    d, st = tx.update({"w": j["w"].at[1, 1].set(jnp.nan)}, st)
    assert float(jnp.max(jnp.abs(d["w"]))) == 0 and int(st.skipped) == 1
    out, w, finite = graddrop_direction(jnp.zeros((3, 4)), jax.random.PRNGKey(0))
    assert float(jnp.max(jnp.abs(out))) == 0 and bool(finite)
    out, _, _ = graddrop_direction(jnp.ones((1, 4)), jax.random.PRNGKey(0))
    np.testing.assert_allclose(out, 1)  # m = 1: P = 1, every positive entry kept


# ------------------------------------------------------------------------- FairGrad


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0, 5.0])
def test_fairgrad_matches_torchjd(alpha):
    for seed in range(3):
        j = jac(60 + seed, 4, 6)
        c = j @ j.T
        res = fairgrad_weights(jnp.asarray(c), alpha)
        theirs = agg.FairGradWeighting(alpha)(torch.tensor(c)).numpy()
        np.testing.assert_allclose(res.weights, theirs, rtol=1e-7)
        assert bool(res.converged)
        if alpha > 0:  # the defining equations, directly
            w = np.asarray(res.weights)
            np.testing.assert_allclose(c @ w, w ** (-1 / alpha), rtol=1e-8)


def test_fairgrad_alpha1_is_nash_and_float32_vmap():
    j = jac(70, 3, 5)
    c = jnp.asarray(j @ j.T)
    np.testing.assert_allclose(
        fairgrad_weights(c, 1.0).weights, nash_mtl_weights(c).weights, rtol=1e-9
    )
    grams = jnp.asarray(np.stack([jac(s, 4, 6) @ jac(s, 4, 6).T for s in range(5)]))
    batched = jax.vmap(lambda g: fairgrad_weights(g, 2.0))(grams)
    for k in range(5):
        np.testing.assert_allclose(batched.weights[k], fairgrad_weights(grams[k], 2.0).weights, rtol=1e-10)
    r32 = fairgrad_weights(grams[0].astype(jnp.float32), 2.0)
    assert r32.weights.dtype == jnp.float32 and bool(r32.converged)
    np.testing.assert_allclose(r32.weights, batched.weights[0], rtol=2e-3)
    # bad inputs: zero Gramian → uniform, DEGENERATE; NaN → NONFINITE_INPUT; opposite
    # gradients (no root for α ≥ 1) → finite, not converged, MAX_ITER.
    res = fairgrad_weights(jnp.zeros((4, 4)), 2.0)
    assert int(res.status) == Status.DEGENERATE and np.allclose(res.weights, 1 / 4)
    res = fairgrad_weights(jnp.full((4, 4), jnp.nan), 2.0)
    assert int(res.status) == Status.NONFINITE_INPUT and np.all(np.isfinite(res.weights))
    g = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    res = fairgrad_weights(jnp.asarray(g @ g.T), 2.0)
    assert np.all(np.isfinite(res.weights)) and not bool(res.converged)
    assert int(res.status) == Status.MAX_ITER
    assert float(fairgrad_weights(jnp.full((1, 1), 4.0), 2.0).weights[0]) == pytest.approx(
        1.0  # one task: weight 1 (the update is the gradient)
    )


# ------------------------------------------------------ transforms, jit, vmap, m = 1

GRAMIAN_METHODS = {
    "krum": lambda: jp.weighting.krum(1),
    "sum": lambda: jp.weighting.sum(),
    "random": lambda: jp.weighting.random(0),
    "config": lambda: jp.weighting.config(),
    "gradvac": lambda: jp.weighting.gradvac(0),
    "fairgrad": lambda: jp.weighting.fairgrad(2.0),
}


@pytest.mark.parametrize("name", sorted(GRAMIAN_METHODS))
def test_vmap_jit_float32_and_m1(name):
    w = GRAMIAN_METHODS[name]()
    js = np.stack([jac(s, 4, 6) for s in range(3)])
    grams = jnp.asarray(np.einsum("kin,kjn->kij", js, js))
    st = w.init(4, jnp.float64)
    batched, _ = jax.vmap(lambda g: w.update(g, st))(grams)
    single = jnp.stack([jax.jit(w.update)(g, st)[0] for g in grams])
    np.testing.assert_allclose(batched, single, rtol=1e-10, atol=1e-12)
    st32 = w.init(4, jnp.float32)
    w32, s32 = w.update(grams[0].astype(jnp.float32), st32)
    assert w32.dtype == jnp.float32 and np.all(np.isfinite(w32))
    if name != "random":  # random: float32 draws differ from float64 draws of a key
        np.testing.assert_allclose(w32, batched[0], rtol=5e-3, atol=1e-4)
    assert s32.status.dtype == jnp.int32
    # m = 1: weight 1 (every method, FairGrad included) and finite
    w1, _ = w.update(jnp.ones((1, 1)), w.init(1))
    assert float(w1[0]) == pytest.approx(1.0)
    # zero gradients and NaN: finite
    for bad in (jnp.zeros((4, 4)), jnp.full((4, 4), jnp.nan)):
        wb, sb = w.update(bad, st)
        assert np.all(np.isfinite(wb)), (name, wb)


@pytest.mark.parametrize("name", ["krum", "config", "fairgrad", "gradvac", "sum"])
def test_shorthand_transform_equals_combine(name):
    kwargs = {"krum": (1,), "fairgrad": (2.0,)}.get(name, ())
    tx = getattr(jp, name)(*kwargs, num_tasks=5)
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    j = jac(80, 5, 10)
    tree = {"a": jnp.asarray(j[:, :6].reshape(5, 2, 3)), "b": jnp.asarray(j[:, 6:])}
    state = tx.init(params)
    d, state = tx.update(tree, state, params)
    expected = upd(j, state.weights)
    got = np.concatenate([np.ravel(d["a"]), d["b"]])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    chain = optax.chain(tx, optax.sgd(0.1))
    cs = chain.init(params)
    u, cs = jax.jit(chain.update)(tree, cs, params)
    assert np.all(np.isfinite(np.asarray(u["a"])))


# ------------------------------------------------------------------ scalarizations
# Oracles: pymoo's decomposition functions (PBI, AASF, Tchebicheff) and numpy formulas
# of COSMOS and the p-norm, differentiated by central finite differences: the weights
# are ∂S/∂l.

from jaxpareto.weighting.scalarization import (  # noqa: E402
    aasf_weights,
    aug_chebyshev_weights,
    cosmos_weights,
    pbi_weights,
    pnorm_weights,
)


def _pymoo(name, **kw):
    import importlib

    mod = importlib.import_module(f"pymoo.decomposition.{name.lower()}")
    return getattr(mod, name)(**kw)


def _values(kind, l, r, z):
    f = l[None]
    if kind == "pbi":
        return float(np.ravel(_pymoo("PBI", theta=5.0).do(f, r[None], utopian_point=z))[0])
    if kind == "aasf":
        return float(np.ravel(_pymoo("AASF", rho=1e-2).do(f, r[None], utopian_point=z))[0])
    if kind == "aug_chebyshev":
        t = float(np.ravel(_pymoo("Tchebicheff").do(f, r[None], utopian_point=z))[0])
        return t + 1e-2 * np.abs(l - z).sum()
    if kind == "cosmos":
        return float(r @ l - 2.0 * (r @ l) / np.linalg.norm(r) / np.linalg.norm(l))
    if kind == "pnorm":
        return float(np.linalg.norm(r * (l - z), 3.0))
    raise AssertionError(kind)


_SCAL = {
    "pbi": lambda l, r, z: pbi_weights(l, r, z, penalty=5.0),
    "aasf": lambda l, r, z: aasf_weights(l, r, z, rho=1e-2),
    "aug_chebyshev": lambda l, r, z: aug_chebyshev_weights(l, r, z, rho=1e-2),
    "cosmos": lambda l, r, z: cosmos_weights(l, r, penalty=2.0),
    "pnorm": lambda l, r, z: pnorm_weights(l, r, z, p=3.0),
}


@pytest.mark.parametrize("kind", sorted(_SCAL))
def test_scalarization_weights_are_finite_difference_gradients(kind):
    rng = np.random.default_rng(5)
    fn = jax.jit(_SCAL[kind])
    for _ in range(5):
        l = rng.uniform(0.3, 2.0, 3)
        r = rng.uniform(0.2, 1.5, 3)
        z = rng.uniform(-0.2, 0.1, 3)
        w = np.asarray(fn(jnp.asarray(l), jnp.asarray(r), jnp.asarray(z)))
        h = 1e-6
        fd = np.array([
            (_values(kind, l + h * e, r, z) - _values(kind, l - h * e, r, z)) / (2 * h)
            for e in np.eye(3)
        ])
        np.testing.assert_allclose(w, fd, rtol=1e-6, atol=1e-7)


def test_scalarization_kinks_bad_inputs_and_float32():
    r = jnp.array([1.0, 2.0])
    on_ray = jnp.array([2.0, 4.0])  # PBI: d2 = 0 -> subgradient r̂
    np.testing.assert_allclose(pbi_weights(on_ray, r), r / jnp.linalg.norm(r), rtol=1e-12)
    np.testing.assert_allclose(cosmos_weights(jnp.zeros(2), r), r)  # l = 0
    np.testing.assert_allclose(pnorm_weights(jnp.zeros(2), r), 0)  # S = 0
    np.testing.assert_allclose(aug_chebyshev_weights(jnp.zeros(2), r), 0)  # sgn(0) = 0
    for fn in _SCAL.values():
        w = fn(jnp.array([jnp.nan, 1.0]), r, jnp.zeros(2))
        np.testing.assert_allclose(w, r)  # non-finite losses: the linear weights
        w32 = fn(jnp.array([0.5, 1.5], jnp.float32), r.astype(jnp.float32), jnp.zeros(2, jnp.float32))
        w64 = fn(jnp.array([0.5, 1.5]), r, jnp.zeros(2))
        assert w32.dtype == jnp.float32
        np.testing.assert_allclose(w32, w64, rtol=1e-5, atol=1e-6)
        # m = 1 works
        assert np.all(np.isfinite(fn(jnp.array([0.7]), jnp.array([1.0]), jnp.zeros(1))))
    with pytest.raises(ValueError, match="preference"):
        pbi_weights(jnp.ones(2), jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="`p`"):
        pnorm_weights(jnp.ones(2), p=0.5)
    with pytest.raises(ValueError, match="losses"):
        w = jp.weighting.pbi()
        w.update(jnp.eye(2), w.init(2))


def test_scalarization_transform_is_the_gradient_of_s_and_hypernetwork_rule():
    # jp.pbi over a Jacobian: d = Σ_i (∂S/∂l_i) ∇l_i = ∇_θ S(l(θ)) (chain rule, autodiff).
    a = jnp.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8]])

    def losses_fn(theta):
        return jnp.sum((a - theta) ** 2, axis=1)

    theta = jnp.array([0.2, -0.1, 0.4])
    r = jnp.array([0.7, 1.3])
    losses, jac_ = jp.value_and_jacobian(losses_fn)(theta)
    tx = jp.pbi(r)
    d, _ = tx.update(jac_, tx.init(theta), theta, losses=losses)

    def s(th):
        l = losses_fn(th)
        rh = r / jnp.linalg.norm(r)
        d1 = l @ rh
        return d1 + 5.0 * jnp.linalg.norm(l - d1 * rh)

    np.testing.assert_allclose(d, jax.grad(s)(theta), rtol=1e-10)
    # Hypernetwork: rule="pbi" (one backward pass) = rule=jp.weighting.pbi() (Jacobian path).
    hn = jp.hypernetwork
    target = {"w": jnp.zeros(3)}
    hp = hn.init(jax.random.PRNGKey(0), target, num_tasks=2, hidden=(4,))

    def loss_fn(p):
        return losses_fn(p["w"])

    opt = optax.sgd(0.1)
    key = jax.random.PRNGKey(1)
    out = []
    for rule in ("pbi", jp.weighting.pbi()):
        step = hn.train_step(loss_fn, opt, rule=rule, num_preferences=3)
        new, _, info = step(hp, opt.init(hp), key)
        out.append(new)
    for x, y in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(out[1])):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


def test_config_linear_under_task_scaling_full_rank():
    # Positive task factors c leave the unit vectors unchanged; the length is linear in c.
    rng = np.random.default_rng(12)
    j = jac(13, 4, 7)
    c1, c2 = rng.uniform(0.2, 3, 4), rng.uniform(0.2, 3, 4)
    a, b = 0.7, 1.9

    def d(c):
        jc = j * c[:, None]
        return upd(jc, config_weights(jnp.asarray(jc @ jc.T)).weights)

    np.testing.assert_allclose(d(a * c1 + b * c2), a * d(c1) + b * d(c2), rtol=1e-9)


def test_jacobian_weightings_permutation_and_scale():
    # TrimmedMean and GradDrop (fixed draws): relabelling the tasks leaves the update
    # unchanged; J → sJ scales it by s (scale degree 0).
    j = jac(14, 5, 8)
    perm = np.array([3, 0, 4, 1, 2])
    u = jnp.asarray(np.random.default_rng(1).uniform(size=8))
    for fn in (
        lambda x: trimmed_mean_direction(jnp.asarray(x), 1)[0],
        lambda x: graddrop_direction(jnp.asarray(x), uniforms=u)[0],
    ):
        np.testing.assert_allclose(fn(j[perm]), fn(j), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(fn(3.5 * j), 3.5 * np.asarray(fn(j)), rtol=1e-12)
    # MoCo (one step from init): permutation invariant, not scale free.
    mw = jp.weighting.moco(gamma=0.5)
    mo = lambda x: np.asarray(mw.update(jnp.asarray(x), mw.init(5, jnp.float64, params=jnp.zeros(8)))[0])  # noqa: E731
    np.testing.assert_allclose(mo(j[perm]), mo(j), rtol=1e-12, atol=1e-14)
    small = 0.02 * j  # inside the simplex (a saturated step lands on the same vertex)
    assert np.max(np.abs(mo(3.5 * small) - 3.5 * mo(small))) > 1e-3
    # Unclaimed: neither is non-conflicting / linear under task scaling, here.
    c = np.array([0.3, 2.0, 1.0, 0.5, 4.0])
    tm = lambda x: np.asarray(trimmed_mean_direction(jnp.asarray(x), 1)[0])  # noqa: E731
    assert np.max(np.abs(tm(j * (2 * c)[:, None]) - 2 * tm(j * c[:, None]))) < 1e-12
    assert np.max(np.abs(tm(j * (c + 1)[:, None]) - tm(j * c[:, None]) - tm(j))) > 1e-3
    outvoted = np.array([[1.0, 0.0], [0.9, -5.0], [1.1, 5.0], [1.0, 0.1], [-3.0, 0.0]])
    assert np.min(outvoted @ tm(outvoted)) < 0  # the trimmed (outvoted) task conflicts


# -------------------------------------------------------------------------- SDMGrad


def test_sdmgrad_matches_torchjd_over_steps():
    from jaxpareto.weighting.sdmgrad import project_simplex, sdmgrad_weights

    peer = agg.SDMGradWeighting(lambda_=0.3)
    it = None
    for step in range(3):
        j = jac(90 + step, 4, 6)
        c = j @ j.T
        res = sdmgrad_weights(jnp.asarray(c), it, lam=0.3)
        it = res.iterate
        np.testing.assert_allclose(res.weights, peer(torch.tensor(c)).numpy(), rtol=1e-10, atol=1e-12)
    # the stochastic form: a non-symmetric A = J_ξ J_ξ'ᵀ, with a preference
    a = jac(95, 3, 5) @ jac(96, 3, 5).T
    pref = np.array([0.2, 0.5, 0.3])
    peer = agg.SDMGradWeighting(lambda_=0.5, pref_vector=torch.tensor(pref))
    res = sdmgrad_weights(jnp.asarray(a), None, pref, lam=0.5)
    np.testing.assert_allclose(res.weights, peer(torch.tensor(a)).numpy(), rtol=1e-10, atol=1e-12)
    # the simplex projection against TorchJD's
    from torchjd.aggregation._utils.simplex import project_onto_simplex

    y = np.random.default_rng(3).standard_normal(6) * 2
    np.testing.assert_allclose(project_simplex(jnp.asarray(y)), project_onto_simplex(torch.tensor(y)).numpy(), atol=1e-14)
    # bad inputs: NaN keeps the iterate and flags; zero flags DEGENERATE
    res = sdmgrad_weights(jnp.full((3, 3), jnp.nan), jnp.array([0.2, 0.3, 0.5]))
    assert int(res.status) == Status.NONFINITE_INPUT
    np.testing.assert_allclose(res.iterate, [0.2, 0.3, 0.5])
    res = sdmgrad_weights(jnp.zeros((3, 3)))
    assert int(res.status) == Status.DEGENERATE and np.all(np.isfinite(res.weights))


# ------------------------------------------------------ Nash-MTL update_weights_every


def test_nash_update_weights_every_schedule_matches_torchjd():
    pytest.importorskip("cvxpy")
    k, steps = 3, 5
    js = [jac(100 + s, 3, 5) for s in range(steps)]
    w = jp.weighting.nash_mtl(warm_start=False, update_weights_every=k)
    st = w.init(3, jnp.float64)
    step = jax.jit(w.update)
    ours = []
    for j in js:
        ww, st = step(jnp.asarray(j @ j.T), st)
        ours.append(np.asarray(ww))
    # solves at steps 0 and 3 (the pure solver on that step's Gramian), reuse in between
    for s in range(steps):
        src = (s // k) * k
        expected = nash_mtl_weights(jnp.asarray(js[src] @ js[src].T)).weights
        np.testing.assert_allclose(ours[s], expected, rtol=1e-10)
    assert int(st.step) == steps
    # k = 1 is the default behaviour
    w1 = jp.weighting.nash_mtl(warm_start=False)
    np.testing.assert_allclose(w1.update(jnp.asarray(js[1] @ js[1].T), w1.init(3, jnp.float64))[0],
                               nash_mtl_weights(jnp.asarray(js[1] @ js[1].T)).weights, rtol=1e-12)
    with pytest.raises(ValueError, match="update_weights_every"):
        jp.weighting.nash_mtl(update_weights_every=0)
    # TorchJD's NashMTL (authors' schedule) re-solves on the same steps
    pytest.importorskip("ecos")  # its cvxpy solver (bench extra)
    peer = agg.NashMTL(n_tasks=3, max_norm=0.0, update_weights_every=k).weighting
    theirs = [peer(torch.tensor(j)).numpy() for j in js]
    changed = lambda ws: [not np.allclose(ws[s], ws[s - 1]) for s in range(1, steps)]  # noqa: E731
    assert changed(ours) == changed(theirs) == [False, False, True, False]
    # and its solutions are the same bargaining weights (up to its CCP tolerance)
    np.testing.assert_allclose(theirs[0], ours[0], rtol=2e-2)


# ----------------------------------------------------------------------------- MoCo


def _moco_numpy(jacs, beta=0.5, gamma=0.1, rho=0.0):
    """Fernando et al. 2023, Algorithm 1, naively (Y starts at the first Jacobian)."""
    m = jacs[0].shape[0]
    lam = np.full(m, 1.0 / m)
    y = None
    out = []
    for g in jacs:
        y = g.copy() if y is None else y - beta * (y - g)
        step = lam - gamma * (y @ y.T + rho * np.eye(m)) @ lam
        # Euclidean projection onto the simplex by bisection on the threshold
        lo, hi = step.min() - 1, step.max()
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if np.maximum(step - mid, 0).sum() > 1 else (lo, mid)
        lam = np.maximum(step - 0.5 * (lo + hi), 0)
        out.append((y.T @ lam, lam.copy()))
    return out


def test_moco_matches_numpy_algorithm_and_transform():
    jacs = [jac(110 + s, 3, 6) for s in range(4)]
    expected = _moco_numpy(jacs, beta=0.3, gamma=0.05, rho=0.1)
    tx = jp.moco(num_tasks=3, beta=0.3, gamma=0.05, rho=0.1)
    params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    st = tx.init(params)
    step = jax.jit(tx.update)
    for j, (d_ref, lam_ref) in zip(jacs, expected):
        tree = {"a": jnp.asarray(j[:, :4].reshape(3, 2, 2)), "b": jnp.asarray(j[:, 4:])}
        d, st = step(tree, st)
        got = np.concatenate([np.ravel(d["a"]), d["b"]])
        np.testing.assert_allclose(got, d_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(st.weights, lam_ref, atol=1e-12)
    # NaN Jacobian: skipped, the tracked gradients are unchanged
    tracked = st.inner.tracked
    bad = {"a": jnp.full((3, 2, 2), jnp.nan), "b": jnp.zeros((3, 2))}
    d, st2 = step(bad, st)
    assert int(st2.skipped) == 1 and float(jnp.max(jnp.abs(d["b"]))) == 0
    for x, y in zip(jax.tree_util.tree_leaves(tracked), jax.tree_util.tree_leaves(st2.inner.tracked)):
        np.testing.assert_array_equal(x, y)
    # the pure weighting: NaN → flag, m = 1 → the (tracked) gradient
    w = jp.weighting.moco()
    s0 = w.init(1, jnp.float64, params=jnp.zeros(3))
    d1, s1 = w.update(jnp.ones((1, 3)), s0)
    np.testing.assert_allclose(d1, 1.0)
    _, s2 = w.update(jnp.full((1, 3), jnp.nan), s1)
    assert int(s2.status) == Status.NONFINITE_INPUT
    with pytest.raises(ValueError, match="params"):
        w.init(2)
