"""Smoke tests of the benchmark scripts (tiny sizes), against independent oracles.

Each script's ``main(argv)`` runs once per module (fixtures) with ``--quick``-like sizes
into a temporary directory; the tests check the JSON's keys and that jaxpareto's
numbers agree with the oracle columns: the EPO LP optimum against scipy's HiGHS (and
cvxpy when installed), the min-norm KKT residual and objective against quadprog, the
numpy port of the MGDA-UB Frank–Wolfe against jaxpareto's own, and the PyTorch models
against the JAX models (same losses and Gramian). Peers that are absent must show up
as "not installed" while the jaxpareto side still runs. ``--threads 0`` keeps the
test process unpinned.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpareto as jp
from benchmarks import epo_lp, min_norm, report, run_all, scaling, train_step
from benchmarks.timing import NOT_INSTALLED, peer

HAVE_CVXPY = peer("cvxpy") is not None
HAVE_TORCH = peer("torch") is not None
HAVE_TORCHJD = HAVE_TORCH and peer("torchjd") is not None
HAVE_QUADPROG = peer("quadprog") is not None


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


def _load(path):
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- EPO LP


@pytest.fixture(scope="module")
def epo_payload(out_dir):
    epo_lp.main(["--quick", "--sizes", "3", "--dtypes", "float64", "--instances", "5",
                 "--repeats", "2", "--out", str(out_dir), "--threads", "0"])
    return _load(out_dir / "epo_lp_quick.json")


def test_epo_lp_json_and_objective_agreement(epo_payload):
    assert {"machine", "rows", "peers", "repeats"} <= set(epo_payload)
    assert "versions" in epo_payload["machine"] and "threads" in epo_payload["machine"]
    (row,) = epo_payload["rows"]
    assert row["m"] == 3 and row["instances"] == 5
    for key in ("jp64", "jp_batch64", "jp_batch64_per_pref", "highs", "cvxpy_resolve",
                "cvxpy_build_solve", "jit_floor"):
        assert key in row["time_s"]
    assert row["time_s"]["jp64"] > 0 and row["ratio"]["highs/jp64"] > 0
    # Objective of eq. 24 against scipy HiGHS (float64), every instance and preference.
    assert row["gap_jp64"] <= 1e-9
    assert row["gap_jp_batch64"] <= 1e-9
    assert row["jp64_max_infeasibility"] <= 1e-9
    assert row["jp_lp_status_nonzero"] == 0
    # Instance 4 lies on the ray: the descent LP is exercised too.
    assert row["balance_instances"] == 4
    if HAVE_CVXPY:
        assert row["gap_cvxpy"] <= 1e-6
        assert epo_payload["peers"]["cvxpy_solver"] != NOT_INSTALLED
    else:
        assert row["gap_cvxpy"] == NOT_INSTALLED
        assert row["time_s"]["cvxpy_resolve"] == NOT_INSTALLED


def test_epo_lp_without_cvxpy_says_not_installed(epo_payload, out_dir, monkeypatch):
    real_peer = epo_lp.peer
    monkeypatch.setattr(epo_lp, "peer", lambda name: None if name == "cvxpy" else real_peer(name))
    sub = out_dir / "no_cvxpy"
    payload = epo_lp.main(["--quick", "--sizes", "3", "--dtypes", "float64", "--instances", "2",
                           "--repeats", "1", "--out", str(sub), "--threads", "0"])
    row = payload["rows"][0]
    assert payload["peers"]["cvxpy"] == NOT_INSTALLED
    assert row["time_s"]["cvxpy_resolve"] == NOT_INSTALLED
    assert row["time_s"]["cvxpy_build_solve"] == NOT_INSTALLED
    assert row["ratio"]["cvxpy_resolve/jp64"] is None
    assert row["gap_jp64"] <= 1e-9  # the jaxpareto side still runs and agrees with HiGHS


def test_lp_data_descent_and_balance_rows():
    """The benchmark's LP rebuild against a brute-force vertex enumeration (m = 3)."""
    for seed in range(6):
        c, l, r = epo_lp.instance(3, seed, on_ray=(seed == 5))
        obj, rows, rhs, balance = epo_lp.lp_data(c, l, r)
        assert balance == (seed != 5)
        # Brute force over a fine simplex grid.
        grid = np.array([(i, j, 400 - i - j) for i in range(401) for j in range(401 - i)]) / 400
        feasible = np.all(grid @ rows.T >= rhs - 1e-12, axis=1) if len(rhs) else np.ones(len(grid), bool)
        x, best = epo_lp.highs_solve(c, l, r)
        # HiGHS's point is feasible for the rebuilt rows, and no feasible grid point
        # beats its value.
        assert np.all(rows @ x >= rhs - 1e-9) and abs(x.sum() - 1) <= 1e-9
        if feasible.any():
            assert np.max(grid[feasible] @ obj) <= best + 1e-9


