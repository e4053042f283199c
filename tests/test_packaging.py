"""The user install path: sdist → wheel → a fresh venv, without the source tree.

Like ``python -m build``, the sdist is built from a copy of the project, and the wheel
from the unpacked sdist (so a file missing from the sdist breaks the wheel too); both
through setuptools' PEP 517 hooks, offline and without build isolation. The wheel is
installed with ``pip install --no-deps --no-index`` into a new ``python -m venv
--without-pip``; its dependencies (jax, optax, numpy) come from this interpreter's
site-packages through a ``.pth`` file appended after the venv's own site-packages, so
the only ``jaxpareto`` the new interpreter can find is the installed wheel. The
quickstart then runs there, in an empty working directory, with ``python -I`` (no
``PYTHONPATH``, no script directory on ``sys.path``).
"""

from __future__ import annotations

import email
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
CORE = {"jax", "jaxlib", "optax", "numpy"}  # what src/ imports; nothing else unconditional

_HOOK = textwrap.dedent(
    """
    import sys
    from setuptools import build_meta
    hook, out = sys.argv[1], sys.argv[2]
    print(getattr(build_meta, hook)(out))
    """
)


def _run(args, cwd, timeout=120, **kwargs):
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build(hook, project, out):
    proc = _run([sys.executable, "-c", _HOOK, hook, str(out)], cwd=project)
    name = proc.stdout.strip().splitlines()[-1]
    path = out / name
    assert path.is_file(), proc.stdout
    return path, proc.stderr


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``(sdist, wheel)``: the sdist from a copy of the project, the wheel from it."""
    tmp = tmp_path_factory.mktemp("packaging")
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src", project / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"),
    )
    out = tmp / "dist"
    out.mkdir()
    sdist, sdist_log = _build("build_sdist", project, out)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(tmp / "unpacked", filter="data")
        else:
            tar.extractall(tmp / "unpacked")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel, wheel_log = _build("build_wheel", unpacked, out)
    # setuptools warns (SetuptoolsDeprecationWarning) about a TOML-table license, a
    # License classifier next to a license expression, and similar metadata slips.
    for log in (sdist_log, wheel_log):
        assert "Deprecat" not in log, log
    return sdist, wheel


def test_sdist_contents(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for need in ("pyproject.toml", "README.md", "PKG-INFO", "src/jaxpareto/__init__.py",
                 "src/jaxpareto/py.typed", "src/jaxpareto/weighting/__init__.py"):
        assert need in names, need


def test_wheel_metadata(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_string(zf.read(meta_name).decode())
    assert "jaxpareto/py.typed" in names  # PEP 561
    assert "jaxpareto/weighting/epo.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert meta.get_all("Project-URL")
    requires = meta.get_all("Requires-Dist")
    core = set()
    for req in requires:
        if "extra ==" not in req:
            core.add(req.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip())
    assert core == CORE, requires
    assert set(meta.get_all("Provides-Extra")) == {"dev", "demo", "bench"}
    dev = [r for r in requires if 'extra == "dev"' in r]
    for name in ("scipy", "chex", "quadprog", "moocore", "hypothesis"):
        assert any(r.startswith(name) for r in dev), (name, dev)


QUICKSTART = textwrap.dedent(
    """
    import json, pathlib, sys
    import jax, jax.numpy as jnp, optax
    import jaxpareto as jp

    problem = jp.problems.epo_synthetic(n=4)
    tx = optax.chain(jp.mgda(num_tasks=2), optax.sgd(0.1))
    params = jnp.array([0.8, -0.6, 0.9, 0.7])  # off the Pareto set
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        losses, jac = jp.value_and_jacobian(problem.loss_fn)(params)
        updates, state = tx.update(jac, state, params, losses=losses)
        return optax.apply_updates(params, updates), state, losses

    history = []
    for _ in range(30):
        params, state, losses = step(params, state)
        history.append([float(v) for v in losses])
    print(json.dumps({
        "file": jp.__file__,
        "prefix": sys.prefix,
        "typed": pathlib.Path(jp.__file__).with_name("py.typed").is_file(),
        "history": history,
    }))
    """
)


def test_wheel_installs_and_runs_outside_the_source_tree(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet",
         str(wheel)],
        cwd=tmp_path,
    )
    (venv_site,) = json.loads(
        _run([str(python), "-I", "-c", "import json, site; "
              "print(json.dumps(site.getsitepackages()))"], cwd=tmp_path).stdout
    )[:1]
    # jax, optax, numpy from this interpreter; appended to sys.path after the venv's
    # own site-packages (a .pth line is a path, not a site dir: the editable install's
    # own .pth files there are not executed), so `import jaxpareto` finds the wheel.
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(venv_site) / "_jaxpareto_test_deps.pth").write_text("\n".join(parents) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["JAX_PLATFORMS"] = "cpu"
    proc = _run([str(python), "-I", "-c", QUICKSTART], cwd=work, env=env)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    installed = Path(report["file"]).resolve()
    assert installed.is_relative_to(venv.resolve()), report["file"]
    assert not installed.is_relative_to(ROOT), report["file"]
    assert report["typed"]
    first, last = report["history"][0], report["history"][-1]
    # MGDA steps along a common descent direction: no loss rises, their sum falls.
    assert all(b <= a + 1e-6 for a, b in zip(first, last)), report["history"]
    assert sum(last) < sum(first) - 1e-3, report["history"]
