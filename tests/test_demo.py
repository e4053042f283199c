"""Tests of the demo (``examples/demo.py``, ``examples/multitask.py``).

Oracles: ``scipy.signal.correlate2d`` for the matmul convolution; the library's own
LeNet (``jp.models``, built on ``lax.conv_general_dilated`` and ``reduce_window``) for
the demo's fast LeNet, its Jacobian and the evaluator; hand-written SGD loops with
``jax.grad`` of the library LeNet for the batched (vmapped, scanned) trainer; a Python
loop over concretely built transforms for the traced-index / run-time-preference
batching of PMTL and EPO; brute force for ``chunk_length``. A tiny end-to-end run of
the demo pipeline checks finite outputs and the written PNG and JSON files.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import signal

import jaxpareto as jp
from examples import demo
from examples import multitask as mt


def _images(seed, n):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 36, 36)).astype(np.uint8)
    # Sparse ink like real digits, so ReLUs and max-pools see ties and zeros.
    images[rng.random(images.shape) < 0.6] = 0
    labels = rng.integers(0, 10, size=(n, 2)).astype(np.int32)
    return images, labels


# ------------------------------------------------------------------ fast LeNet


@pytest.mark.parametrize("shape", [(2, 12, 9, 1, 3, 4), (3, 7, 11, 3, 5, 2), (1, 14, 14, 10, 5, 20)])
def test_conv_valid_matches_scipy_correlation(shape):
    b, h, w, c, k, f = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((b, h, w, c))
    kern = rng.standard_normal((k, k, c, f))
    got = np.asarray(mt.conv_valid(jnp.asarray(x), jnp.asarray(kern)))
    want = np.zeros((b, h - k + 1, w - k + 1, f))
    for i in range(b):
        for o in range(f):
            for ci in range(c):
                want[i, :, :, o] += signal.correlate2d(x[i, :, :, ci], kern[:, :, ci, o], mode="valid")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _xla_conv_lenet_losses(params, images, labels):
    """The LeNet through XLA's convolution (the accelerator formulation)."""
    z = jp.models.lenet_encode(params, images, conv="xla")
    return jp.models.lenet_head_losses(params, z, labels)


@pytest.mark.parametrize("fast", ["examples", "library"])
def test_fast_lenet_equals_xla_conv_lenet_values_and_gradients(fast):
    """The matmul LeNet (the example's pinned one and jp.models' CPU default) against
    the lax.conv_general_dilated + reduce_window formulation."""
    fast_losses = mt.lenet_losses if fast == "examples" else jp.models.lenet_losses
    params = jp.models.lenet_init(jax.random.PRNGKey(3), dtype=jnp.float64)
    images, labels = _images(0, 6)
    weights = jnp.asarray([0.3, 1.7])  # a generic combination of the two task gradients

    def value_and_grad(loss_fn):
        def f(p):
            losses = loss_fn(p, images, labels)
            return jnp.dot(weights, losses), losses

        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (_, want_l), want_g = value_and_grad(_xla_conv_lenet_losses)
    (_, got_l), got_g = value_and_grad(fast_losses)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-12)
    for g, w in zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want_g)):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
    # float32 parameters stay float32 and agree to float32 accuracy.
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    l32 = fast_losses(p32, images, labels)
    assert l32.dtype == jnp.float32
    np.testing.assert_allclose(l32, want_l, rtol=1e-5)


def test_evaluator_matches_library_loss_and_accuracy():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = jax.vmap(lambda k: jp.models.lenet_init(k, dtype=jnp.float64))(keys)
    images, labels = _images(1, 23)
    # eval_batch 10 does not divide 23: the padded, masked path is exercised.
    losses, accs = mt.make_lenet_evaluator(eval_batch=10)(params, images, labels)
    want_losses = jax.jit(jax.vmap(jp.models.lenet_losses, (0, None, None)))(params, images, labels)
    want_accs = jax.jit(jax.vmap(jp.models.lenet_accuracy, (0, None, None)))(params, images, labels)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    np.testing.assert_allclose(accs, want_accs, rtol=1e-12)


# ------------------------------------------------------------------ trainer


@jax.jit
def _library_grad(params, x, y, w):
    return jax.grad(lambda p: jnp.dot(w, jp.models.lenet_losses(p, x, y)))(params)


def _manual_sgd(params, schedule, images, labels, lr, weights):
    """Oracle: plain Python SGD on the library LeNet, ``θ ← θ − lr ∇(wᵀ l)``."""
    for rows in schedule:
        g = _library_grad(params, images[rows], labels[rows], weights)
        params = jax.tree_util.tree_map(lambda a, b: a - lr * b, params, g)
    return params


