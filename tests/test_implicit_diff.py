"""Implicit derivatives of the weightings (min-norm, EPO, UPGrad, DualProj) against
central finite differences in float64, on random non-degenerate instances (support /
basis unchanged by the perturbation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpareto.weighting.dualproj import dualproj_weights
from jaxpareto.weighting.epo import epo_weights
from jaxpareto.weighting.min_norm import min_norm_weights
from jaxpareto.weighting.upgrad import upgrad_weights

jax.config.update("jax_enable_x64", True)

H = 1e-6
K = 24


def sym(x):
    return x + np.swapaxes(x, -1, -2)


def directional(weights_fn, args, seed, dirs_mask=None):
    """AD vs central FD of ``c · weights_fn(*args)`` along one random direction per
    instance perturbing all arguments at once. ``args`` are batched ``[K, ...]``.

    Returns ``(ad, fd, w)``: ``[K]`` directional derivatives and the weights."""
    rng = np.random.default_rng(seed)
    k, m = args[0].shape[:2]
    cvec = rng.standard_normal((k, m))
    dirs = [rng.standard_normal(a.shape) for a in args]
    dirs[0] = sym(dirs[0]) * np.abs(args[0]).max(axis=(1, 2), keepdims=True)
    if dirs_mask is not None:
        dirs = [d * mk for d, mk in zip(dirs, dirs_mask)]

    def scalar(c, *a):
        return c @ weights_fn(*a)

    grads = jax.jit(jax.vmap(jax.grad(scalar, argnums=tuple(range(1, len(args) + 1)))))(
        cvec, *args)
    ad = sum(np.sum((np.asarray(g) * d).reshape(k, -1), axis=1) for g, d in zip(grads, dirs))
    fwd = jax.jit(jax.vmap(weights_fn))
    plus = np.asarray(fwd(*(a + H * d for a, d in zip(args, dirs))))
    minus = np.asarray(fwd(*(a - H * d for a, d in zip(args, dirs))))
    fd = np.sum(cvec * (plus - minus), axis=1) / (2 * H)
    return ad, fd, np.asarray(fwd(*args))


def random_grams(rng, k, m, n):
    j = rng.standard_normal((k, m, n)) + 0.5 * rng.standard_normal((k, 1, n))
    return j @ np.swapaxes(j, 1, 2)


# ---------------------------------------------------------------------------- min-norm


@pytest.mark.parametrize("normalization", ["none", "loss+"])
def test_min_norm_gradient_matches_finite_differences(normalization):
    rng = np.random.default_rng(1 if normalization == "none" else 2)
    m = 4
    grams = random_grams(rng, K, m, 6)
    losses = rng.uniform(0.5, 2.0, (K, m))

    def weights(g, l):
        return min_norm_weights(g, normalization=normalization, losses=l,
                                differentiable=True).weights

    ad, fd, w = directional(weights, (grams, losses), seed=3)
    # the derivative is that of the current support: skip instances where the
    # perturbation could change it (a weight or a KKT gap near zero)
    keep = []
    for i in range(K):
        gn = np.ones(m) if normalization == "none" else losses[i] * np.sqrt(np.diag(grams[i]))
        c = grams[i] / np.outer(gn, gn)
        gap = c @ w[i] - w[i] @ c @ w[i]
        off = w[i] <= 0
        keep.append(np.all(w[i][~off] > 1e-4) and np.all(gap[off] > 1e-4 * np.diag(c).max()))
    keep = np.array(keep)
    assert keep.sum() >= K // 2
    np.testing.assert_allclose(ad[keep], fd[keep], atol=1e-6 * max(1, np.abs(fd).max()))
    assert np.sum(np.abs(fd[keep]) > 1e-4) >= keep.sum() // 2  # not trivially zero


def test_min_norm_default_is_constant_and_option_is_checked():
    g = jnp.asarray(random_grams(np.random.default_rng(4), 1, 3, 5)[0])

    @jax.jit
    def both(g):  # default (constants) and differentiable, one compiled program
        return (jax.grad(lambda g: min_norm_weights(g).weights[0])(g),
                jax.grad(lambda g: min_norm_weights(g, differentiable=True).weights[0])(g))

    grad, grad_d = both(g)
    assert not bool(jnp.any(grad))  # default: weights are constants (MGDA)
    assert bool(jnp.any(grad_d != 0))
    # degenerate input: finite (zero) derivative
    _, grad_bad = both(jnp.full((3, 3), jnp.nan))
    assert bool(jnp.all(grad_bad == 0))
    with pytest.raises(TypeError, match="`differentiable`"):
        min_norm_weights(g, differentiable=1)


# -------------------------------------------------------------------------------- EPO


def test_epo_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    m = 3
    grams = random_grams(rng, K, m, 5)
    losses = rng.uniform(0.3, 2.0, (K, m))
    prefs = rng.uniform(0.5, 2.0, (K, m))

    def weights(g, l, r):
        return epo_weights(g, l, r, differentiable=True).weights

    ad, fd, w = directional(weights, (grams, losses, prefs), seed=6)
    res = jax.jit(jax.vmap(lambda g, l, r: epo_weights(g, l, r)))(grams, losses, prefs)
    ok = np.asarray(res.lp_status == 0) & ~np.asarray(res.fallback)
    # non-degenerate vertices only: no weight at the edge of changing sign
    ok &= np.array([np.all((w[i] == 0) | (w[i] > 1e-4)) for i in range(K)])
    assert ok.sum() >= K // 2
    np.testing.assert_allclose(ad[ok], fd[ok], atol=1e-6 * max(1, np.abs(fd).max()))
    assert np.sum(np.abs(fd[ok]) > 1e-4) >= 3  # vertices that move with the data


def test_epo_default_is_constant_and_fallback_is_constant():
    rng = np.random.default_rng(7)
    g = jnp.asarray(random_grams(rng, 1, 3, 5)[0])
    l, r = jnp.array([1.0, 2.0, 0.5]), jnp.array([1.0, 1.0, 2.0])

    @jax.jit
    def both(g):
        def f(diff):
            return lambda g: epo_weights(g, l, r, differentiable=diff).weights @ jnp.arange(3.0)
        return jax.grad(f(False))(g), jax.grad(f(True))(g)

    grad, _ = both(g)
    assert not bool(jnp.any(grad))
    _, grad_bad = both(jnp.full((3, 3), jnp.nan))  # fallback weights: constants
    assert bool(jnp.all(grad_bad == 0))
    with pytest.raises(TypeError, match="`differentiable`"):
        epo_weights(g, l, r, differentiable="yes")


# ------------------------------------------------------------------- UPGrad / DualProj


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_weightings_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(8)
    m = 4
    grams = random_grams(rng, K, m, 6)  # full rank: the projections are unique
    prefs = rng.uniform(0.2, 1.0, (K, m))
    fn = upgrad_weights if name == "upgrad" else dualproj_weights

    def weights(g, p):
        return fn(g, p).weights

    ad, fd, _ = directional(weights, (grams, prefs), seed=9)
    np.testing.assert_allclose(ad, fd, atol=1e-6 * max(1, np.abs(fd).max()))
    assert np.sum(np.abs(fd) > 1e-4) >= K // 4
