"""Every weighting factory in ``jp.weighting.__all__`` follows the kit's conventions.

The conventions are those of :mod:`jaxpareto.weighting.base` (module docstring): at most
one positional parameter, ``num_tasks=`` keyword-only, ``max_iter``/``tol`` naming,
``Literal`` string options, ``update(..., **extra)``, initial weights ``1/m``, the core
state fields ``weights, status, converged, iterations``, ``m = 1`` gives weight 1, a
non-finite Gramian gives finite weights and ``status = NONFINITE_INPUT``, and short
reprs. Factories are discovered by introspection (every public function annotated
``-> Weighting``), so a new factory is checked without being listed here.

Every factory follows them today: the departure tables ``KNOWN_DRIFT`` /
``KNOWN_RESULT_DRIFT`` are empty, and an entry added there runs as a strict xfail (it
must fail; once fixed it fails the suite until removed). A departure that is not listed
fails outright, so a new factory that drifts fails the suite. The oracle of each check is the convention itself, stated
independently of the implementation (e.g. ``1/m`` initial weights, the Status enum).
"""

from __future__ import annotations

import inspect
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpareto as jp
from jaxpareto.status import Status
from jaxpareto.weighting.base import Weighting

W = jp.weighting
CORE = ("weights", "status", "converged", "iterations")
RENAMED = {"maxiter", "max_iters", "steps", "num_steps", "polish_iter", "n_iter", "iters", "tolerance"}


def _factories() -> list[str]:
    names = []
    for name in W.__all__:
        obj = getattr(W, name)
        if not inspect.isfunction(obj) or name.endswith("_weights"):
            continue
        ann = inspect.signature(obj).return_annotation
        if ann in (Weighting, "Weighting") or getattr(ann, "__name__", None) == "Weighting":
            names.append(name)
    return sorted(names)


FACTORIES = _factories()

# Arguments a factory cannot do without, at m tasks (a new factory with a required
# argument fails `test_builds` until it is added here).
M = 3
REQUIRED = {
    "pmtl": lambda m: {"preferences": np.eye(m) + 0.2, "index": 0},
    "hv_gradient": lambda m: {"reference": np.full(m, 10.0)},
    "krum": lambda m: {"n_byzantine": 0},
    "trimmed_mean": lambda m: {"trim_number": 0},
    "constant": lambda m: {"weights": np.ones(m)},
    "moco": lambda m: {"params": np.zeros(5)},  # shapes its tracked Jacobian (m × 5 here)
}


def _kwargs(name: str, m: int = M) -> dict:
    return REQUIRED.get(name, lambda m: {})(m)


def _build(name: str, m: int = M) -> Weighting:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return getattr(W, name)(**_kwargs(name, m))


def _inputs(name: str, m: int, finite: bool = True):
    """(first argument of update, keyword arguments) for a float64 state of m tasks."""
    rng = np.random.default_rng(m)
    jac = rng.normal(size=(m, 5))
    if not finite:
        jac[0, 0] = np.nan
    gram = jnp.asarray(jac @ jac.T)
    kwargs = {"losses": jnp.asarray(rng.uniform(0.5, 2.0, m))}
    if _build(name, m).needs == "jacobian":
        return jnp.asarray(jac), dict(kwargs, gram=gram)
    return gram, kwargs


# (factory, check) -> why it still departs (xfail: remove the entry once fixed).
KNOWN_DRIFT: dict[tuple[str, str], str] = {}


def _case(check: str):
    params = []
    for name in FACTORIES:
        reason = KNOWN_DRIFT.get((name, check))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return pytest.mark.parametrize("name", params)


def test_discovery_finds_the_catalogue():
    # The introspection sees the methods the package documents (not an empty list).
    for name in ("mgda", "epo", "pmtl", "upgrad", "dualproj", "cagrad", "pcgrad", "linear"):
        assert name in FACTORIES
    for key in KNOWN_DRIFT:
        assert key[0] in FACTORIES, f"KNOWN_DRIFT names an unknown factory {key[0]}"


@_case("builds")
def test_builds(name):
    wt = _build(name)
    assert isinstance(wt, Weighting) and wt.needs in ("gramian", "jacobian")


