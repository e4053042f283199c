"""Sphinx configuration of the jaxpareto documentation (``make docs``).

The API pages are generated at build time from the public ``__all__`` lists, so a name
added to the package shows up (and a name without a docstring is caught by
``tests/test_docs.py``) without editing these files:

* ``docs/api/modules/<module>.rst`` (written here, git-ignored): one page per public
  module with an ``autosummary`` table of its ``__all__``;
* ``docs/api/generated/<name>.rst`` (written by ``autosummary``, git-ignored): one page
  per public name.

Nothing is downloaded during the build: the theme (furo) ships its assets, and
MathJax is only *referenced* by URL in the HTML (the browser loads it when a page with
maths is opened).
"""

from __future__ import annotations

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # `examples` for the gallery
sys.path.insert(0, str(DOCS / "_ext"))

# jax on the CPU, quietly, however the build machine is set up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import apigen  # noqa: E402  (docs/_ext/apigen.py)
import docfix  # noqa: E402  (docs/_ext/docfix.py)

import jaxpareto  # noqa: E402

project = "jaxpareto"
author = "jaxpareto maintainers"
copyright = "the jaxpareto maintainers; Apache-2.0"
version = release = jaxpareto.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "gallery",  # docs/_ext/gallery.py: the examples/*.py gallery
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# --- API pages ----------------------------------------------------------------------
apigen.write_module_pages(DOCS / "api" / "modules")
METHOD_MODULES = apigen.write_method_pages(DOCS / "api" / "methods")
# A class exported by jaxpareto and by a submodule is documented once, under the
# submodule; the top-level page names it (autodoc would describe it twice otherwise).
autosummary_context = {"jp_aliases": apigen.class_aliases()}
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# (not autodoc_preserve_defaults: the optax shorthands jp.epo, jp.mgda, ... carry a
# synthesized __signature__ that does not match their source)
add_module_names = False
python_use_unqualified_type_names = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields are documented in the class's ``Attributes:`` section already."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None

# Docstring problems in src/ that the docs work around (the docstrings belong to src/;
# each is listed in docs/README.md with its file and line, for the owner to fix). The
# hooks below (docs/_ext/docfix.py) rewrite two malformed Google-style patterns before
# napoleon parses them; on a well-formed docstring they change nothing:
#
# * an ``Args:`` entry whose comma-separated names wrap onto a second line (napoleon
#   warns "Field list ends without a blank line; unexpected unindent");
# * a ``Raises:`` entry without the ``Type: description`` colon whose lines share one
#   indentation ("ValueError / TypeError at trace time ..."): napoleon renders every
#   line as an exception type of its own (no warning, but a garbled list).
suppress_warnings: list[str] = []

# --- Markdown -----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# --- HTML ---------------------------------------------------------------------------
html_theme = "furo"
html_title = f"jaxpareto {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


def _link_method_notes(app, what, name, obj, options, lines):
    """A function or class whose docstring says "see the module docstring" gets a link
    to that module's page under Method notes (the text users would otherwise not see)."""
    mod = getattr(obj, "__module__", None)
    if what == "module" or mod not in METHOD_MODULES:
        return
    if any("module docstring" in line for line in lines):
        lines += ["", f"Method notes (the module docstring): :doc:`{mod} </api/methods/{mod}>`."]


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", _link_method_notes, priority=600)
    # before napoleon (priority 500) turns the Google sections into reST
    app.connect("autodoc-process-docstring", docfix.process_docstring, priority=400)
