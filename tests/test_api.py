"""API fit: optax wrappers (inject_hyperparams, apply_if_finite, reduce_on_plateau,
gradient accumulation), the transform shorthands, equinox / flax / orbax.

Each case is one that failed before this API round; the oracle is the plain formulation
(the same mathematics written out by hand with jax.jacrev and the weighting solver).
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpareto as jp

R = jnp.array([1.0, 2.0])


def _problem():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": jax.random.normal(k[0], (4, 3)) / 2, "b": jnp.zeros(3)}
    x = jax.random.normal(k[1], (16, 4))
    y = jax.random.normal(k[2], (16, 2))

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.stack([jnp.mean((h[:, 0] - y[:, 0]) ** 2),
                          jnp.mean((h[:, 1] + h[:, 2] - y[:, 1]) ** 2)])

    return params, x, y, loss_fn


def _run(tx, steps=3, nan_at=None, **update_kw):
    params, x, y, loss_fn = _problem()
    state = tx.init(params)

    @jax.jit
    def step(p, s, x):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, x, y)
        u, s = tx.update(jac, s, p, losses=losses, value=jnp.sum(losses), **update_kw)
        return optax.apply_updates(p, u), s

    for i in range(steps):
        params, state = step(params, state, x.at[0, 0].set(jnp.nan) if i == nan_at else x)
    return params, state


def test_inject_hyperparams_of_a_shorthand():
    tx = optax.inject_hyperparams(jp.epo)(preference=R)
    params, state = _run(tx)
    want, _ = _run(jp.epo(R))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(state.hyperparams["preference"], R)
    # The preference is a run-time hyperparameter: changing it in the state changes the step.
    params, x, y, loss_fn = _problem()
    st = tx.init(params)
    st2 = st._replace(hyperparams={**st.hyperparams, "preference": jnp.array([3.0, 1.0])})
    losses, jac = jp.value_and_jacobian(loss_fn)(params, x, y)
    u1, _ = tx.update(jac, st, params, losses=losses)
    u2, _ = tx.update(jac, st2, params, losses=losses)
    assert not np.allclose(u1["w"], u2["w"])


def test_apply_if_finite_after_the_aggregator_skips_bad_steps_and_keeps_adam_state():
    adam = optax.adam(0.05)
    tx = optax.chain(jp.epo(R, nonfinite="nan"), optax.apply_if_finite(adam, 3))
    params_bad, state_bad = _run(tx, steps=3, nan_at=1)
    # Oracle: the same two good steps without the bad one in between.
    params_ok, state_ok = _run(optax.chain(jp.epo(R), adam), steps=2)
    for a, b in zip(jax.tree_util.tree_leaves(params_bad), jax.tree_util.tree_leaves(params_ok)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    guard = state_bad[1]
    assert int(guard.total_notfinite) == 1 and int(guard.notfinite_count) == 0
    assert int(state_bad[0].skipped) == 1


def test_default_guard_returns_zeros_and_counts():
    tx = optax.chain(jp.epo(R), optax.sgd(0.1))
    params0, *_ = _problem()
    params, state = _run(tx, steps=1, nan_at=0)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params0)):
        np.testing.assert_array_equal(a, b)
    assert int(state[0].skipped) == 1


def test_reduce_on_plateau_reads_the_scalar_value_and_the_aggregator_the_losses():
    tx = optax.chain(jp.epo(R), optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=1))
    params, state = _run(tx, steps=4)
    assert np.all(np.isfinite(jax.flatten_util.ravel_pytree(params)[0]))
    assert np.isfinite(float(state[2].best_value))


def test_vector_value_still_works_with_a_deprecation_warning():
    params, x, y, loss_fn = _problem()
    tx = jp.epo(R)
    st = tx.init(params)
    losses, jac = jp.value_and_jacobian(loss_fn)(params, x, y)
    with pytest.warns(DeprecationWarning, match="losses="):
        u_old, _ = tx.update(jac, st, params, value=losses)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u_new, _ = tx.update(jac, st, params, losses=losses)
    np.testing.assert_array_equal(u_old["w"], u_new["w"])


def test_accumulate_jacobian_equals_one_step_on_the_whole_batch():
    params, x, y, loss_fn = _problem()
    k = 4
    inner = optax.chain(jp.epo(R), optax.sgd(0.1))
    tx = jp.accumulate_jacobian(inner, k, num_tasks=2)
    state = tx.init(params)
    p = params
    @jax.jit
    def micro(p, s, xb, yb):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, xb, yb)
        return tx.update(jac, s, p, losses=losses)

    for j in range(k):
        u, state = micro(p, state, x[4 * j:4 * j + 4], y[4 * j:4 * j + 4])
        if j < k - 1:
            assert all(np.all(np.asarray(v) == 0) for v in jax.tree_util.tree_leaves(u))
    # Oracle: one step of the inner chain on the whole batch (mean loss of 4 equal parts).
    losses, jac = jp.value_and_jacobian(loss_fn)(params, x, y)
    want, _ = inner.update(jac, inner.init(params), params, losses=losses)
    for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    assert int(state.mini_step) == 0


def test_optax_multisteps_error_points_to_the_accumulator():
    params, x, y, loss_fn = _problem()
    tx = optax.MultiSteps(optax.chain(jp.epo(R), optax.adam(1e-3)), 4)
    st = tx.init(params)
    losses, jac = jp.value_and_jacobian(loss_fn)(params, x, y)
    with pytest.raises(Exception):
        tx.update(jac, st, params, losses=losses)


SHORTHANDS = ["mgda", "epo", "linear", "chebyshev", "smooth_chebyshev", "upgrad", "dualproj",
              "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl"]


@pytest.mark.parametrize("name", SHORTHANDS)
def test_every_shorthand_takes_num_tasks_and_matches_aggregate(name):
    shorthand = getattr(jp, name)
    sig = inspect.signature(shorthand)
    assert {"num_tasks", "scale", "dtype", "nonfinite"} <= set(sig.parameters)
    params, x, y, loss_fn = _problem()
    tx = shorthand(num_tasks=2)
    st = tx.init(params)
    losses, jac = jp.value_and_jacobian(loss_fn)(params, x, y)
    pref = R if name in ("epo",) else None
    u, st = jax.jit(lambda j, s, l: tx.update(j, s, params, losses=l, preference=pref))(jac, st, losses)
    want, _ = jp.aggregate(getattr(jp.weighting, name)(), num_tasks=2).update(
        jac, jp.aggregate(getattr(jp.weighting, name)(), num_tasks=2).init(params), params,
        losses=losses, preference=pref)
    np.testing.assert_allclose(u["w"], want["w"], rtol=1e-12, atol=1e-15)
    assert name in shorthand.__doc__


# --------------------------------------------------------------------------- equinox


def test_equinox_module_through_filter_value_and_jacobian():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 3))

    def losses(m, x):
        out = jax.vmap(m)(x)
        return jnp.mean(out ** 2, axis=0)

    # The plain function names the problem and the remedy.
    with pytest.raises(TypeError, match="filter_value_and_jacobian"):
        jp.value_and_jacobian(losses)(model, x)
    l, jac = eqx.filter_jit(jp.filter_value_and_jacobian(losses))(model, x)
    # Oracle: equinox's own filtered Jacobian, row by row.
    for i in range(2):
        g = eqx.filter_grad(lambda m: losses(m, x)[i])(model)
        for a, b in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(g)):
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-14)
    tx = optax.chain(jp.upgrad(num_tasks=2), optax.sgd(0.1))
    st = tx.init(eqx.filter(model, eqx.is_inexact_array))
    u, st = tx.update(jac, st, losses=l)
    new = eqx.apply_updates(model, u)
    assert np.all(np.asarray(losses(new, x)) <= np.asarray(l) + 1e-12)


# --------------------------------------------------------------------------- flax


def test_flax_nnx_state_and_nnx_optimizer_free_loop():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    net = Net(nnx.Rngs(0))
    graphdef, state = nnx.split(net, nnx.Param)
    x = jax.random.normal(jax.random.PRNGKey(3), (10, 3))

    def losses(st, x):
        out = nnx.merge(graphdef, st)(x)
        return jnp.mean((out - 1.0) ** 2, axis=0)

    tx = optax.chain(jp.mgda(num_tasks=2), optax.sgd(0.2))
    opt_state = tx.init(state)

    @jax.jit
    def step(st, o):
        l, jac = jp.filter_value_and_jacobian(losses)(st, x)
        u, o = tx.update(jac, o, st, losses=l)
        return optax.apply_updates(st, u), o, l

    first = None
    for _ in range(20):
        state, opt_state, l = step(state, opt_state)
        first = l if first is None else first
    assert np.all(np.asarray(l) < np.asarray(first))


def test_flax_linen_batchnorm_statistics_come_out_of_the_mgda_ub_encoder():
    nn = pytest.importorskip("flax.linen")

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dense(6)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return jnp.tanh(x)

    enc = Encoder()
    x = jax.random.normal(jax.random.PRNGKey(5), (12, 4))
    y = jax.random.normal(jax.random.PRNGKey(6), (12, 2))
    variables = enc.init(jax.random.PRNGKey(7), x, train=False)
    params = {"enc": variables["params"], "heads": jnp.ones((6, 2)) * 0.1}
    stats = variables["batch_stats"]

    def encode(p, batch):
        z, upd = enc.apply({"params": p["enc"], "batch_stats": stats}, batch[0], train=True,
                           mutable=["batch_stats"])
        return z, upd["batch_stats"]

    def heads(p, z, batch):
        return jnp.mean((z @ p["heads"] - batch[1]) ** 2, axis=0)

    weighting = jp.weighting.mgda()
    step = jax.jit(jp.mtl_value_and_grad(encode, heads, weighting, has_aux=True))
    ((losses, new_stats), grads), _ = step(params, (x, y), weighting.init(2))
    # Oracle: the running mean after one training batch, by hand.
    h = x @ variables["params"]["Dense_0"]["kernel"] + variables["params"]["Dense_0"]["bias"]
    want_mean = 0.99 * stats["BatchNorm_0"]["mean"] + 0.01 * h.mean(axis=0)
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"], want_mean, rtol=1e-6)
    assert losses.shape == (2,)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)


# --------------------------------------------------------------------------- orbax


def test_orbax_checkpoint_manager_resumes_bitwise(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = optax.chain(jp.epo(R), optax.adam(0.05))
    params, x, y, loss_fn = _problem()
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        losses, jac = jp.value_and_jacobian(loss_fn)(p, x, y)
        u, s = tx.update(jac, s, p, losses=losses)
        return optax.apply_updates(p, u), s

    for _ in range(3):
        params, state = step(params, state)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(3, args=ocp.args.StandardSave({"params": params, "opt": state}))
        mngr.wait_until_finished()
    cont_p, cont_s = params, state
    for _ in range(3):
        cont_p, cont_s = step(cont_p, cont_s)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        target = {"params": params, "opt": tx.init(params)}
        restored = mngr.restore(3, args=ocp.args.StandardRestore(target))
    rp, rs = restored["params"], restored["opt"]
    for _ in range(3):
        rp, rs = step(rp, rs)
    for a, b in zip(jax.tree_util.tree_leaves((rp, rs)), jax.tree_util.tree_leaves((cont_p, cont_s))):
        np.testing.assert_array_equal(a, b)
