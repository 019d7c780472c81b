"""How an operator's text is quoted in a message: short and printable.

A token of a megabyte, or one carrying escape sequences, must neither flood a log nor
rewrite the terminal that shows the error.
"""

from __future__ import annotations

SHOWN_MAX = 40


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """``text`` quoted, at most ``limit`` characters of it, non-printables escaped."""
    cut = text if len(text) <= limit else text[:limit]
    quoted = repr(cut)
    if len(text) > limit:
        quoted = f"{quoted[:-1]}...{quoted[-1]} ({len(text)} characters)"
    return quoted
