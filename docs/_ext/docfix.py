"""Repairs two malformed Google-style docstring patterns before napoleon reads them.

The docstrings live in ``src/``; these repairs only keep the rendered pages right until
the docstrings are fixed there (docs/README.md lists the places). Both are no-ops on a
well-formed docstring.
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_EXC = re.compile(r"^(\s*)((?:[A-Z]\w*(?:Error|Warning|Exception))(?:\s*(?:/|,|or)\s*[A-Z]\w*)*)\s+(\S.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _sections(lines: list[str]):
    """Yields ``(name, start, end)``: the body lines ``[start, end)`` of each section."""
    heads = [(i, m.group(2), _indent(lines[i])) for i, l in enumerate(lines)
             if (m := _SECTION.match(l))]
    for i, name, ind in heads:
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > ind):
            j += 1
        yield name, i + 1, j


def join_wrapped_arg_names(lines: list[str]) -> bool:
    """``a, b,`` / ``    c: text`` in ``Args:`` -> ``a, b, c: text``."""
    changed = False
    for name, start, end in list(_sections(lines)):
        if name not in ("Args", "Arguments", "Parameters", "Keyword Args"):
            continue
        i = start
        while i + 1 < end:
            cur, nxt = lines[i], lines[i + 1]
            if (cur.strip() and cur.rstrip().endswith(",") and ":" not in cur
                    and _indent(nxt) > _indent(cur) and ":" in nxt):
                lines[i:i + 2] = [cur.rstrip() + " " + nxt.strip()]
                end -= 1
                changed = True
                continue
            i += 1
        if changed:
            join_wrapped_arg_names(lines)  # indices moved: rescan the rest
            return True
    return changed


def fix_raises_without_colon(lines: list[str]) -> bool:
    """``Raises:`` / ``ValueError / TypeError at trace time ...`` (lines at one indent)
    -> one entry ``ValueError / TypeError: at trace time ...``."""
    for name, start, end in _sections(lines):
        if name != "Raises":
            continue
        body = [i for i in range(start, end) if lines[i].strip()]
        if not body or re.match(r"^\s*[A-Z]\w*(\s*(/|,|or)\s*[A-Z]\w*)*\s*:", lines[body[0]]):  # well-formed
            continue
        m = _EXC.match(lines[body[0]])
        if not m or any(_indent(lines[i]) != _indent(lines[body[0]]) for i in body):
            continue
        # the entry runs to the first blank line
        stop = start
        while stop < end and lines[stop].strip():
            stop += 1
        text = " ".join([m.group(3)] + [lines[i].strip() for i in range(start + 1, stop)])
        lines[start:stop] = [f"{m.group(1)}{m.group(2)}: {text}"]
        return True
    return False


def process_docstring(app, what, name, obj, options, lines):
    join_wrapped_arg_names(lines)
    fix_raises_without_colon(lines)