# ----------------------------------------------------------------------------- min-norm


@pytest.fixture(scope="module")
def min_norm_payload(out_dir):
    min_norm.main(["--quick", "--sizes", "4", "--instances", "4", "--repeats", "2",
                   "--out", str(out_dir), "--threads", "0"])
    return _load(out_dir / "min_norm_quick.json")


def test_min_norm_json_kkt_and_objective(min_norm_payload):
    (row,) = min_norm_payload["rows"]
    for key in ("jp64", "jp32", "jp_fw64", "np_fw", "np_pgd", "torchjd", "quadprog", "jit_floor"):
        assert key in row["time_s"]
    assert row["kkt_max"]["jp64"] <= 1e-8
    assert row["kkt_max"]["jp32"] <= 1e-3
    if HAVE_QUADPROG:
        assert abs(row["gap_max"]["jp64"]) <= 1e-8
        assert row["kkt_max"]["quadprog"] <= 1e-6
    else:
        assert row["gap_max"]["jp64"] == NOT_INSTALLED
    if HAVE_TORCHJD:
        assert isinstance(row["kkt_max"]["torchjd"], float)
        assert row["time_s"]["torchjd"] > 0
    else:
        assert row["time_s"]["torchjd"] == NOT_INSTALLED


def test_numpy_reference_solvers_match_jaxpareto_ports():
    """The numpy MGDA-UB port and jaxpareto's reference methods run the same algorithm."""
    pgd = jax.jit(lambda c: jp.min_norm_weights(c, method="projected_gradient").weights)
    for m in (2, 5):
        for seed in range(3):
            c = min_norm.instance(m, seed)
            np.testing.assert_allclose(min_norm.np_frank_wolfe(c),
                                       np.asarray(min_norm._FW(jnp.asarray(c)).weights), atol=1e-9)
            np.testing.assert_allclose(min_norm.np_projected_gradient(c),
                                       np.asarray(pgd(jnp.asarray(c))), atol=1e-9)


def test_kkt_matches_library_definition():
    for seed in range(5):
        c = min_norm.instance(5, seed)
        beta = np.random.default_rng(seed).dirichlet(np.ones(5))
        lib = float(jp.weighting.kkt_residual(jnp.asarray(c), jnp.asarray(beta)))
        assert min_norm.kkt(c, beta) == pytest.approx(lib, rel=1e-12, abs=1e-15)


def test_min_norm_without_peers_says_not_installed(min_norm_payload, out_dir, monkeypatch):
    real_peer = min_norm.peer
    absent = ("torch", "torchjd", "torchjd.aggregation", "quadprog")
    monkeypatch.setattr(min_norm, "peer", lambda name: None if name in absent else real_peer(name))
    payload = min_norm.main(["--quick", "--sizes", "4", "--instances", "2", "--repeats", "1",
                             "--out", str(out_dir / "no_peers"), "--threads", "0"])
    row = payload["rows"][0]
    assert row["time_s"]["torchjd"] == NOT_INSTALLED
    assert row["kkt_max"]["quadprog"] == NOT_INSTALLED
    assert row["kkt_max"]["jp64"] <= 1e-8


