"""The documentation site (docs/): the fast equivalent of ``make docs`` for ``make test``.

A full ``sphinx-build -W`` takes about a minute of CPU (it imports every module and
renders ~200 pages), so ``make docs`` runs it and this file checks, in seconds, what
would break it or leave a page empty:

* every public name (the ``__all__`` of ``jaxpareto`` and of each public module) has a
  docstring and is listed on its module's API page, and every module page is in the API
  index's toctree;
* every ``{include}`` of README.md in docs/ finds its start/end markers;
* the gallery covers every ``examples/*.py`` with its docstring, and every committed
  gallery figure belongs to an example;
* the ``>>>`` examples in the public docstrings run, and so do the complete Python
  snippets of the user guide;
* the docs build downloads nothing (no extension that fetches at build time).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pathlib
import re
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import apigen  # noqa: E402  (docs/_ext/apigen.py)
import docfix  # noqa: E402
import gallery  # noqa: E402

# Public constants allowed without a ``#:`` doc comment in src/ (their pages would show
# the value only): none; a new undocumented constant fails the test.
UNDOCUMENTED_CONSTANTS: dict[str, set[str]] = {}

# The modules the issue asks an API page for (beside jaxpareto's own __all__).
REQUIRED_MODULES = ("weighting", "ppe", "metrics", "problems", "models", "data", "hypernetwork",
                    "sharding")


def _own_doc(obj) -> str:
    """The docstring written for ``obj`` (not one inherited or generated)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        fields = getattr(obj, "_fields", None)
        if fields is not None and doc == f"{obj.__name__}({', '.join(fields)})":
            return ""  # the NamedTuple default
        return inspect.cleandoc(doc)
    return inspect.getdoc(obj) or ""


def _attr_doc(modname: str, name: str) -> str:
    """The ``#:`` comment (or string after the assignment) of a module constant."""
    from sphinx.pycode import ModuleAnalyzer

    cands = [modname] + sorted(m for m in sys.modules if m.startswith(modname + "."))
    for cand in cands:
        try:
            docs = ModuleAnalyzer.for_module(cand).find_attr_docs()
        except Exception:  # noqa: BLE001 - a compiled or source-less module
            continue
        if ("", name) in docs:
            return "\n".join(docs[("", name)]).strip()
    return ""


def _entries():
    for modname in apigen.documented_modules():
        mod = importlib.import_module(modname)
        for name in apigen.public_names(modname):
            yield modname, name, getattr(mod, name)


def test_documented_modules_cover_the_public_modules():
    import jaxpareto as jp

    mods = apigen.documented_modules()
    for name in REQUIRED_MODULES:
        assert f"jaxpareto.{name}" in mods
    for name in jp.__all__:
        if isinstance(getattr(jp, name), types.ModuleType):
            assert f"jaxpareto.{name}" in mods, name
    toctree = (DOCS / "api" / "index.md").read_text()
    for modname in mods:
        assert f"modules/{modname}\n" in toctree, f"{modname} missing from docs/api/index.md"


def test_every_public_name_has_a_docstring():
    missing, constants = [], []
    for modname, name, obj in _entries():
        if isinstance(obj, types.ModuleType):
            continue
        if inspect.isclass(obj) or callable(obj):
            if not _own_doc(obj).strip():
                missing.append(f"{modname}.{name}")
        elif isinstance(type(obj), type) and _own_doc(type(obj)) and type(obj).__module__.startswith("jaxpareto"):
            continue  # an enum member (jp.ppe.Status.X): documented by its class
        elif not _attr_doc(modname, name) and name not in UNDOCUMENTED_CONSTANTS.get(modname, ()):
            constants.append(f"{modname}.{name}")
    assert not missing, f"public names without a docstring: {missing}"
    assert not constants, f"public constants without a `#:` doc comment: {constants}"


