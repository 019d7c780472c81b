"""Control characters: which ones a configuration refuses, and where it says so.

A NUL or an escape sequence in a value ends up in a libvirt call, a log line or a terminal
(where an escape sequence rewrites what the operator sees), and a Unicode line separator
makes the positions in messages lie. So the C0 controls, DEL, the C1 controls and U+2028/9
are refused anywhere in a file, comments included. Tab, newline and carriage return
separate tokens, but are refused inside a value: in a quoted one, a newline is a missing
closing quote far more often than a wish.

The parser places each in its file; :func:`in_values` checks a configuration that was not
read from a file (the OCF agent's parameters), attribute by attribute.
"""

from __future__ import annotations

import re

from kvmguest.model.config import Block, Config, Diagnostic, Pos
from kvmguest.model.excerpt import excerpt

_ALWAYS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029"
IN_FILE = re.compile(f"[{_ALWAYS}]")
IN_VALUE = re.compile(f"[{_ALWAYS}\t\n\r]")


def pos_at(text: str, offset: int, file: str) -> Pos:
    """The line and column (1-based, as lark counts) of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return Pos(file, line, offset - text.rfind("\n", 0, offset))


def in_file(text: str, file: str) -> Diagnostic | None:
    """The first control character of a file's text, placed; None when there is none."""
    m = IN_FILE.search(text)
    if m is None:
        return None
    return Diagnostic(
        pos_at(text, m.start(), file),
        f"control character {excerpt(m.group())} is not allowed in a configuration file",
    )


def in_quoted(token: str, start: int, text: str, file: str) -> Diagnostic | None:
    """The first control character of the quoted value ``token`` (at ``start`` in
    ``text``), placed; None when there is none."""
    m = IN_VALUE.search(token)
    if m is None:
        return None
    hint = " (a missing closing quote?)" if m.group() == "\n" else ""
    return Diagnostic(
        pos_at(text, start + m.start(), file),
        f"a quoted value may not hold control character {excerpt(m.group())}{hint}",
    )


def _block(block: Block) -> list[Diagnostic]:
    out = []
    values = list(block.attrs.items())
    values += [(f"{n}@{s}", v) for n, per in block.local.items() for s, v in per.items()]
    for name, value in [("name", block.name), *values]:
        items = [value] if isinstance(value, str) else list(value)
        if isinstance(value, dict):
            items += value.values()
        bad = next((m for m in map(IN_VALUE.search, items) if m is not None), None)
        if bad is not None:
            where = block.position(name.partition("@")[0])
            out.append(Diagnostic(where, f"{block.kind} {excerpt(block.name)}: {name}: "
                                         f"control character {excerpt(bad.group())} "
                                         "is not allowed in a value"))  # fmt: skip
    return out


def in_values(cfg: Config) -> list[Diagnostic]:
    """A diagnostic for each attribute (or block name) of ``cfg`` that holds a control
    character: for a configuration whose values did not come through the parser."""
    blocks = [cfg.cluster] if cfg.cluster is not None else []
    blocks += [*cfg.systems.values(), *cfg.groups.values(), *cfg.resources.values()]
    return [d for b in blocks for d in _block(b)]
