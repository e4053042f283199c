"""Peer implementations used as test oracles (TorchJD, LibMTL), imported safely.

LibMTL 1.1.5 (PyPI) is installed with ``--no-deps`` (its requirements would pull a CUDA
torch and torchvision). Its package ``__init__`` imports the model zoo, which needs
torchvision; the weighting modules need only torch and numpy. :func:`libmtl_weighting`
loads ``LibMTL.weighting.<Name>`` under a bare parent package so that ``__init__`` never
runs. Tests that use a peer skip (with the reason) when torch or the peer is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest


def torch():
    """The torch module, or a skip when it is not installed (it is in the dev extra)."""
    return pytest.importorskip("torch")


def libmtl_weighting(name: str):
    """The class ``LibMTL.weighting.<name>.<name>`` (e.g. ``"GradVac"``, ``"DWA"``)."""
    torch()
    if not hasattr(sys.modules.get("LibMTL"), "__jp_stub__"):
        spec = importlib.util.find_spec("LibMTL")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("LibMTL is not installed (make test installs it with --no-deps)")
        parent = types.ModuleType("LibMTL")
        parent.__path__ = list(spec.submodule_search_locations)
        parent.__jp_stub__ = True
        sys.modules["LibMTL"] = parent
        weighting_pkg = types.ModuleType("LibMTL.weighting")
        weighting_pkg.__path__ = [p + "/weighting" for p in parent.__path__]
        sys.modules["LibMTL.weighting"] = weighting_pkg
    module = importlib.import_module(f"LibMTL.weighting.{name}")
    return getattr(module, name)
