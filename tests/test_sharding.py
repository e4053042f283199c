"""jaxpareto.sharding: data-parallel and model-sharded steps equal the one-device step.

The multi-device checks run in ONE subprocess (tests/_sharding_worker.py) with 8 CPU
devices (``--xla_force_host_platform_device_count=8``), so the flag never reaches this
pytest process. The oracle is the same jitted step run on one device; the HLO checks
read the collectives of the compiled sharded programs. Helper validation and the HLO
parser are tested here, on one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

import jaxpareto.sharding as jps

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_sharding_worker.py"
TOL = {"float64": 1e-12, "float32": 1e-6}
DEVICES = 8


def _run_worker(*flags: str, timeout: int = 600) -> dict:
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "PYTHONPATH", "JAX_ENABLE_X64")
    }
    # Backend optimisation level 0 only shortens LLVM codegen of the 8-device programs;
    # the SPMD partitioning (what the HLO checks read) happens before it, and the
    # one-device oracle runs under the same flag.
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={DEVICES} --xla_backend_optimization_level=0"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    proc = subprocess.run(
        [sys.executable, str(WORKER), *flags], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The worker's JSON, computed once per pytest session: under pytest-xdist the
    module's tests may be split over several workers, which then share one result
    file (the base temp dir's parent is common to all of them) behind a lock."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _run_worker()
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent
    path = shared / "sharding_worker.json"
    with open(shared / "sharding_worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                path.write_text(json.dumps(_run_worker()))
            return json.loads(path.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _collectives(case):
    return [(op, [tuple(s[1]) for s in shapes], group) for op, shapes, group in case["collectives"]]


def _fast_case_keys():
    # Mirrors tests/_sharding_worker.FAST_CASES (importing it would import jax there).
    # float32 on the 4×2 mesh is checked by the README block (float32 parameters).
    return [
        "dp/epo/float64", "dp/epo/float32", "mp/epo/float64",
        "dp/mgda_ub/float64", "mp/mgda_ub/float64",
    ]


# ----------------------------------------------------------- equality with 1 device


def test_worker_saw_eight_devices_and_ran_every_case(results):
    assert results["devices"] == DEVICES
    assert sorted(results["cases"]) == sorted(_fast_case_keys())


@pytest.mark.parametrize("key", _fast_case_keys())
def test_sharded_step_equals_single_device_step(results, key):
    case = results["cases"][key]
    tol = TOL[key.rsplit("/", 1)[1]]
    assert case["finite"]
    for what in ("weights", "updates", "params", "losses"):
        assert case["diff"][what] <= tol, (key, what, case["diff"])
    # The figures compared are not trivially zero.
    assert case["scale"]["updates"] > 1e-3 and case["scale"]["losses"] > 1e-2
    np.testing.assert_allclose(sum(case["weights"]), 1.0, atol=1e-6)


@pytest.mark.parametrize("key", _fast_case_keys())
def test_parameters_and_updates_keep_their_sharding(results, key):
    case = results["cases"][key]
    assert case["param_specs_out"] == case["param_specs_in"]
    assert case["update_specs"] == case["param_specs_in"]
    if key.startswith("mp/"):
        assert any("model" in s for s in case["param_specs_in"])
    else:
        assert all(s == "()" for s in case["param_specs_in"])


# ------------------------------------------------------------------- HLO: data parallel


@pytest.mark.parametrize("key", ["dp/epo/float64", "dp/epo/float32"])
def test_data_parallel_only_collective_is_the_jacobian_all_reduce(results, key):
    """Full-Jacobian step: the all-reduced operands are exactly the m×(leaf) Jacobian
    blocks plus the m losses, over all 8 devices; no all-gather or other collective."""
    case = results["cases"][key]
    m = len(case["weights"])
    colls = _collectives(case)
    assert {op for op, _, _ in colls} == {"all-reduce"}
    assert all(group == DEVICES for _, _, group in colls)
    # Dimensions compared sorted: XLA may hold an operand in a transposed layout (the
    # Jacobian block of a [16, 3] leaf appears as f64[3, 3, 16]).
    reduced = sorted(tuple(sorted(s)) for _, shapes, _ in colls for s in shapes)
    expected = sorted([tuple(sorted([m, *leaf])) for leaf in case["param_shapes"]] + [(m,)])
    assert reduced == expected


def test_data_parallel_mgda_ub_reduces_gramian_not_the_jacobian(results):
    """MGDA-UB: the representation Jacobian stays batch-sharded; the all-reduces carry
    the m×m Gramian, the (unscaled) head gradient, the trunk gradient and the m losses —
    never an m × (parameter) block: the head gradient is one VJP, not m head rows."""
    case = results["cases"]["dp/mgda_ub/float64"]
    m = len(case["weights"])
    colls = _collectives(case)
    assert {op for op, _, _ in colls} == {"all-reduce"}
    reduced = sorted(tuple(sorted(s)) for _, shapes, _ in colls for s in shapes)
    expected = sorted(
        [(m, m)]
        + [tuple(sorted(leaf)) for leaf in case["head_shapes"]]
        + [tuple(sorted(leaf)) for leaf in case["trunk_shapes"]]
        + [(m,)]
    )
    assert reduced == expected


# ------------------------------------------------------------------- HLO: model sharded


@pytest.mark.parametrize("key", ["mp/epo/float64", "mp/mgda_ub/float64"])
def test_model_sharded_step_gathers_nothing(results, key):
    """4 (data) × 2 (model), tensor-parallel trunk: no all-gather / all-to-all /
    permute; the only model-axis reductions are m×m Gramian partials and the one
    activation all-reduce of the row-split layer ([local batch, 16])."""
    case = results["cases"][key]
    m = len(case["weights"])
    colls = _collectives(case)
    assert {op for op, _, _ in colls} == {"all-reduce"}, colls
    model_axis = [shapes for _, shapes, group in colls if group == 2]
    data_axis = [shapes for _, shapes, group in colls if group == 4]
    assert len(model_axis) + len(data_axis) == len(colls)
    activation = [(case["local_batch"], 16)]
    assert activation in model_axis
    for shapes in model_axis:
        assert shapes == activation or all(s == (m, m) for s in shapes), shapes
    if key.startswith("mp/epo"):
        # Each model-sharded leaf contributes one m×m partial Gramian.
        sharded = sum("model" in s for s in case["param_specs_in"])
        assert [(m, m)] * sharded in model_axis


def test_gramian_contracts_locally_and_combine_keeps_the_sharding(results):
    """jp.gramian / jp.combine alone on a Jacobian sharded like the parameters."""
    g = results["gramian_combine"]
    m = g["m"]
    sharded = sum("model" in s for s in g["param_specs"])
    assert sharded >= 2
    assert len(g["gram_collectives"]) >= 1
    for op, shapes, group in g["gram_collectives"]:
        assert op == "all-reduce" and group == 2
        assert all(tuple(s[1]) == (m, m) for s in shapes)
    assert sum(len(shapes) for _, shapes, _ in g["gram_collectives"]) == sharded
    assert g["gram_spec"] == "()"
    assert g["gram_diff"] <= 1e-12 * max(1.0, g["gram_scale"])
    assert g["combine_collectives"] == []
    assert g["combine_specs"] == g["param_specs"]
    assert g["combine_diff"] <= 1e-12


# ------------------------------------------------------- Gramian engine: data parallel

ENGINE_TOL = {"float64": 1e-12, "float32": 1e-5}
ENGINE_RUNS = ["auto/float64", "auto/float32", "per-sample/float64"]  # worker's ENGINE_RUNS


def _engine_reduced(run):
    """The all-reduced operand shapes of an engine run, dimensions sorted (XLA may hold
    an operand transposed), and the set of collective ops."""
    colls = _collectives(run)
    ops = {op for op, _, _ in colls}
    reduced = sorted(tuple(sorted(s)) for op, shapes, _ in colls if op == "all-reduce"
                     for s in shapes)
    return ops, reduced, colls


def test_gramian_engine_data_parallel_equals_single_device(results):
    """jp.gramian_vjp on a batch split over 8 devices, parameters replicated: the losses,
    the Gramian and the update ``∇ Σ w_i l_i`` equal the same jitted step on one device
    (relative to their largest entry), and come back replicated."""
    engine = results["gramian_engine"]
    assert sorted(engine["runs"]) == sorted(ENGINE_RUNS)
    for key, run in engine["runs"].items():
        tol = ENGINE_TOL[key.rsplit("/", 1)[1]]
        for what in ("losses", "gram", "update"):
            assert run["diff"][what] <= tol, (key, what, run["diff"])
        assert run["scale"]["gram"] > 1e-2 and run["scale"]["update"] > 1e-3, key
        assert run["gram_spec"] == "()"
        assert run["update_specs"] == ["()"] * len(engine["param_shapes"])


@pytest.mark.parametrize("key", ["auto/float64", "auto/float32"])
def test_gramian_engine_data_parallel_reduces_rows_never_samples(results, key):
    """Weight-gradient blocks (what "auto" picks for this MLP: batch 64 ≫ widths): one
    all-reduce over the 8 devices of each parameter's ``m`` per-task rows, the ``m``
    losses and the update — no all-gather, nothing with a batch axis.

    The rows cannot be replaced by ``m × m`` partial Gramians: each device holds
    ``g_i = Σ_d g_i^(d)`` only in part, and ``⟨g_i, g_j⟩`` needs the cross terms
    ``⟨g_i^(d), g_j^(d')⟩``, i.e. the rows (or the per-sample inputs and cotangents,
    below). This is what the Jacobian path reduces too, plus the update."""
    engine = results["gramian_engine"]
    run, m = engine["runs"][key], engine["m"]
    assert set(run["kinds"]) == {"weight-gradient"}
    ops, reduced, colls = _engine_reduced(run)
    assert ops == {"all-reduce"}, colls
    assert all(group == DEVICES for _, _, group in colls)
    rows = [tuple(sorted([m, *leaf])) for leaf in engine["param_shapes"]]
    update = [tuple(sorted(leaf)) for leaf in engine["param_shapes"]]
    assert reduced == sorted(rows + update + [(m,)])
    assert not any(engine["batch"] in s for s in reduced)


def test_gramian_engine_per_sample_blocks_reduce_only_m_by_m_partials(results):
    """Per-sample blocks (``order="per-sample"``): each dense weight contributes an
    ``m × m`` partial Gramian to the all-reduce, never its ``m × (weight)`` rows; the
    cross-device terms come from an all-gather of the layer's input ``[B, c]`` and its
    ``m`` output cotangents ``[m, B, f]``: ``B·c + m·B·f`` numbers against ``m·c·f`` for
    the rows, so the smaller exchange for wide layers on small batches, where "auto"
    (``dense_gram_flops``) picks this order too."""
    engine = results["gramian_engine"]
    run, m, batch = engine["runs"]["per-sample/float64"], engine["m"], engine["batch"]
    shapes = [tuple(leaf) for leaf in engine["param_shapes"]]
    dense = [s for s, kind in zip(shapes, run["kinds"]) if kind == "dense-per-sample"]
    others = [s for s, kind in zip(shapes, run["kinds"]) if kind != "dense-per-sample"]
    assert len(dense) == 3 and all(len(s) == 2 for s in dense)
    ops, reduced, colls = _engine_reduced(run)
    assert ops == {"all-reduce", "all-gather"}, colls
    assert all(group == DEVICES for _, _, group in colls)
    expected = (
        [(m, m)] * len(dense)
        + [tuple(sorted([m, *s])) for s in others]
        + [tuple(sorted(s)) for s in shapes]
        + [(m,)]
    )
    assert reduced == sorted(expected)
    gathered = [s for op, ss, _ in colls if op == "all-gather" for s in ss]
    assert len(gathered) == 2 * len(dense)  # one input, one set of cotangents per layer
    widths = {d for s in dense for d in s}
    for s in gathered:
        free = sorted(s)
        free.remove(batch)
        assert free in ([1, free[1]], [m, free[1]]) and free[1] in widths, s


def test_shard_batch_rejects_an_indivisible_batch(results):
    message = results["validation"]["indivisible_batch"]
    assert message is not None and "`batch`" in message and "'data'" in message


# ------------------------------------------------------------------------ README block


def test_readme_scaling_out_block_runs_verbatim(results):
    r = results["readme"]
    assert r["source"] is not None, "no '## Scaling out' python block in README.md"
    assert r["mesh"] == {"data": 4, "model": 2}
    # 20 adam steps of the block on 8 devices vs the same block on one device.
    tol = TOL[r["dtype"]]
    assert r["params_diff"] <= tol and r["losses_diff"] <= tol, r
    # The step compiled once: the parameters came back with the shardings they went in
    # with (the default rule's layout is a fixed point of the partitioner).
    assert r["step_compiles"] == 1
    assert r["param_specs"] == r["rule_specs"]
    colls = [(op, [tuple(s[1]) for s in shapes], group) for op, shapes, group in r["collectives"]]
    assert {op for op, _, _ in colls} == {"all-reduce"}
    m = 3
    assert any(group == 2 and shapes and all(s == (m, m) for s in shapes)
               for _, shapes, group in colls)


# ------------------------------------------------------------- slow: every combination


@pytest.mark.slow
def test_every_method_dtype_and_mesh_matches_single_device():
    full = _run_worker("--full")
    assert len(full["cases"]) == 12
    for key, case in full["cases"].items():
        tol = TOL[key.rsplit("/", 1)[1]]
        assert case["finite"], key
        assert max(case["diff"].values()) <= tol, (key, case["diff"])
        assert case["update_specs"] == case["param_specs_in"], key
        assert {c[0] for c in case["collectives"]} == {"all-reduce"}, key
    # jax.make_mesh's default Explicit axes: data parallel works unchanged.
    assert full["explicit"]["axis_types"] == ["AxisType.Explicit"]
    assert full["explicit"]["diff"] <= 1e-12


@pytest.mark.slow
def test_multihost_loopback_two_processes():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "multihost.py"), "--num-processes", "2",
         "--steps", "20", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["global_devices"] == 8 and summary["steps"] == 20
    assert summary["bitwise_identical_across_processes"]
    assert summary["max_diff_vs_single_process"] <= 1e-12
    assert summary["tcp_sockets_checked"] > 0 and summary["non_loopback_endpoints"] == []
    # EPO made progress on the worst weighted loss.
    r = np.array([1.0, 2.0, 3.0])
    assert np.max(r * summary["final_losses"]) < np.max(r * summary["first_losses"])


# --------------------------------------------------------------- one-device unit tests


def test_make_mesh_validates_its_sizes():
    n = jax.device_count()
    mesh = jps.make_mesh()
    assert dict(mesh.shape) == {"data": n, "model": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="`model`"):
        jps.make_mesh(model=n + 1)
    with pytest.raises(ValueError, match="`model`"):
        jps.make_mesh(model=0)
    with pytest.raises(ValueError, match="`data`"):
        jps.make_mesh(data=n + 1)


def test_placement_validates_its_inputs():
    mesh = jps.make_mesh()
    with pytest.raises(ValueError, match="`axis`"):
        jps.shard_batch(np.zeros((4, 2)), mesh, axis="rows")
    with pytest.raises(ValueError, match="`batch`"):
        jps.shard_batch({"x": np.zeros(())}, mesh)
    with pytest.raises(TypeError, match="`mesh`"):
        jps.replicate(np.zeros(3), "mesh")
    with pytest.raises(ValueError, match="`params`"):
        jps.shard_state({"mu": np.zeros(3)}, {"w": np.zeros(3)})


def test_one_device_mesh_places_and_keeps_values():
    mesh = jps.make_mesh()
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.float32)}
    placed = jps.shard_params(params, mesh)
    batch = jps.shard_batch((np.arange(8.0).reshape(4, 2),), mesh)
    state = jps.shard_state({"count": jnp.zeros((), jnp.int32), "mu": params}, placed)
    for a, b in zip(jax.tree_util.tree_leaves(placed), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert batch[0].sharding.spec == P("data")
    assert state["mu"]["w"].sharding == placed["w"].sharding
    assert state["count"].sharding.spec == P()


def _norm(spec):
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return tuple(entries)


def test_param_specs_rule_on_an_abstract_mesh():
    """Column-split first layer with its bias, row-split second layer, vectors that no
    column split produces replicated; everything replicated when model == 1."""
    mesh = AbstractMesh((4, 2), ("data", "model"))
    params = [
        {"w": np.zeros((16, 64)), "b": np.zeros(64)},
        {"w": np.zeros((64, 3)), "b": np.zeros(3)},
        {"scale": np.zeros(10), "odd": np.zeros((3, 5)), "t": np.zeros(())},
    ]
    specs = jps.param_specs(params, mesh)
    assert _norm(specs[0]["w"]) == (None, "model")
    assert _norm(specs[0]["b"]) == ("model",)
    assert _norm(specs[1]["w"]) == ("model",)
    assert _norm(specs[1]["b"]) == ()
    assert _norm(specs[2]["scale"]) == ()
    assert _norm(specs[2]["odd"]) == ()
    assert _norm(specs[2]["t"]) == ()
    flat = jps.param_specs(params, AbstractMesh((8, 1), ("data", "model")))
    assert all(_norm(s) == () for s in jax.tree_util.tree_leaves(
        flat, is_leaf=lambda x: isinstance(x, P)))
    with pytest.raises(TypeError, match="`mesh`"):
        jps.param_specs(params, (4, 2))


_HLO = """\
HloModule jit_step