@_case("signature")
def test_signature(name):
    sig = inspect.signature(getattr(W, name))
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 1, f"{name}: positional parameters {[p.name for p in positional]}"
    assert "num_tasks" in sig.parameters, f"{name}: no num_tasks="
    assert sig.parameters["num_tasks"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["num_tasks"].default is None
    for p in params:
        assert p.name not in RENAMED, f"{name}: `{p.name}` (use max_iter / tol)"
        assert "iter" not in p.name or p.name == "max_iter", f"{name}: `{p.name}`"


@_case("literal")
def test_string_options_are_literal_typed_and_checked(name):
    fn = getattr(W, name)
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(inspect.unwrap(fn))
    for p in sig.parameters.values():
        if not isinstance(p.default, str):
            continue
        hint = hints.get(p.name)
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        assert choices, f"{name}: `{p.name}` is typed {hint!r}, not Literal[...]"
        assert p.default in choices
        with pytest.raises(ValueError, match=p.name):
            fn(**dict(_kwargs(name), **{p.name: "no-such-option"}))


@_case("num_tasks")
def test_num_tasks_is_stored_and_enforced(name):
    wt = getattr(W, name)(num_tasks=M, **_kwargs(name))
    assert wt.num_tasks == M
    with pytest.raises(ValueError):
        wt.init(M + 1)


@_case("init")
def test_init_core_fields_and_uniform_weights(name):
    wt = _build(name)
    for dtype in (jnp.float32, jnp.float64):
        state = wt.init(M, dtype)
        assert state._fields[:1] == ("weights",), f"{name}: fields {state._fields}"
        for field in CORE:
            assert field in state._fields, f"{name}: state lacks `{field}`"
        np.testing.assert_allclose(np.asarray(state.weights), np.full(M, 1.0 / M), rtol=1e-6)
        assert state.weights.dtype == dtype
        assert state.status.dtype == jnp.int32 and int(state.status) == Status.SUCCESSFUL
        assert state.iterations.dtype == jnp.int32 and state.converged.dtype == jnp.bool_


@_case("extra")
def test_update_accepts_extra_keywords(name):
    wt = _build(name)
    first, kwargs = _inputs(name, M)
    out, _ = wt.update(first, wt.init(M, jnp.float64), **kwargs, some_future_option=1)
    leaves = jax.tree_util.tree_leaves(out)
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


@_case("one_task")
def test_one_task_gives_weight_one(name):
    wt = _build(name, 1)
    first, kwargs = _inputs(name, 1)
    out, new_state = wt.update(first, wt.init(1, jnp.float64), **kwargs)
    np.testing.assert_allclose(np.asarray(new_state.weights), [1.0], rtol=1e-12)
    if wt.needs == "gramian":
        np.testing.assert_allclose(np.asarray(out), [1.0], rtol=1e-12)


@_case("nonfinite")
def test_nonfinite_gramian_gives_finite_weights_and_the_status(name):
    wt = _build(name)
    first, kwargs = _inputs(name, M, finite=False)
    out, state = wt.update(first, wt.init(M, jnp.float64), **kwargs)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(out))
    assert int(state.status) == Status.NONFINITE_INPUT, Status(int(state.status))


@_case("repr")
def test_state_repr_is_short(name):
    m = 64
    state = getattr(W, name)(**_kwargs(name, m)).init(m, jnp.float64)
    text = repr(state)
    assert len(text) < 400, f"{name}: {len(text)} characters"
    assert "f64[64]" in text


def _result_classes():
    return sorted(
        n for n in W.__all__ if n.endswith(("Result", "State")) and n not in ("LPResult", "QPResult")
    )


# Result/State classes still without a core field (xfail; remove the entry once fixed).
KNOWN_RESULT_DRIFT: dict[str, str] = {}


@pytest.mark.parametrize(
    "cls_name",
    [
        pytest.param(
            n,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_RESULT_DRIFT[n])]
            if n in KNOWN_RESULT_DRIFT
            else [],
        )
        for n in _result_classes()
    ],
)
def test_results_and_states_have_the_core_fields_first(cls_name):
    fields = getattr(W, cls_name)._fields
    assert fields[:1] == ("weights",)
    missing = [f for f in CORE if f not in fields]
    assert not missing, f"{cls_name} lacks {missing}"