def test_linear_and_single_task_trainers_match_manual_sgd():
    lr = 0.05
    images, labels = _images(2, 16)
    schedule = np.array([[0, 3, 5, 7], [1, 2, 9, 15]], np.int32)
    prefs = np.array([[0.8, 0.2], [0.1, 0.9]])
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    params0 = jax.vmap(lambda k: jp.models.lenet_init(k, dtype=jnp.float64))(keys)
    for name in ("linear", "single"):
        trainer = mt.make_trainer(mt.make_method(name, mt.lenet_losses, 2), optax.sgd(lr))
        state = trainer.init(params0, jnp.asarray(prefs), jnp.arange(2))
        state, loss_log, weight_log = mt.run_training(
            trainer, state, schedule, jnp.asarray(images), jnp.asarray(labels),
            jnp.asarray(prefs), jnp.arange(2), chunk=1)
        assert loss_log.shape == (2, 2, 2) and np.all(np.isfinite(loss_log))
        for k in range(2):
            w = prefs[k] / prefs[k].sum() if name == "linear" else np.eye(2)[k]
            np.testing.assert_allclose(weight_log[-1, k], w, rtol=1e-12)
            want = _manual_sgd(jax.tree_util.tree_map(lambda a: a[k], params0), schedule,
                               images, labels, lr, jnp.asarray(w))
            got = jax.tree_util.tree_map(lambda a: a[k], state.params)
            for g, v in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(g, v, rtol=1e-9, atol=1e-12)
        if name == "single":
            # The head of the task a single-task model ignores never moves.
            np.testing.assert_array_equal(state.params["heads"]["w"][0, 1], params0["heads"]["w"][0, 1])
            np.testing.assert_array_equal(state.params["heads"]["w"][1, 0], params0["heads"]["w"][1, 0])


def _mlp_loss(params, x, y):
    return jp.models.river_losses(params, x, y)[:3]


