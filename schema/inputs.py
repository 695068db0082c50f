"""Reading what users hand us, with bounded memory: text files a line at a time, and JSON that
only holds values a store can keep and print back as JSON.

Every problem is an :class:`InputError` whose message starts with the place (`file:line`), so a
corpus, a labels file and an env file all fail the same way. A line longer than
:data:`MAX_LINE_BYTES`, and a file that never ends a line (``/dev/zero``), stop the read at
once instead of filling memory.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from circuitstore.schema.errors import InputError

MAX_LINE_BYTES = 1 << 20
"""One line of a corpus, labels or env file: 1 MiB, about 250,000 tokens of English, far past
any model's context."""
MAX_DOCUMENT_BYTES = 1 << 30
"""A file read whole (a labels file that is one JSON array): 1 GiB; the published GPT-2
explanations are about 60 MB."""
MAX_INT_DIGITS = 40
"""Digits of a JSON integer: 64-bit values have at most 19; Python's own limit is 4,300, and a
longer one raises where it is converted, not where it is read."""
GZIP_MAGIC = b"\x1f\x8b"


class MalformedJSONError(ValueError):
    """Text that is not JSON at all (as opposed to JSON holding a value we refuse); `msg`,
    `lineno` and `colno` are the parser's."""

    def __init__(self, error: json.JSONDecodeError) -> None:
        super().__init__(f"malformed JSON ({error.msg} at column {error.colno})")
        self.msg, self.lineno, self.colno = error.msg, error.lineno, error.colno


def text_lines(
    path: Path, max_line: int = MAX_LINE_BYTES, gunzip: bool = False
) -> Iterator[tuple[int, str]]:
    """`(number, text)` for each line of a UTF-8 file, as :func:`byte_lines` reads them; invalid
    UTF-8 stops the read with one line naming the file and the line."""
    for number, raw in byte_lines(path, max_line, gunzip):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}:{number}: invalid UTF-8 at byte {exc.start} of the line"
            ) from None


def byte_lines(
    path: Path, max_line: int = MAX_LINE_BYTES, gunzip: bool = False
) -> Iterator[tuple[int, bytes]]:
    """`(number, bytes)` for each line of a file (end of line removed), read a line at a time. A
    UTF-8 byte-order mark is dropped; a NUL byte (a binary file), a line over `max_line` bytes,
    and (with `gunzip`, for files that start with gzip's magic) damaged compressed data each
    stop the read with one line naming the file and the line."""
    offset = 0
    with _open(path, gunzip) as stream:
        for number in count(1):
            raw = _readline(path, stream, max_line)
            if not raw:
                return
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            nul = raw.find(b"\x00")
            if nul >= 0:
                raise InputError(
                    f"{path}: binary file (NUL byte at offset {offset + nul}); expected UTF-8 text"
                )
            if len(raw) > max_line and not raw.endswith(b"\n"):
                raise InputError(
                    f"{path}:{number}: a line longer than {max_line:,} bytes (or one that never "
                    "ends); one line holds one entry"
                )
            offset += len(raw)
            yield number, raw.rstrip(b"\r\n")


def read_document(path: Path, limit: int = MAX_DOCUMENT_BYTES, gunzip: bool = False) -> bytes:
    """A whole file (decompressed where it starts with gzip's magic and `gunzip`), refused past
    `limit` bytes."""
    with _open(path, gunzip) as stream:
        try:
            data = stream.read(limit + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    if len(data) > limit:
        raise InputError(f"{path}: larger than {limit:,} bytes; split it into smaller files")
    return data


def starts_with(path: Path, prefix: bytes, gunzip: bool = False) -> bool:
    """Whether the file's first non-blank bytes are `prefix` (after decompression)."""
    with _open(path, gunzip) as stream:
        try:
            head = stream.read(4096)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    return head.lstrip().startswith(prefix)


def strict_json(text: str) -> Any:
    """`json.loads`, refusing what a store cannot keep or print back as JSON: NaN, Infinity,
    numbers that overflow a float, integers of more than :data:`MAX_INT_DIGITS` digits, and
    nesting deeper than the reader's recursion allows. Raises `ValueError` with the reason;
    callers add the place."""
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except json.JSONDecodeError as exc:
        raise MalformedJSONError(exc) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply (arrays or objects thousands deep)") from None


def url_port_problem(url: str) -> str | None:
    """Why a URL's port cannot be read (not a number between 1 and 65535, or an IPv6 address
    without its closing bracket), or None. The message shows the port, never the rest."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # urlsplit's one refusal: an unbalanced IPv6 bracket
        return "an IPv6 address needs its closing ']'"
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        port = host.partition("]")[2].removeprefix(":")
    else:
        port = host.partition(":")[2]
    if not port:
        return None
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535):
        return f"port {port[:20]!r} is not a port number (1 to 65535)"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (use a finite number or null)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {_short(text)} is beyond a 64-bit float's range")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(
            f"an integer of {digits} digits; at most {MAX_INT_DIGITS} (64-bit values have 19)"
        )
    return int(text)


@contextmanager
def _open(path: Path, gunzip: bool) -> Iterator[BinaryIO]:
    try:
        stream = path.open("rb")
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with stream:
        if gunzip and stream.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                yield cast(BinaryIO, unzipped)
        else:
            yield stream


def _readline(path: Path, stream: BinaryIO, max_line: int) -> bytes:
    try:
        return stream.readline(max_line + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable gzip file ({exc})") from None


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