%fused (p: f32[4]) -> f32[4] {
  ROOT %p = f32[4]{0} parameter(0)
}

ENTRY %main {
  %a = f32[3,16]{1,0} parameter(0)
  %all-reduce.1 = (f64[3,16,32]{2,1,0}, f64[3]{0}) all-reduce(%x, %y), channel_id=1, replica_groups=[1,8]<=[8], use_global_device_ids=true, to_apply=%add
  %all-gather = f32[16,32]{1,0} all-gather(%z), channel_id=2, replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={1}
  %all-reduce.9 = (f32[3,3]{1,0}, f32[3,3]{1,0}) all-reduce(%u, %v), channel_id=3, replica_groups=mesh['axis_0'=1,'axis_1'=2,'axis_2'=1,'axis_3'=4], device_ids=([4,2]T(1,0)) {'axis_1'}, use_global_device_ids=true, to_apply=%add
  %ars = bf16[8]{0} all-reduce-start(%w), replica_groups={}, to_apply=%add
  %ard = bf16[8]{0} all-reduce-done(%ars)
  %cp = s32[2]{0} collective-permute(%q), source_target_pairs={{0,1},{1,0}}
  ROOT %t = f32[3,16]{1,0} add(%a, %a)
}
"""


def test_collectives_parser_reads_ops_shapes_and_groups():
    found = jps.collectives(_HLO)
    assert [c.op for c in found] == [
        "all-reduce", "all-gather", "all-reduce", "all-reduce", "collective-permute"
    ]
    assert found[0].shapes == (("f64", (3, 16, 32)), ("f64", (3,)))
    assert found[0].group_size == 8
    assert found[1].shapes == (("f32", (16, 32)),) and found[1].group_size == 2
    assert found[2].shapes == (("f32", (3, 3)), ("f32", (3, 3))) and found[2].group_size == 2
    assert found[3].shapes == (("bf16", (8,)),) and found[3].group_size is None
    assert found[4].shapes == (("s32", (2,)),)
    with pytest.raises(TypeError, match="`hlo_text`"):
        jps.collectives(b"bytes")


def test_collectives_of_a_one_device_program_is_empty():
    text = jax.jit(lambda x: jnp.sum(x ** 2)).lower(jnp.ones(4)).compile().as_text()
    assert jps.collectives(text) == []