# PMTL's traced sub-region index is the slower compile; it runs with `pytest -m slow`.
@pytest.mark.parametrize("name", ["epo", pytest.param("pmtl", marks=pytest.mark.slow)])
def test_batched_preference_methods_match_per_model_transforms(name):
    """vmap over (params, run-time preference or traced PMTL index) inside lax.scan gives
    what a Python loop over separately built, concretely configured transforms gives."""
    lr, m = 0.1, 3
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 64))
    y = rng.standard_normal((20, 8))
    prefs = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    schedule = np.stack([rng.permutation(20)[:8] for _ in range(4)]).astype(np.int32)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    params0 = jax.vmap(lambda k: jp.models.river_init(k, dtype=jnp.float64))(keys)
    method = mt.make_method(name, _mlp_loss, m, preferences=prefs, pmtl_init_steps=2)
    trainer = mt.make_trainer(method, optax.sgd(lr))
    state = trainer.init(params0, jnp.asarray(prefs), jnp.arange(3))
    state, _, weight_log = mt.run_training(
        trainer, state, schedule, jnp.asarray(x), jnp.asarray(y), jnp.asarray(prefs),
        jnp.arange(3), chunk=2)
    refs = mt.pmtl_references(prefs)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def oracle(p, k, pref):
        # One model, a Python loop of optax updates with the transform configured for
        # that model alone: EPO with a construction-time preference, PMTL with its index.
        if name == "epo":
            tx = jp.epo(pref, descent="restricted", scale="num_tasks")
        else:
            tx = jp.pmtl(refs, index=k, scale="num_tasks", init_steps=2)
        tx = optax.chain(tx, optax.sgd(lr))

        def step(carry, rows):
            p, s = carry
            losses, jac = jp.value_and_jacobian(_mlp_loss)(p, xj[rows], yj[rows])
            upd, s = tx.update(jac, s, p, losses=losses)
            return (optax.apply_updates(p, upd), s), None

        (p, s), _ = jax.lax.scan(step, (p, tx.init(p)), schedule)
        return p, s[0].weights

    # One compile for EPO (the preference is an argument); PMTL gets a concrete Python
    # index, so its oracle compiles per sub-region (the slow variant).
    run_epo = jax.jit(oracle, static_argnums=1)
    for k in range(3):
        p0 = jax.tree_util.tree_map(lambda a: a[k], params0)
        if name == "epo":
            p, weights = run_epo(p0, 0, jnp.asarray(prefs[k]))
        else:
            p, weights = oracle(p0, k, None)
        got = jax.tree_util.tree_map(lambda a: a[k], state.params)
        # Not bitwise: a vmapped while loop runs until every member has converged, so
        # members may take extra (harmless) solver iterations; agreement is to the
        # solvers' tolerance.
        for g, v in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(p)):
            np.testing.assert_allclose(g, v, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(weight_log[-1, k], weights, rtol=1e-6, atol=1e-8)


def test_pmtl_references_point_along_inverse_preferences():
    prefs = demo.preference_rays(5).astype(np.float64)
    refs = mt.pmtl_references(prefs)
    np.testing.assert_allclose(np.linalg.norm(refs, axis=1), 1.0, rtol=1e-12)
    # u ∝ 1/r  ⇔  r ⊙ u ∝ 𝟙: the EPO ray of r, measured with an independent formula.
    rl = prefs * refs
    cos = rl.sum(1) / (np.sqrt(2) * np.linalg.norm(rl, axis=1))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
    # The rays are the EPO code's circle_points(5, 1e-4·π/2, 0.9999·π/2).
    phi = np.linspace(1e-4 * np.pi / 2, 0.9999 * np.pi / 2, 5)
    np.testing.assert_allclose(prefs, np.stack([np.cos(phi), np.sin(phi)], 1), rtol=1e-6)


def test_chunk_length_is_the_largest_small_divisor():
    for total in range(1, 400):
        got = mt.chunk_length(total, 20)
        cap = max(1, total // 20)
        want = max(d for d in range(1, total + 1) if total % d == 0 and d <= cap)
        assert got == want and total % got == 0


# ------------------------------------------------------------------ data set labelling


def test_fashion_fallback_is_labelled(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXPARETO_DATA", raising=False)
    monkeypatch.setattr(jp.data, "FASHION_DEBIAN_DIR", tmp_path / "no-fashion-here")
    cfg = demo.Config(num_train=30, num_test=10)
    _, info = demo._load_multi("multi_fashion", cfg)
    assert info["fallback"] and "FALLBACK" in info["label"]
    assert info["items_used"] != ["fashion", "fashion"]
    assert any("Fashion-MNIST not found" in w for w in info["warnings"])


def test_real_fashion_is_not_labelled_fallback(monkeypatch):
    monkeypatch.delenv("JAXPARETO_DATA", raising=False)
    if jp.data.find_idx_files(jp.data.FASHION_DEBIAN_DIR) is None:
        pytest.skip("dataset-fashion-mnist is not installed")
    _, info = demo._load_multi("multi_fashion_mnist", demo.Config(num_train=30, num_test=10))
    assert not info["fallback"] and info["items_used"] == ["mnist", "fashion"]
    assert "FALLBACK" not in info["label"]


def test_command_line_budgets():
    cfg = demo.config_from_args(["--out", "/tmp/x", "--no-progress"])
    assert cfg.budget == "default" and cfg.out_dir == "/tmp/x" and not cfg.progress
    full = demo.config_from_args(["--full", "--datasets", "multi_mnist"])
    assert (full.budget, full.optimizer, full.learning_rate, full.epochs, full.batch_size) == (
        "full", "sgd", 1e-3, 100, 256)
    assert (full.river_optimizer, full.river_learning_rate, full.river_epochs) == ("sgd", 1e-4, 100)
    assert full.datasets == ("multi_mnist",) and full.num_train is None
    with pytest.raises(SystemExit):
        demo.config_from_args(["--datasets", "cifar"])


# ------------------------------------------------------------------ end to end


# The default variant runs the main method and the baselines; every method (MGDA-UB,
# PMTL, linear scalarization and all river methods) runs with `pytest -m slow`.
@pytest.mark.parametrize("methods, river_methods", [
    (("epo", "single"), ("linear", "single")),
    pytest.param(mt.METHODS, demo.RIVER_METHODS, marks=pytest.mark.slow),
])
def test_tiny_end_to_end_run_writes_finite_results(tmp_path, capsys, methods, river_methods):
    cfg = demo.Config(
        datasets=("multi_mnist",), methods=methods, num_train=96, num_test=40, epochs=2,
        batch_size=32, num_preferences=3, river_methods=river_methods, river_rows=400,
        river_preferences=3, river_epochs=2, river_batch_size=64, ppe_examples=24, ppe_steps=1,
        hypernetwork_epochs=1, progress=False, out_dir=str(tmp_path))
    results = demo.run(cfg)
    print(demo.summary(results))
    out = capsys.readouterr().out
    assert "Multi-MNIST" in out and "River flow" in out and "closest to the rays" in out

    for name in ("demo.json", "demo_fronts.png", "demo_river.png", "demo_ppe.png",
                 "demo_hypernetwork.png"):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0
    assert (tmp_path / "demo_fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["config"]["budget"] == "default"

    entry = saved["stages"]["multitask"]["datasets"]["multi_mnist"]
    assert entry["steps"] == 2 * (96 // 32)
    assert set(entry["methods"]) == set(methods)
    for name, rec in entry["methods"].items():
        assert rec["finite"], name
        losses, accs = np.asarray(rec["test_losses"]), np.asarray(rec["test_accuracies"])
        assert np.all(np.isfinite(losses)) and np.all((accs >= 0) & (accs <= 1))
    epo = entry["methods"]["epo"]
    assert np.asarray(epo["test_losses"]).shape == (3, 2)
    # The table's cosine is cos(r ⊙ l, 𝟙), recomputed here from the saved numbers.
    rl = np.asarray(epo["preferences"]) * np.asarray(epo["test_losses"])
    np.testing.assert_allclose(
        epo["ray_cosine"], rl.sum(1) / (math.sqrt(2) * np.linalg.norm(rl, axis=1)), atol=2e-6)
    assert 0.0 <= epo["hypervolume"] <= 2.5 * 2.5

    river = saved["stages"]["river"]["methods"]
    assert set(river) == set(river_methods)
    for rec in river.values():
        assert rec["finite"] and np.all(np.isfinite(rec["rlp_mean"]))
        assert len(rec["rlp_mean"]) == 8

    # PPE starts from the multitask stage's EPO model at the middle ray (r ∝ (½, ½)):
    # before its correction, its training-subset losses are that model's.
    ppe = saved["stages"]["ppe"]
    nav = ppe["navigation"]
    assert ppe["dataset"] == "multi_mnist"
    assert np.all(np.isfinite(nav["test_losses"])) and np.all(np.isfinite(nav["train_losses"]))
    assert len(nav["test_losses"]) == len(nav["points"]) >= 1
    np.testing.assert_allclose(ppe["epo_front"]["test_losses"], epo["test_losses"])
    np.testing.assert_allclose(
        nav["hypervolume"],
        jp.metrics.hypervolume(np.asarray(nav["test_losses"]), np.asarray([2.5, 2.5])), rtol=1e-9)
    # The correction is MGDA with an Armijo search: no training loss goes up.
    sc = nav["start_correction"]
    assert np.all(np.asarray(sc["train_losses_after"]) <= np.asarray(sc["train_losses_before"]) + 1e-5)

    # Loss-based stage: one model per method, finite; Δm% recomputed from the saved
    # accuracies and the multitask stage's single-task networks (accuracies: higher is
    # better, so an improvement is negative).
    lb = saved["stages"]["loss_based"]
    single = np.asarray(entry["methods"]["single"]["test_accuracies"])
    base = np.asarray([single[0, 0], single[1, 1]])
    np.testing.assert_allclose(lb["single_task_accuracy"], base)
    assert set(lb["methods"]) == set(demo.LOSS_BASED_METHODS)
    for name, rec in lb["methods"].items():
        acc = np.asarray(rec["test_accuracies"])
        assert rec["finite"] and rec["ms_per_step"] > 0 and np.all((acc >= 0) & (acc <= 1)), name
        np.testing.assert_allclose(
            rec["delta_m_percent"], -100 * np.mean((acc - base) / base), rtol=1e-5, atol=1e-4)

    hyper = saved["stages"]["hypernetwork"]
    for key in ("rays5", "rays25"):
        losses = np.asarray(hyper[key]["test_losses"])
        assert np.all(np.isfinite(losses)) and 0.0 <= hyper[key]["hypervolume"] <= 2.5 * 2.5
    assert len(hyper["rays25"]["test_losses"]) == 25 and len(hyper["rays5"]["test_losses"]) == 3


@pytest.mark.slow
def test_ppe_example_main_writes_comparison(tmp_path):
    from examples import ppe_multimnist

    res = ppe_multimnist.main(["--epochs", "1", "--num-train", "128", "--num-test", "40",
                               "--nav-examples", "32", "--nav-steps", "1", "--start-steps", "2",
                               "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ppe_multimnist.json").read_text())
    assert (tmp_path / "ppe_multimnist.png").read_bytes()[:4] == b"\x89PNG"
    nav = saved["navigation"]
    assert np.all(np.isfinite(nav["test_losses"]))
    if "independent" in saved:  # only when at least one step was accepted
        ind = saved["independent"]
        assert len(ind["test_losses"]) == len(nav["test_losses"]) - 1
        # Each independent run's preference is the ray through its navigated point.
        rl = np.asarray(ind["preferences"]) * np.asarray(nav["train_losses"][1:])
        np.testing.assert_allclose(rl[:, 0], rl[:, 1], rtol=1e-5)
    assert res["config"]["nav_steps"] == 1
