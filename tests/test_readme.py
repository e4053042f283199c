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
