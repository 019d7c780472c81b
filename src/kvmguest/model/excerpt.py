"""How a message quotes what the operator wrote: shortly, and printably.

A value in a configuration may be a megabyte long or hold terminal escape sequences; a
message that quotes it whole floods a terminal or a log, or rewrites them. Every message
that quotes operator text goes through :func:`excerpt`.
"""

from __future__ import annotations


def excerpt(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message: at most ``limit`` characters of it, the non-printable
    ones escaped (as repr does), and ``...`` when it was cut."""
    if len(text) <= limit:
        return repr(text)
    shown = repr(text[:limit])
    return f"{shown[:-1]}...{shown[-1]}"
