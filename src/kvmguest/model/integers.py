"""Integers as an operator writes them: in main.cf, in OCF parameters, on the command line.

Python's int() reads far more than a number: ``١٢`` (Arabic-Indic digits), ``1_000``,
``+5``, `` 12 ``. None of these is what an operator meant to write, and an integer beyond
32 bits is a typo that would overflow a timer or a counter (VCS integers are 32-bit
signed). Standard library only: the OCF monitor's lean path reads its integers here.
"""

from __future__ import annotations

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def parse_int(text: str) -> int:
    """``text`` as an integer when it is one written plainly: an optional ``-`` and the
    ASCII digits 0-9, within 32 bits. Otherwise ValueError, whose message says what was
    expected ("an integer ..."), for the caller to put after "must be"."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        try:
            int(text)
        except ValueError:
            raise ValueError("an integer") from None
        raise ValueError("an integer written with the digits 0-9 (and a leading '-')")
    value = int(text, 10)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"an integer from {INT_MIN} to {INT_MAX}")
    return value
