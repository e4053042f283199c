"""The ``jaxpareto-gallery`` directive: every ``examples/*.py`` with its docstring.

For each example (sorted by file name) it renders the module docstring (reST, as
written in the example) and, for each PNG the example writes (the ``"NAME.png"``
literals in its source) that exists in the repository (``benchmarks/results/``,
``examples/``, ``docs/_static/gallery/``), the figure. A figure that is not committed
is named with the command that produces it. Examples are read with ``ast``, never
imported, so building the docs runs none of them.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIGURE_DIRS = ("benchmarks/results", "examples", "docs/_static/gallery")


def scripts(folder: str = "examples") -> list[pathlib.Path]:
    """The scripts of ``folder`` (``examples`` or ``benchmarks``), sorted by name."""
    return sorted(p for p in (ROOT / folder).glob("*.py") if not p.name.startswith("_"))


def examples() -> list[pathlib.Path]:
    return scripts("examples")


def docstring(path: pathlib.Path) -> str:
    """The module docstring, less references to the project's issue tracker
    ("(issue 11, item 3)"), which readers of the site do not have."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return re.sub(r"\s*\(issue \d+[^)]*\)", "", doc)


def figure_names(path: pathlib.Path) -> list[str]:
    """PNG file names the example writes; ``{a,b}`` / f-string braces are not expanded."""
    src = path.read_text(encoding="utf-8")
    names: list[str] = []
    for m in re.finditer(r"([A-Za-z0-9_]*)(?:\{([A-Za-z0-9_,]+)\})?([A-Za-z0-9_]*)\.png", src):
        pre, alts, post = m.groups()
        if alts is None:
            stems = [pre + post]
        elif "," in alts:  # "name_{a,b}.png" in a docstring: both files
            stems = [pre + a + post for a in alts.split(",")]
        else:  # an f-string field: the literal alternatives are listed elsewhere
            stems = []
        names += [s for s in stems if s and s not in names]
    return [f"{n}.png" for n in names]


def find_figure(name: str) -> pathlib.Path | None:
    for d in FIGURE_DIRS:
        p = ROOT / d / name
        if p.is_file():
            return p
    return None


class GalleryDirective(SphinxDirective):
    """``.. jaxpareto-gallery:: examples`` (or ``benchmarks``, with ``:only-with-figures:``)."""

    has_content = False
    optional_arguments = 1
    option_spec = {"only-with-figures": lambda arg: True}

    def run(self) -> list[nodes.Node]:
        srcdir = pathlib.Path(self.env.srcdir)
        folder = self.arguments[0] if self.arguments else "examples"
        out: list[str] = []
        for path in scripts(folder):
            self.env.note_dependency(str(path))
            if "only-with-figures" in self.options and not any(
                    find_figure(n) for n in figure_names(path)):
                continue
            title = f"``{folder}/{path.name}``"
            out += [f".. _{folder}-{path.stem}:", "", title, "-" * len(title), ""]
            out += docstring(path).splitlines() + [""]
            figs = figure_names(path)
            found = [(n, find_figure(n)) for n in figs]
            for name, fig in found:
                if fig is not None:
                    rel = "/" + os.path.relpath(fig, srcdir)  # "/" = relative to docs/
                    out += [f".. figure:: {rel}", "   :width: 90%", "",
                            f"   ``{name}`` ({fig.relative_to(ROOT).parent}/)", ""]
            missing = [n for n, f in found if f is None]
            if missing:
                names = ", ".join(f"``{n}``" for n in missing)
                out += [f"*Figures written by this example (not committed; run it to produce "
                        f"them):* {names}.", ""]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(out, source="examples/"), container)
        return container.children


def setup(app):
    app.add_directive("jaxpareto-gallery", GalleryDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
