"""The README's code blocks run verbatim."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_block(section: str) -> str:
    text = README.read_text()
    start = text.index(f"## {section}")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, f"no python block under '## {section}'"
    return block.group(1)


def test_quickstart_runs_and_reaches_the_ray():
    code = _python_block("Quickstart")
    namespace: dict = {}
    exec(compile(code, "README-quickstart", "exec"), namespace)
    losses = np.asarray(namespace["losses"])
    r = np.asarray(namespace["r"])
    rl = r * losses
    assert np.all(np.isfinite(losses))
    assert rl @ np.ones(2) / (np.linalg.norm(rl) * np.sqrt(2)) > 0.999


def test_navigation_snippet_moves_along_the_front():
    code = _python_block("Navigating the Pareto front")
    namespace: dict = {}
    exec(compile(code, "README-navigation", "exec"), namespace)
    problem, nav = namespace["problem"], namespace["nav"]
    start = np.asarray(problem.loss_fn(problem.pareto_set(0.0)))
    improved = np.asarray(namespace["improved"])
    # improve(0, 0.2): the first loss drops by the amount asked, the second rises.
    np.testing.assert_allclose(start[0] - improved[0], 0.2, atol=1e-3)
    assert improved[1] > start[1]
    rl = np.array([2.0, 1.0]) * np.asarray(nav.losses)
    assert rl.sum() / (np.linalg.norm(rl) * np.sqrt(2)) > 0.9999
    # Still on the analytic Pareto set (the segment θ = t·1/√n).
    assert float(problem.distance_to_pareto_set(nav.params)) < 1e-5