def test_every_public_name_is_on_its_api_page():
    for modname in apigen.documented_modules():
        page = apigen.module_page(modname)
        listed = re.findall(r"^   (\w+)$", page, re.M)
        assert sorted(listed) == sorted(apigen.public_names(modname)), modname
        assert ":toctree: ../generated" in page


def test_class_aliases_point_at_documented_classes():
    owned = {f"{m}.{n}" for m, n, _ in _entries() if m != "jaxpareto"}
    aliases = apigen.class_aliases()
    assert "jaxpareto.EpoResult" in aliases
    for alias, owner in aliases.items():
        assert owner in owned and alias.startswith("jaxpareto.")


def test_readme_includes_find_their_markers():
    pages = sorted(DOCS.rglob("*.md"))
    seen = 0
    for page in pages:
        if "_build" in page.parts:
            continue
        text = page.read_text()
        for m in re.finditer(r"```\{include\} (\S+)\n((?::[\w-]+: .*\n)*)```", text):
            target = (page.parent / m.group(1)).resolve()
            assert target.is_file(), f"{page}: {m.group(1)}"
            src = target.read_text()
            opts = dict(re.findall(r":([\w-]+): \"?(.*?)\"?\n", m.group(2)))
            start = src.find(opts["start-after"]) if "start-after" in opts else 0
            assert start >= 0, f"{page.name}: marker {opts['start-after']!r} not in {target.name}"
            if "end-before" in opts:
                end = src.find(opts["end-before"], start)
                assert end > start, f"{page.name}: marker {opts['end-before']!r} after the start"
            seen += 1
    assert seen >= 8


def test_gallery_covers_every_example():
    examples = gallery.examples()
    names = {p.name for p in (ROOT / "examples").glob("*.py")} - {"__init__.py"}
    assert {p.name for p in examples} == names and names
    for path in examples:
        assert gallery.docstring(path).strip(), f"{path.name} has no docstring"
    written = {n for p in examples + gallery.scripts("benchmarks") for n in gallery.figure_names(p)}
    assert "epo_synthetic.png" in written
    for fig in (DOCS / "_static" / "gallery").glob("*.png"):
        assert fig.name in written, f"{fig.name}: no example writes it"
    assert "jaxpareto-gallery:: examples" in (DOCS / "gallery.rst").read_text()


def test_docfix_repairs_only_the_malformed_patterns():
    good = ["Args:", "  a: x.", "  b, c: y.", "", "Raises:", "  ValueError: bad."]
    fixed = list(good)
    docfix.process_docstring(None, "function", "f", None, None, fixed)
    assert fixed == good
    wrapped = ["Args:", "  a: x.", "  b, c,", "    d: y.", "", "Raises:",
               "  ValueError / TypeError at trace time for", "  a bad option."]
    docfix.process_docstring(None, "function", "f", None, None, wrapped)
    assert wrapped == ["Args:", "  a: x.", "  b, c, d: y.", "", "Raises:",
                       "  ValueError / TypeError: at trace time for a bad option."]


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    seen = set()
    for _, _, obj in _entries():
        if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)
                                   or isinstance(obj, types.ModuleType)):
            continue
        seen.add(id(obj))
        for test in finder.find(obj, globs={"jp": importlib.import_module("jaxpareto")}):
            runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed"


def _guide_snippets():
    for page in sorted((DOCS / "guide").glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            if block.startswith("import "):  # complete programs, not fragments
                yield pytest.param(page, block, id=page.stem)


@pytest.mark.parametrize("page, block", list(_guide_snippets()))
def test_guide_snippet_runs(page, block, capsys):
    exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})  # noqa: S102


def test_guide_has_runnable_snippets():
    assert {p.values[0].stem for p in _guide_snippets()} >= {"pipeline", "hypernetworks"}


def test_build_is_offline():
    conf = (DOCS / "conf.py").read_text()
    assert "intersphinx" not in conf and "sphinx.ext.mathjax" in conf
    assert "myst_parser" in conf and "sphinx.ext.napoleon" in conf
