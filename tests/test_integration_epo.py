"""End to end: EPO / PMTL / linear scalarization through the optax transforms.

The qualitative claims of EPO search (Mahapatra & Rajan 2020, §5.1) with numbers, on
the synthetic problem whose Pareto set and front are known analytically, and EPO on
DTLZ2 with m = 3 and 5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpareto as jp
from examples import epo_synthetic


@pytest.fixture(scope="module")
def synthetic():
    return epo_synthetic.run(num_preferences=3)


def _rows(result, method):
    return [row for row in result["rows"] if row["method"] == method]


@pytest.mark.parametrize("method", ["epo_easy", "epo_hard"])
def test_epo_reaches_every_ray_and_is_pareto_stationary(synthetic, method):
    rows = _rows(synthetic, method)
    assert len(rows) == 3
    for row in rows:
        assert row["steps"] <= 150
        assert row["ray_cosine"] >= 0.999, row
        assert row["stationarity"] <= 1e-3, row
        assert row["distance_to_pareto_set"] <= 1e-3, row


def test_linear_scalarization_cannot_reach_the_concave_part(synthetic):
    front = synthetic["front"]
    for row in _rows(synthetic, "linear_easy"):
        l1, l2 = row["losses"]
        # Pareto-optimal but at an end of the front: one loss ~0, the other ~1 - e^-4.
        assert min(l1, l2) < 1e-2, row
        assert row["ray_cosine"] < 0.75, row
        assert row["distance_to_pareto_set"] < 1e-3
    # The interior of the front (where the rays point) is never reached by LS.
    assert front[:, 0].min() < 1e-6 and front[:, 1].min() < 1e-6


def test_pmtl_reaches_the_pareto_set_in_its_sub_region(synthetic):
    prefs = synthetic["preferences"]
    for i, row in enumerate(_rows(synthetic, "pmtl_hard")):
        assert row["distance_to_pareto_set"] <= 1e-3, row
        np.testing.assert_allclose(row["preference"], prefs[i])
        # PMTL's guarantee (eq. 6): the loss vector lies in sub-region k, i.e. has the
        # largest inner product with u_k among the reference vectors u ∝ 1/r.
        u = 1.0 / prefs
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        assert np.argmax(u @ np.asarray(row["losses"])) == i, row


@pytest.mark.parametrize("m", [3, 5])
def test_epo_reaches_random_rays_on_dtlz2(m):
    problem = jp.problems.dtlz2(m)
    tx = optax.chain(jp.aggregate(jp.weighting.epo(), num_tasks=m), optax.adam(0.05))

    def run(theta0, r):
        def body(carry, _):
            theta, state = carry
            losses, jac = jp.value_and_jacobian(problem.loss_fn)(theta)
            updates, state = tx.update(jac, state, theta, losses=losses, preference=r)
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(body, (theta0, tx.init(theta0)), None, length=300)
        return theta

    key = jax.random.PRNGKey(m)
    prefs = jax.random.dirichlet(key, jnp.ones(m), (4,)) + 0.05
    theta0 = jax.vmap(problem.init_params)(jax.random.split(key, 4))
    theta = jax.jit(jax.vmap(run))(theta0, prefs)
    losses = jax.vmap(problem.loss_fn)(theta)
    cos = np.asarray(jax.vmap(jp.metrics.ray_cosine)(losses, prefs))
    assert np.all(cos >= 0.999), cos
    # On the front: ‖f‖ = 1 exactly on DTLZ2's Pareto set.
    np.testing.assert_allclose(np.linalg.norm(losses, axis=1), 1.0, atol=1e-3)
