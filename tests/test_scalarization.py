"""Linear and (smooth) Tchebycheff scalarization weights."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpareto.jacobian import combine, value_and_jacobian
from jaxpareto.weighting.scalarization import chebyshev, chebyshev_weights, linear, linear_weights


def _quad_losses(theta):
    centers = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]])
    return 0.5 * jnp.sum((theta[None, :] - centers) ** 2, axis=1) * jnp.array([1.0, 2.0, 3.0])


class LinearTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_direction_is_gradient_of_weighted_sum(self):
        theta = jnp.array([0.3, -0.2, 0.5])
        r = jnp.array([1.0, 2.0, 0.5])
        _, jac = value_and_jacobian(_quad_losses)(theta)
        w = self.variant(linear_weights)(r)
        expected = jax.grad(lambda t: jnp.dot(r, _quad_losses(t)))(theta) / jnp.sum(r)
        np.testing.assert_allclose(combine(jac, w), expected, rtol=1e-12)
        np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-14)

    def test_linear_weighting_runtime_preference_and_guard(self):
        wt = linear(jnp.array([1.0, 1.0, 2.0]))
        state = wt.init(3, jnp.float64)
        w, state = jax.jit(wt.update)(jnp.eye(3), state)
        np.testing.assert_allclose(w, [0.25, 0.25, 0.5])
        w, state = jax.jit(wt.update)(jnp.eye(3), state, preference=jnp.array([3.0, 1.0, 0.0 + 1.0]))
        np.testing.assert_allclose(w, [0.6, 0.2, 0.2])
        # A traced bad preference cannot raise: uniform weights and a flag.
        bad = jnp.array([1.0, jnp.nan, 1.0])
        w, state = jax.jit(lambda p: wt.update(jnp.eye(3), wt.init(3, jnp.float64), preference=p))(bad)
        np.testing.assert_allclose(w, np.full(3, 1 / 3))
        assert bool(state.invalid_preference)

    def test_linear_bad_static_inputs(self):
        with pytest.raises(ValueError, match="preference"):
            linear_weights(jnp.array([1.0, -1.0]))
        with pytest.raises(ValueError, match="preference"):
            linear_weights(jnp.array([1.0, jnp.inf]))
        with pytest.raises(ValueError, match="preference"):
            linear(jnp.ones((2, 2)))
        with pytest.raises(ValueError, match="shape"):
            linear(jnp.ones(3)).update(jnp.eye(3), linear().init(3), preference=jnp.ones(2))

    def test_vmap_over_preferences(self):
        prefs = jax.random.uniform(jax.random.PRNGKey(0), (16, 4), minval=0.1)
        w = jax.vmap(linear_weights)(prefs)
        np.testing.assert_allclose(w, prefs / prefs.sum(1, keepdims=True), rtol=1e-12)


class ChebyshevTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hard_chebyshev_picks_the_worst_weighted_gap(self):
        losses = jnp.array([1.0, 3.0, 2.0])
        r = jnp.array([2.0, 0.5, 1.0])  # gaps 2.0, 1.5, 2.0 -> first argmax
        w = self.variant(chebyshev_weights)(losses, r)
        np.testing.assert_array_equal(w, [1.0, 0.0, 0.0])
        w = self.variant(chebyshev_weights)(losses, r, jnp.array([0.0, 0.0, -1.0]))
        np.testing.assert_array_equal(w, [0.0, 0.0, 1.0])

    def test_smooth_chebyshev_matches_gradient_of_log_sum_exp(self):
        theta = jnp.array([0.1, 0.4, -0.3])
        r = jnp.array([1.0, 0.5, 2.0])
        mu = 0.3
        losses, jac = value_and_jacobian(_quad_losses)(theta)
        w = chebyshev_weights(losses, r, smoothing=mu)
        grad = jax.grad(lambda t: mu * jax.nn.logsumexp(r * _quad_losses(t) / mu))(theta)
        d = combine(jac, w)
        # Same direction as the smooth Tchebycheff gradient (weights are normalised).
        np.testing.assert_allclose(d / jnp.linalg.norm(d), grad / jnp.linalg.norm(grad), rtol=1e-10)
        # Small smoothing approaches the hard max.
        np.testing.assert_allclose(chebyshev_weights(losses, r, smoothing=1e-4),
                                   chebyshev_weights(losses, r), atol=1e-8)

    def test_nonfinite_losses_stay_finite_and_weighting_needs_losses(self):
        w = chebyshev_weights(jnp.array([jnp.nan, 1.0, jnp.inf]), jnp.ones(3), smoothing=0.1)
        assert np.all(np.isfinite(w))
        wt = chebyshev(jnp.ones(3))
        with pytest.raises(ValueError, match="losses"):
            wt.update(jnp.eye(3), wt.init(3))
        with pytest.raises(ValueError, match="smoothing"):
            chebyshev(jnp.ones(3), smoothing=0.0)
        w, st = jax.jit(wt.update)(jnp.eye(3), wt.init(3, jnp.float64), losses=jnp.array([1.0, 5.0, 2.0]))
        np.testing.assert_array_equal(w, [0.0, 1.0, 0.0])
        np.testing.assert_array_equal(st.weights, w)
