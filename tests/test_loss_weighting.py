"""Loss-based weightings (jp.loss_weighting) against LibMTL 1.1.5 and naive numpy.

Oracles: LibMTL's UW, DWA, RLW, GLS, IMTL (its loss part) and GradNorm run on the same
losses; the weights compared are the *effective* ones, ``∂(LibMTL's loss)/∂l_i`` from
torch autograd (LibMTL's GLS returns ``l_i/(m Π l)`` as its weights, which is not what
its backward applies). RLW is compared in distribution (Kolmogorov–Smirnov). FAMO and
DB-MTL (not in LibMTL 1.1.5) are checked against the papers' algorithms written naively
in numpy over several steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpareto as jp
from _peers import libmtl_weighting, torch

LW = jp.loss_weighting
RNG = np.random.default_rng(0)


def _step(rule, state, losses, gram=None):
    """One jitted rule step (eager dispatch of the small ops is slower than a compile)."""
    gram = None if gram is None else jnp.asarray(gram)
    return jax.jit(rule.step)(state, jnp.asarray(losses), gram)


def _libmtl(name, m, **attrs):
    cls = libmtl_weighting(name)
    w = cls()
    w.task_num, w.device = m, "cpu"
    for k, v in attrs.items():
        setattr(w, k, v)
    w.init_param()
    return w


def _torch_losses(losses):
    t = torch()
    return t.tensor(np.asarray(losses, np.float64), requires_grad=True)


# ------------------------------------------------------------------ LibMTL oracles


def test_uncertainty_matches_libmtl():
    m = 3
    losses = RNG.uniform(0.2, 3.0, m)
    s0 = RNG.normal(size=m)
    ref = _libmtl("UW", m)
    ref.loss_scale.data = torch().tensor(s0)
    lt = _torch_losses(losses)
    ref.backward(lt)
    rule = LW.uncertainty(m, optimizer=optax.sgd(1.0))
    state = LW.UncertaintyState(jnp.asarray(s0), optax.sgd(1.0).init(jnp.asarray(s0)))
    w, new, _ = _step(rule, state, losses)
    np.testing.assert_allclose(w, lt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s0 - new.log_vars, ref.loss_scale.grad.numpy(), rtol=1e-12)
    # The params-resident objective has the same gradients.
    gl, gs = jax.grad(LW.uncertainty_loss, argnums=(0, 1))(jnp.asarray(losses), jnp.asarray(s0))
    np.testing.assert_allclose(gl, w, rtol=1e-12)
    np.testing.assert_allclose(gs, ref.loss_scale.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(jp.init_log_vars(m, -0.5), ref.loss_scale.detach().numpy() * 0 - 0.5)


def test_dwa_matches_libmtl_over_epochs():
    m, k, epochs, T = 3, 4, 5, 2.0
    per_step = RNG.uniform(0.5, 2.0, (epochs, k, m))
    rule = LW.dwa(m, temperature=T, steps_per_epoch=k)
    state = rule.init(jnp.float64)
    buffer = per_step.mean(axis=1).T  # [m, epochs], LibMTL's train_loss_buffer
    for e in range(epochs):
        ref = _libmtl("DWA", m, epoch=e, train_loss_buffer=buffer)
        for s in range(k):
            lt = _torch_losses(per_step[e, s])
            ref.backward(lt, T=T)
            w, state, _ = _step(rule, state, per_step[e, s])
            # LibMTL builds the loss ratio with torch.Tensor (float32): rtol 1e-6.
            np.testing.assert_allclose(w, lt.grad.numpy(), rtol=1e-6)
    assert int(state.epochs) == epochs


def test_rlw_matches_libmtl_in_distribution():
    from scipy import stats

    t = torch()
    m, n = 3, 3000
    t.manual_seed(0)
    ref = _libmtl("RLW", m)
    theirs = []
    for _ in range(n):
        lt = _torch_losses(np.ones(m))
        ref.backward(lt, dist="Normal")
        theirs.append(lt.grad.numpy().copy())
    theirs = np.array(theirs)
    rule = LW.rlw(m, seed=1)
    state = rule.init(jnp.float64)
    steps = jax.vmap(lambda i: rule.step(state._replace(step=i), jnp.ones(m), None)[0])
    ours = np.asarray(steps(jnp.arange(n)))
    np.testing.assert_allclose(ours.sum(1), 1.0, rtol=1e-12)
    for i in range(m):
        assert stats.ks_2samp(ours[:, i], theirs[:, i]).pvalue > 1e-3
    # Distinct steps draw distinct weights; the same step the same weights.
    assert len(np.unique(ours[:, 0])) == n
    np.testing.assert_allclose(ours[:5], np.asarray(steps(jnp.arange(5))), rtol=1e-14)


def test_gls_matches_the_gradient_of_libmtl_loss():
    m = 4
    losses = RNG.uniform(0.1, 5.0, m)
    ref = _libmtl("GLS", m)
    lt = _torch_losses(losses)
    returned = ref.backward(lt)
    w, _, clamped = _step(LW.gls(m), LW.gls(m).init(jnp.float64), losses)
    np.testing.assert_allclose(w, lt.grad.numpy(), rtol=1e-12)
    assert not bool(clamped)
    # LibMTL's returned "weights" are a different quantity (documented above).
    assert not np.allclose(returned, w)


def test_imtl_l_matches_libmtl_loss_transform():
    t = torch()
    m = 3
    losses = RNG.uniform(0.2, 3.0, m)
    s0 = RNG.normal(size=m)
    ref = _libmtl("IMTL", m)
    ref.loss_scale.data = t.tensor(s0)
    captured = {}

    def fake_get_grads(transformed, mode="backward"):
        captured["l"] = transformed
        return t.eye(m, dtype=t.float64)

    ref._get_grads = fake_get_grads
    ref.rep_grad = False
    ref._backward_new_grads = lambda *a, **k: None
    lt = _torch_losses(losses)
    ref.backward(lt)
    captured["l"].sum().backward()
    rule = LW.imtl_l(m, optimizer=optax.sgd(1.0))
    state = LW.ImtlLState(jnp.asarray(s0), optax.sgd(1.0).init(jnp.asarray(s0)))
    w, new, _ = _step(rule, state, losses)
    np.testing.assert_allclose(w, lt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s0 - new.scales, ref.loss_scale.grad.numpy(), rtol=1e-12)


def test_gradnorm_matches_libmtl_on_a_layer_gramian():
    t = torch()
    m, n, alpha = 3, 7, 1.5
    G = RNG.normal(size=(m, n)) * np.array([[0.5], [1.0], [3.0]])
    l0 = RNG.uniform(1.0, 2.0, m)
    losses = l0 * RNG.uniform(0.3, 1.0, m)
    logits0 = RNG.normal(size=m)
    ref = _libmtl("GradNorm", m, epoch=1, train_loss_buffer=l0[:, None])
    ref.loss_scale.data = t.tensor(logits0)
    ref.rep_grad = False
    ref._get_grads = lambda l, mode="backward": t.tensor(G)
    applied = {}
    ref._backward_new_grads = lambda w, grads=None, **k: applied.setdefault("w", w.numpy())
    theirs = ref.backward(_torch_losses(losses), alpha=alpha)
    rule = LW.gradnorm(m, alpha=alpha, optimizer=optax.sgd(1.0))
    state = LW.GradNormState(
        jnp.asarray(logits0), optax.sgd(1.0).init(jnp.asarray(logits0)), jnp.asarray(l0), True
    )
    w, new, _ = _step(rule, state, losses, G @ G.T)
    np.testing.assert_allclose(w, theirs, rtol=1e-12)
    np.testing.assert_allclose(w, applied["w"], rtol=1e-12)
    np.testing.assert_allclose(logits0 - new.logits, ref.loss_scale.grad.numpy(), rtol=1e-10)


def test_equal_matches_libmtl():
    lt = _torch_losses(RNG.uniform(size=3))
    _libmtl("EW", 3).backward(lt)
    w, _, _ = _step(LW.equal(3), LW.equal(3).init(jnp.float64), np.ones(3))
    np.testing.assert_array_equal(w, lt.grad.numpy())


# --------------------------------------------------------- naive numpy (FAMO, DB-MTL)

A = RNG.normal(size=(3, 5))
B = RNG.normal(size=(3, 5))


def _quad_losses(theta):
    """``l_i = ½‖A_i ⊙ θ − B_i‖² + 0.1``: positive losses with analytic gradients."""
    return 0.5 * jnp.sum((A * theta - B) ** 2, axis=1) + 0.1


def _np_losses_grads(theta):
    r = A * theta - B
    return 0.5 * (r**2).sum(1) + 0.1, A * r


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_famo_matches_paper_algorithm_1():
    lr, beta, gamma, eps, steps = 0.1, 0.5, 0.01, 1e-8, 12
    tx = optax.chain(
        jp.famo(3, optimizer=optax.chain(optax.add_decayed_weights(gamma), optax.sgd(beta))),
        optax.sgd(lr),
    )
    theta = jnp.zeros(5)
    state = tx.init(theta)

    @jax.jit
    def step(theta, state):
        lv = jp.loss_vjp(_quad_losses)(theta)
        u, state = tx.update(lv, state, theta)
        return optax.apply_updates(theta, u), state

    th, xi = np.zeros(5), np.zeros(3)
    for _ in range(steps):
        theta, state = step(theta, state)
        l, g = _np_losses_grads(th)
        z = _softmax(xi)
        d = l + eps
        c = (z / d).sum()
        w = z / (c * d)
        np.testing.assert_allclose(state[0].weights, w, rtol=1e-10)
        th = th - lr * (w @ g)
        l_new, _ = _np_losses_grads(th)
        delta = np.log(d) - np.log(l_new + eps)
        jac = np.diag(z) - np.outer(z, z)
        # Our logit update of this step runs at the start of the next one (lagged).
        np.testing.assert_allclose(state[0].inner.logits, xi, rtol=1e-10, atol=1e-12)
        xi = xi - beta * (jac.T @ delta + gamma * xi)
        np.testing.assert_allclose(theta, th, rtol=1e-10, atol=1e-12)
    assert np.ptp(w) > 1e-3  # the weights moved away from uniform


def test_db_mtl_matches_naive_numpy():
    beta, sigma, eps, lr = 0.9, 0.5, 1e-8, 0.05
    tx = optax.chain(jp.db_mtl(3, beta=beta, beta_sigma=sigma), optax.sgd(lr))
    theta = jnp.zeros(5)
    state = tx.init(theta)

    @jax.jit
    def step(theta, state):
        losses, jac = jp.value_and_jacobian(_quad_losses)(theta)
        u, state = tx.update(jac, state, theta, losses=losses)
        return optax.apply_updates(theta, u), state

    th, buf = np.zeros(5), np.zeros((3, 5))
    for t in range(1, 9):
        theta, state = step(theta, state)
        l, g = _np_losses_grads(th)
        g = g / (l + eps)[:, None]
        buf = g + beta / t**sigma * (buf - g)
        u = np.linalg.norm(buf, axis=1)
        alpha = u.max() / (u + eps)
        th = th - lr * (alpha @ buf)
        np.testing.assert_allclose(state[0].weights, alpha, rtol=1e-10)
        np.testing.assert_allclose(theta, th, rtol=1e-10, atol=1e-12)


# ------------------------------------------------ the two paths, dtypes, bad inputs

RULES = {
    "uncertainty": lambda m: LW.uncertainty(m),
    "imtl_l": lambda m: LW.imtl_l(m),
    "dwa": lambda m: LW.dwa(m),
    "rlw": lambda m: LW.rlw(m),
    "gls": lambda m: LW.gls(m),
    "famo": lambda m: LW.famo(m),
    "gradnorm": lambda m: LW.gradnorm(m),
}


def _run(rule, theta, steps, losses_fn=_quad_losses, path="vjp"):
    tx = optax.chain(jp.loss_weighted(rule), optax.sgd(0.05))
    state = tx.init(theta)

    def one(theta, state):
        gram = None
        if rule.needs_gram:
            gram = jp.gramian(jp.value_and_jacobian(losses_fn)(theta)[1])
        if path == "vjp":
            u, state = tx.update(jp.loss_vjp(losses_fn)(theta), state, theta, gram=gram)
        else:

            def obj(p):
                l = losses_fn(p)
                return jp.loss_objective(rule, state, l, gram), l

            g, l = jax.grad(obj, has_aux=True)(theta)
            u, state = tx.update(g, state, theta, losses=l, gram=gram)
        return optax.apply_updates(theta, u), state

    one = jax.jit(one)
    for _ in range(steps):
        theta, state = one(theta, state)
    return theta, state


@pytest.mark.parametrize("name", sorted(RULES))
def test_objective_path_equals_vjp_path_and_float32(name):
    rule = RULES[name](3)
    t1, s1 = _run(rule, jnp.zeros(5), 4, path="vjp")
    t2, s2 = _run(rule, jnp.zeros(5), 4, path="grad")
    np.testing.assert_allclose(t1, t2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s1[0].weights, s2[0].weights, rtol=1e-10)
    t3, s3 = _run(rule, jnp.zeros(5, jnp.float32), 4)
    assert t3.dtype == jnp.float32 and s3[0].weights.dtype == jnp.float32
    np.testing.assert_allclose(t3, t1, rtol=2e-4, atol=2e-5)
    assert int(s1[0].skipped) == 0


@pytest.mark.parametrize("name", sorted(RULES))
def test_nan_losses_skip_the_step(name):
    rule = RULES[name](3)
    theta0 = jnp.ones(5)
    _, good = _run(rule, theta0, 2)

    def bad(p):
        return _quad_losses(p).at[1].set(jnp.nan)

    tx = optax.chain(jp.loss_weighted(rule), optax.sgd(0.05))
    gram = jnp.eye(3) if rule.needs_gram else None
    u, st = jax.jit(lambda s: tx.update(jp.loss_vjp(bad)(theta0), s, theta0, gram=gram))(good)
    np.testing.assert_array_equal(u, 0.0)
    assert int(st[0].skipped) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, st[0].inner, good[0].inner)


@pytest.mark.parametrize("name", sorted(RULES))
def test_m1_and_zero_losses_are_finite(name):
    rule1 = RULES[name](1)
    t, s = _run(rule1, jnp.ones(5), 3, losses_fn=lambda p: _quad_losses(p)[:1])
    assert np.all(np.isfinite(t)) and int(s[0].skipped) == 0
    if name in ("dwa", "gls", "famo"):  # scale-free rules: one task has weight 1
        np.testing.assert_allclose(s[0].weights, [1.0], rtol=1e-12)
    rule = RULES[name](3)
    theta = jnp.asarray(B[0] / A[0])  # task 0 at its minimum: l_0 = 0 exactly
    zero0 = lambda p: _quad_losses(p) - jnp.array([0.1, 0.0, 0.0])  # noqa: E731
    t, s = _run(rule, theta, 3, losses_fn=zero0)
    assert np.all(np.isfinite(t)) and np.all(np.isfinite(s[0].weights))
    assert int(s[0].skipped) == 0
    if name == "gls":
        assert int(s[0].clamped) >= 1


def test_gradnorm_zero_gradients_and_missing_gram():
    rule = LW.gradnorm(2)
    w, new, _ = _step(rule, rule.init(jnp.float64), [1.0, 2.0], np.zeros((2, 2)))
    np.testing.assert_allclose(w, [1.0, 1.0])
    assert np.all(np.isfinite(new.logits))
    tx = jp.loss_weighted(rule)
    with pytest.raises(ValueError, match="gram"):
        tx.update(jp.loss_vjp(lambda p: _quad_losses(p)[:2])(jnp.ones(5)), tx.init(jnp.ones(5)))


def test_db_mtl_zero_gradients_and_nan():
    tx = jp.db_mtl(2)
    st = tx.init(jnp.ones(4))
    u, st = tx.update(jnp.zeros((2, 4)), st, losses=jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(u, 0.0)
    assert int(st.skipped) == 0 and np.all(np.isfinite(st.weights))
    u, st2 = tx.update(jnp.ones((2, 4)), st, losses=jnp.array([1.0, jnp.nan]))
    np.testing.assert_array_equal(u, 0.0)
    assert int(st2.skipped) == 1 and int(st2.step) == int(st.step)


def test_rule_steps_vmap():
    losses = jnp.asarray(RNG.uniform(0.1, 2.0, (6, 3)))
    rule = LW.famo(3)
    state = rule.init(jnp.float64)._replace(
        prev_losses=jnp.array([1.0, 2.0, 0.5]), has_prev=jnp.array(True)
    )
    batched = jax.jit(jax.vmap(lambda l: rule.step(state, l, None)[0]))(losses)
    one = jax.jit(lambda l: rule.step(state, l, None)[0])
    for i in range(6):
        np.testing.assert_allclose(batched[i], one(losses[i]), rtol=1e-12)


def test_validation_errors():
    with pytest.raises(ValueError):
        LW.famo(0)
    with pytest.raises(ValueError):
        LW.dwa(2, steps_per_epoch=0)
    tx = jp.famo(3)
    with pytest.raises(ValueError, match="losses"):
        tx.update(jnp.ones(5), tx.init(jnp.ones(5)))
    with pytest.raises(ValueError, match="shape"):
        tx.update(jnp.ones(5), tx.init(jnp.ones(5)), losses=jnp.ones(2))


def test_readme_snippet_runs_and_descends():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("## Loss-based weightings")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README-loss-based", "exec"), ns)
    first = np.asarray(ns["loss_fn"](jnp.zeros(2), ns["batch"]))
    assert np.all(np.asarray(ns["losses"]) < first)
    assert int(ns["state"][0].skipped) == 0
