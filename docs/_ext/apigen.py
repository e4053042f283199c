"""Writes one reST page per public module of jaxpareto, listing its ``__all__``.

Called from ``docs/conf.py`` before the build. Each page has the module docstring and an
``autosummary`` table whose ``:toctree:`` makes ``sphinx.ext.autosummary`` write one
page per public name into ``docs/api/generated/``.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import types

#: The documented modules, in the order of the API index. ``jaxpareto`` stands for the
#: names exported at the top level that are not modules themselves.
MODULES = (
    "jaxpareto",
    "jaxpareto.weighting",
    "jaxpareto.ppe",
    "jaxpareto.hypernetwork",
    "jaxpareto.sharding",
    "jaxpareto.metrics",
    "jaxpareto.problems",
    "jaxpareto.models",
    "jaxpareto.data",
    "jaxpareto.checkpoint",
)

_KINDS = (
    ("Classes", lambda o: inspect.isclass(o)),
    ("Functions", lambda o: callable(o) and not inspect.isclass(o)),
    ("Constants", lambda o: True),
)


def public_names(modname: str) -> list[str]:
    """The documented names of ``modname``: its ``__all__`` (modules excluded)."""
    mod = importlib.import_module(modname)
    return [n for n in mod.__all__ if not isinstance(getattr(mod, n), types.ModuleType)]


def documented_modules() -> list[str]:
    """``MODULES`` plus every public submodule of ``jaxpareto.__all__`` not in it."""
    import jaxpareto

    subs = [f"jaxpareto.{n}" for n in jaxpareto.__all__
            if isinstance(getattr(jaxpareto, n), types.ModuleType)]
    return list(MODULES) + [m for m in subs if m not in MODULES]


def class_aliases() -> dict[str, str]:
    """``{"jaxpareto.X": "jaxpareto.sub.X"}`` for every class exported at the top level
    that a documented submodule exports too (the same object)."""
    import jaxpareto

    owners: dict[int, str] = {}
    for modname in documented_modules():
        if modname == "jaxpareto":
            continue
        mod = importlib.import_module(modname)
        for n in public_names(modname):
            obj = getattr(mod, n)
            if inspect.isclass(obj):
                owners.setdefault(id(obj), f"{modname}.{n}")
    return {f"jaxpareto.{n}": owners[id(getattr(jaxpareto, n))]
            for n in public_names("jaxpareto")
            if inspect.isclass(getattr(jaxpareto, n)) and id(getattr(jaxpareto, n)) in owners}


def module_page(modname: str) -> str:
    mod = importlib.import_module(modname)
    title = "Top level: ``jaxpareto``" if modname == "jaxpareto" else f"``{modname}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", "",
             f".. currentmodule:: {modname}", ""]
    names = public_names(modname)
    seen: set[str] = set()
    for heading, pred in _KINDS:
        group = [n for n in names if n not in seen and pred(getattr(mod, n))]
        if not group:
            continue
        seen.update(group)
        lines += [heading, "-" * len(heading), "", ".. autosummary::",
                  "   :toctree: ../generated", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in group] + [""]
    return "\n".join(lines)


def method_modules() -> list[str]:
    """The implementation modules of ``jaxpareto.weighting`` with a docstring: each
    method's mathematics, paper, status rules and derivative live there, and the
    functions' docstrings point to it ("see the module docstring")."""
    import pkgutil

    import jaxpareto.weighting as wt

    out = []
    for info in pkgutil.iter_modules(wt.__path__):
        if info.name.startswith("_"):
            continue
        name = f"{wt.__name__}.{info.name}"
        if (importlib.import_module(name).__doc__ or "").strip():
            out.append(name)
    return out


def method_page(modname: str) -> str:
    """A page with the module docstring alone (its names are documented elsewhere)."""
    title = f"``{modname}``"
    return "\n".join([title, "=" * len(title), "", f".. automodule:: {modname}",
                      "   :no-members:", "   :no-index:", "", "The names it exports are listed under "
                      ":doc:`jaxpareto.weighting <../modules/jaxpareto.weighting>`.", ""])


def write_method_pages(outdir: pathlib.Path) -> list[str]:
    """Writes ``outdir/<module>.rst`` for :func:`method_modules`; returns the names."""
    outdir.mkdir(parents=True, exist_ok=True)
    names = method_modules()
    for modname in names:
        path = outdir / f"{modname}.rst"
        text = method_page(modname)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    index = outdir / "index.rst"
    text = "\n".join(["Method notes", "============", "",
                      "The mathematics, paper references, status rules and derivatives of each "
                      "weighting, from the docstrings of the modules that implement them.", "",
                      ".. toctree::", "   :maxdepth: 1", ""] + [f"   {n}" for n in names] + [""])
    if not index.exists() or index.read_text() != text:
        index.write_text(text)
    return names


def write_module_pages(outdir: pathlib.Path) -> list[pathlib.Path]:
    """Writes ``outdir/<module>.rst`` for every documented module (only when changed)."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    wanted = set()
    for modname in documented_modules():
        path = outdir / f"{modname}.rst"
        wanted.add(path.name)
        text = module_page(modname)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for stale in outdir.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    return written
