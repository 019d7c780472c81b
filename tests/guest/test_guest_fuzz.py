"""Fuzzers of the two readers a hostile DR payload reaches in the guest.

Each mutates one valid input 5,000 times from a fixed seed (so a failure reproduces) and
requires that only the documented errors come out: :class:`PayloadError` and its subclasses,
which ``kvmguest-net-reconfig`` turns into exit codes 3-5 having changed nothing. What is
accepted must also pass the field checks again and hold no line break, since every field
ends up in a line of a configuration file.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvmguest.guest.iso import build_iso, read_image
from kvmguest.guest.payload import (
    DrPayload,
    PayloadError,
    from_json,
    payload_from_dropts,
    to_dict,
    to_json,
)

from .guest_testlib import SITE_B

RUNS = 5000
SEED = 20261206
_SECTOR = 2048
# Sectors 16 up to the payload's: volume descriptors, path tables, directory records.
_METADATA = range(16 * _SECTOR, 31 * _SECTOR)

# Values that have got past field checks in other programs: line breaks, look-alike digits,
# separators, overlong and odd types.
HOSTILE_VALUES: list[Any] = [
    "eth0\n",
    "eth0\nDNS=192.0.2.66",
    "evil\n.com",
    "a.example\nnameserver 192.0.2.66",
    "198.51.100.10\n",
    "\uff11\uff19\uff18.51.100.10",
    "198.51.100.1\u0660",
    "\u00b2\u2074",
    "1_000",
    "\u2028",
    "x" * 300,
    "a." * 130 + "example",
    ["192.0.2.1"] * 40,
    ["a.example"] * 40,
    [["nested"]],
    {"key": "value"},
    10**40,
    -1,
    0,
    1e400,
    float("nan"),
    True,
    None,
    "",
]
Mutator = Callable[[random.Random, bytes], bytes]


def _flip_byte(rng: random.Random, data: bytes) -> bytes:
    pos = rng.randrange(len(data))
    return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]


def _flip_bit(rng: random.Random, data: bytes) -> bytes:
    pos = rng.randrange(len(data))
    return data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _splice(rng: random.Random, data: bytes) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randrange(1, 64)]
    pos = rng.randrange(len(data))
    return data[:pos] + chunk + data[pos + rng.choice((0, len(chunk))) :]


def _delete(rng: random.Random, data: bytes) -> bytes:
    pos = rng.randrange(len(data))
    return data[:pos] + data[pos + rng.randrange(1, 32) :]


BYTE_MUTATORS: list[Mutator] = [_flip_byte, _flip_bit, _truncate, _splice, _delete]


def _hostile_field(rng: random.Random, data: bytes) -> bytes:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(obj, dict) or not obj:
        return data
    key = rng.choice(sorted(obj))
    value = rng.choice(HOSTILE_VALUES)
    if isinstance(obj[key], list) and not isinstance(value, list) and rng.random() < 0.5:
        obj[key] = [*obj[key], value]
    else:
        obj[key] = value
    return json.dumps(obj).encode()


def _nest(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice((3, 10, 1000, 30000))
    pos = rng.randrange(len(data))
    return data[:pos] + b"[" * depth + data[pos:] + b"]" * rng.choice((0, depth))


def _huge_number(rng: random.Random, data: bytes) -> bytes:
    number = rng.choice((b"9" * 5000, b"1e400", b"-0", b"24.0", b"0x18", b"1_000", b"NaN"))
    return data.replace(b"24", number, 1)


def _unicode_digit(rng: random.Random, data: bytes) -> bytes:
    digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
    pos = rng.choice(digits)
    other = rng.choice(("\u00b2", "\u0661", "\u0662", "\uff11", "\u07c2", "\U0001d7d0")).encode()
    return data[:pos] + other + data[pos + 1 :]


def _break_string(rng: random.Random, data: bytes) -> bytes:
    quotes = [i for i, b in enumerate(data) if b == ord('"')]
    pos = rng.choice(quotes) + rng.choice((0, 1))
    brk = rng.choice((b"\\n", b"\\r", b"\\u2028", b"\\u0085", b"\\u0000", b"\n", b"\\t"))
    return data[:pos] + brk + data[pos:]


PAYLOAD_MUTATORS: list[Mutator] = [
    *BYTE_MUTATORS,
    _hostile_field,
    _nest,
    _huge_number,
    _unicode_digit,
    _break_string,
]


def _mutate(rng: random.Random, data: bytes, mutators: list[Mutator]) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not data:
            break
        try:
            data = rng.choice(mutators)(rng, data)
        except IndexError:
            continue  # no digit or quote left to mutate: try another
    return data


def _check_accepted(payload: DrPayload) -> None:
    """What a reader returns is what the checks accept, and fits on a line."""
    assert from_json(to_json(payload)) == payload
    for value in to_dict(payload).values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                assert text.isprintable(), repr(text)


def _fuzz(
    seed_input: bytes, mutators: list[Mutator], read: Callable[[bytes], DrPayload]
) -> tuple[int, list[str]]:
    """Feed RUNS mutants to ``read``; return how many were accepted and every escape."""
    rng = random.Random(SEED)
    accepted = 0
    escapes: list[str] = []
    slowest = 0.0
    for run in range(RUNS):
        data = _mutate(rng, seed_input, mutators)
        started = time.perf_counter()
        try:
            _check_accepted(read(data))
            accepted += 1
        except PayloadError:
            pass
        except Exception as exc:  # the fuzzer's purpose: report any other, with its input
            escapes.append(f"run {run}: {type(exc).__name__}: {exc} (input {data[:80]!r}...)")
        slowest = max(slowest, time.perf_counter() - started)
    # A hostile input must not stall the boot either.
    assert slowest < 2.0, f"one input took {slowest:.1f} s"
    return accepted, escapes


@pytest.fixture(scope="module")
def valid_payload() -> DrPayload:
    return payload_from_dropts(SITE_B, "siteB", generated="2024-05-01T12:00:00Z")


def test_payload_reader_fuzz(valid_payload: DrPayload) -> None:
    accepted, escapes = _fuzz(to_json(valid_payload).encode(), PAYLOAD_MUTATORS, from_json)
    assert not escapes, f"{len(escapes)} escapes, first: {escapes[:5]}"
    # The mutants reach past the JSON parser into the field checks, and some survive them
    # (a changed DNS server, a flipped letter of the site): the fuzzer is not all noise.
    assert 0 < accepted < RUNS


def _iso_mutators() -> list[Mutator]:
    def in_metadata(mutator: Mutator) -> Mutator:
        def mutate(rng: random.Random, data: bytes) -> bytes:
            head, meta = data[: _METADATA.start], data[_METADATA.start : _METADATA.stop]
            if not meta:
                return data
            return (
                head
                + mutator(rng, meta)[: len(meta)].ljust(len(meta), b"\0")
                + data[_METADATA.stop :]
            )

        return mutate

    def big_field(rng: random.Random, data: bytes) -> bytes:
        # Extents and lengths are 32-bit fields: point one far away or make it huge.
        pos = rng.randrange(_METADATA.start, _METADATA.stop - 4)
        value = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)))
        return data[:pos] + value.to_bytes(4, rng.choice(("little", "big"))) + data[pos + 4 :]

    return [*(in_metadata(m) for m in BYTE_MUTATORS), big_field, _truncate, _flip_byte]


def test_iso_reader_fuzz(valid_payload: DrPayload, tmp_path: Path) -> None:
    image = tmp_path / "dr.iso"
    build_iso(valid_payload, image)
    original = image.read_bytes()
    assert read_image(io.BytesIO(original), "fuzz") == valid_payload

    accepted, escapes = _fuzz(
        original, _iso_mutators(), lambda data: read_image(io.BytesIO(data), "fuzz")
    )
    assert not escapes, f"{len(escapes)} escapes, first: {escapes[:5]}"
    assert 0 < accepted < RUNS