def test_status_enum_is_shared_and_named():
    # One enum: the PPE's and the LP's codes are its members; every member has a message.
    assert jp.ppe.Status is Status is jp.Status
    assert W.OPTIMAL is Status.SUCCESSFUL and W.MAX_ITER is Status.MAX_ITER
    assert jp.ppe.MAX_POINTS is Status.MAX_POINTS
    assert all(s.message for s in Status)
    assert len({int(s) for s in Status}) == len(Status)


def test_check_status_raises_eagerly_and_under_checkify():
    from jax.experimental import checkify

    c = jnp.array([1.0, 0.0])
    a = jnp.array([[0.0, 1.0]])  # β_2 ≥ 2 is impossible on the simplex: INFEASIBLE
    res = jp.linprog_simplex(c, a, jnp.array([2.0]), jnp.array([True]))
    assert int(res.status) == Status.INFEASIBLE
    with pytest.raises(jp.StatusError, match="INFEASIBLE"):
        jp.check_status(res, where="lp")
    ok = jp.linprog_simplex(c, a, jnp.array([0.5]), jnp.array([True]))
    assert jp.check_status(ok) is ok

    @jax.jit
    def solve(b):
        return jp.check_status(jp.linprog_simplex(c, a, b, jnp.array([True]))).x

    checked = checkify.checkify(solve)
    err, _ = checked(jnp.array([0.5]))
    assert err.get() is None
    err, x = checked(jnp.array([2.0]))
    assert "not a success" in err.get() and bool(jnp.all(jnp.isfinite(x)))


def test_tree_get_weights_in_an_optax_chain():
    import optax

    state = optax.chain(jp.mgda(num_tasks=3), optax.adam(1e-3)).init({"w": jnp.zeros(4)})
    np.testing.assert_allclose(np.asarray(optax.tree_utils.tree_get(state, "weights")), 1 / 3)
    assert state[0].weights.shape == (3,)  # the aggregate's scaled weights, by name


def test_public_modules_do_not_leak_imports():
    for mod in (jp, W, jp.ppe, jp.metrics, jp.problems, jp.models, jp.data, jp.sharding):
        leaked = {"jax", "jnp", "np", "math", "numbers", "functools"} & set(dir(mod))
        assert not leaked, f"{mod.__name__} leaks {leaked}"
        assert set(mod.__all__) <= set(dir(mod))


def test_reprs_of_results_and_traces_are_short():
    res = W.min_norm_weights(jnp.eye(64) + 0.1)
    assert len(repr(res)) < 400 and "f64[64]" in repr(res)
    lp = W.linprog_simplex(jnp.ones(2), jnp.zeros((1, 2)), jnp.zeros(1), jnp.array([False]))
    assert "status=SUCCESSFUL" in repr(lp)
    assert jp.ppe.Trace.__repr__.__module__ != "collections"  # the short repr, not tuple's


def test_deprecated_positional_options_warn_and_still_work():
    r = jnp.array([1.0, 2.0, 3.0])
    with pytest.warns(DeprecationWarning, match="ideal"):
        old = W.chebyshev(r, jnp.zeros(3))
    new = W.chebyshev(r, ideal=jnp.zeros(3))
    losses, gram = jnp.array([1.0, 2.0, 0.5]), jnp.eye(3)
    np.testing.assert_array_equal(
        np.asarray(old.update(gram, old.init(3), losses=losses)[0]),
        np.asarray(new.update(gram, new.init(3), losses=losses)[0]),
    )
    with pytest.warns(DeprecationWarning, match="index"):
        W.pmtl(jnp.eye(3) + 0.2, 1)


def test_upgrad_preference_follows_the_one_rule():
    # r and 7r are one preference (rescaled to the simplex, as linear's is): the oracle is
    # the same solve on r / Σr.
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(3, 6))
    gram = jnp.asarray(jac @ jac.T)
    r = jnp.array([0.2, 0.5, 0.3])
    for solver in (W.upgrad_weights, W.dualproj_weights):
        a = solver(gram, r).weights
        b = solver(gram, 7.0 * r).weights
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-12)
    lin = W.linear(7.0 * r)  # linear's weights are the normalised preference itself
    lin_w = lin.update(gram, lin.init(3, jnp.float64))[0]
    np.testing.assert_allclose(np.asarray(lin_w), np.asarray(r), rtol=1e-12)
