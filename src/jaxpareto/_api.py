"""API hygiene applied once, when :mod:`jaxpareto` is imported.

* ``dir()`` of a public module lists its ``__all__``: the modules import ``jax``,
  ``jnp``, ``np``, ``math``, ... for their own use, and those names are not part of the
  API, so each public module gets a module-level ``__dir__`` (PEP 562) returning its
  ``__all__`` and its dunder attributes. Attribute access is unchanged.
* Every public NamedTuple (results, states, ``jp.ppe.Trace``) prints shapes and scalars
  (:func:`jaxpareto.weighting.base.short_repr`) instead of whole arrays.
"""

from __future__ import annotations

import sys
import types

__all__ = ["clean_dirs", "finish"]


def _dir_of(module: types.ModuleType):
    def __dir__():
        public = set(getattr(module, "__all__", ()))
        dunders = {n for n in vars(module) if n.startswith("__") and n.endswith("__")}
        return sorted(public | dunders)

    return __dir__


def clean_dirs(package: str = "jaxpareto") -> None:
    """Give every loaded public module of ``package`` that defines ``__all__`` (no
    ``_private`` path component) a ``__dir__`` limited to its API."""
    for module in _public_modules(package):
        if "__dir__" not in vars(module):
            module.__dir__ = _dir_of(module)


def _public_modules(package: str):
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        if any(part.startswith("_") for part in name.split(".")):
            continue
        if hasattr(module, "__all__"):
            yield module


def finish(package: str = "jaxpareto") -> None:
    """Short reprs for every NamedTuple defined in the package (public results and
    states, and the states of private helper modules that weightings return), then
    :func:`clean_dirs`."""
    from jaxpareto.weighting.base import install_short_reprs  # noqa: PLC0415

    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        own = [k for k, v in vars(module).items() if getattr(v, "__module__", None) == name]
        install_short_reprs(vars(module), own)
    clean_dirs(package)