# ----------------------------------------------------------------------------- train step


@pytest.fixture(scope="module")
def train_payload(out_dir):
    train_step.main(["--quick", "--repeats", "1", "--out", str(out_dir), "--threads", "0"])
    return _load(out_dir / "train_step_quick.json")


def test_train_step_json_and_same_model(train_payload):
    (row,) = train_payload["rows"]
    t = row["time_s"]
    for key in train_step.JP_METHODS:
        assert t[key] > 0
    for key in train_step.PEER_METHODS:
        assert key in t
    assert {"gramian", "weights_mgda", "combine", "adam", "jacobian"} <= set(row["profile_s"])
    assert "jp_mgda/jp_jacobian" in row["ratio"] and "jp_mgda_ub/jp_summed" in row["ratio"]
    if HAVE_TORCH:
        # Same function, same weights: the torch model reproduces the JAX losses and
        # the Gramian of the per-task gradients (float32).
        assert row["check"]["losses_max_rel_diff"] <= 1e-5
        assert row["check"]["gram_max_rel_diff"] <= 1e-4
        assert t["torch_summed"] > 0 and t["torch_mgda_ub_ref"] > 0
    else:
        assert t["torch_summed"] == NOT_INSTALLED
    if not HAVE_TORCHJD:
        assert t["torchjd_mgda"] == NOT_INSTALLED


# ----------------------------------------------------------------------------- scaling


def test_scaling_json_and_png(out_dir):
    payload = scaling.main(["--quick", "--repeats", "1", "--steps", "mgda",
                            "--out", str(out_dir), "--threads", "0"])
    assert len(payload["m_sweep"]) == 1 and len(payload["n_sweep"]) == 1
    for r in payload["m_sweep"] + payload["n_sweep"]:
        assert set(r["time_s"]) == {"mgda"}
        assert abs(r["n"] - r["n_target"]) <= r["m"] + 64 + 1 + r["m"]  # one width step
        assert r["xla_bytes"]["mgda"] is None or r["xla_bytes"]["mgda"] > 0
    assert (out_dir / "scaling_quick.json").exists()
    assert (out_dir / "scaling_quick.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- report, run_all


def test_report_tables_generic_json_and_readme(epo_payload, min_norm_payload, train_payload,
                                               out_dir, tmp_path):
    (out_dir / "other_quick.json").write_text(json.dumps(
        {"description": "someone else's benchmark", "rows": [{"m": 2, "time_s": {"a": 1e-3}, "ok": True}]}))
    text = report.build(out_dir, include_quick=True)
    assert "### EPO LP" in text and "### Min-norm" in text and "### Training step" in text
    assert "### Targets of the issue" in text
    assert "### other" in text and "someone else's benchmark" in text and "time_s.a" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\ntail\n")
    report.update_readme("NEW\n", readme)
    body = readme.read_text()
    assert body.startswith("intro\n") and "NEW" in body and "old" not in body and body.endswith("tail\n")


def test_run_all_knows_scripts_and_skips_missing(tmp_path):
    cmd = run_all.command("epo_lp", quick=True, out=str(tmp_path), threads=1)
    assert cmd[1:3] == ["-m", "benchmarks.epo_lp"] and "--quick" in cmd and "--threads" in cmd
    assert {"epo_lp", "min_norm", "train_step", "scaling", "qp_vs_quadprog", "soak"} <= set(run_all.KNOWN)
    assert run_all.main(["--only", "no_such_script", "--no-report", "--out", str(tmp_path)]) == 0
    assert _load(tmp_path / "run_all.json")["missing"] == ["no_such_script"]


def test_results_dir_is_committable():
    import subprocess

    res = subprocess.run(["git", "check-ignore", "-q", "benchmarks/results/x.json"],
                         capture_output=True)
    assert res.returncode == 1  # not ignored
