"""The one CSV reading loop every importer uses, and the column maps that drive it.

Operators hand over what their systems export: gzip or plain, UTF-8 with or without a BOM, columns
in any order, now and then a row typed in a Windows code page. Reading is therefore done once, here:
the file is streamed physical line by physical line, each line decoded by us (so one bad byte
rejects one row instead of stopping the file), and every row is either a dict keyed by header name
or a Rejection carrying its physical line number. Parsers only describe their layout (`Column`) and
build records (`parse_layout`, over `parse_rows`); none of them loops over a file itself.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notifier.errors import InputError
from notifier.identifiers import get_zone, parse_timestamp
from notifier.ingest.records import ParseResult, Rejection, bound_raw

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

Row = tuple[int, dict[str, str], str]
RowBuilder = Callable[[int, dict[str, str], str], Iterable[ParseResult]]
# A parser's record builder: (its layout, physical line, row, raw text) → records; ValueError rejects.
LayoutBuilder = Callable[[tuple["Column", ...], int, dict[str, str], str], Iterable[ParseResult]]
Converter = Callable[[str], object]
ByteStream = gzip.GzipFile | io.BufferedReader

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = "\ufeff"
LIST_SEPARATOR = ";"  # inside one cell: "0912345678;0987654321"
SNIFF_BYTES = 4096  # enough of the start of a file to tell text from binary
SURROGATE_ESCAPE_BASE = 0xDC00  # surrogateescape decodes byte b as chr(0xDC00 + b)
NUL = "\x00"
LINE_BATCH_BYTES = 1 << 20  # read_text_lines: lines read per call, about this many bytes
# A text file may carry a stray NUL in a row (a cut-off export, a field copied from a C tool): that
# row is rejected. A file whose first line has one, or where NULs are more than this share of the
# first bytes (UTF-16 without BOM, .xls, images), is binary and refused whole.
BINARY_NUL_SHARE = 0.05


@dataclass(frozen=True)
class Column:
    """One field of a layout: the first non-empty of `sources` (header names) gives its text.

    `convert` turns the trimmed text into a value and raises ValueError naming the bad value;
    an empty cell gives `default`, or a rejection when `required`.
    """

    target: str
    sources: tuple[str, ...]
    convert: Converter = str
    required: bool = False
    default: object = None


def bounded_text(max_chars: int) -> Callable[[str], str]:
    """A converter keeping text as NFC (some exports decompose Vietnamese) of at most max_chars."""

    def convert(text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        if len(text) > max_chars:
            raise ValueError(f"longer than {max_chars} characters")
        return text

    return convert


def timestamp_in(tz: str) -> Converter:
    """A converter reading a time with `tz` as the zone of times written without one."""
    return functools.partial(parse_timestamp, default_tz=tz)


def split_list(text: str) -> list[str]:
    """Items of a ";"-separated cell, trimmed, empties dropped."""
    return [item.strip() for item in text.split(LIST_SEPARATOR) if item.strip()]


def unique(items: Iterable[str]) -> tuple[str, ...]:
    """Items without repeats, first occurrence order kept."""
    return tuple(dict.fromkeys(items))


def required_headers(columns: Iterable[Column]) -> tuple[str, ...]:
    """Headers a file must have for a layout: the first source of every required column."""
    return tuple(column.sources[0] for column in columns if column.required)


def extract(row: Mapping[str, str], columns: Iterable[Column]) -> dict[str, object]:
    """Apply a layout to one row; ValueError "header: reason" on the first unusable cell."""
    values: dict[str, object] = {}
    for column in columns:
        source, text = next(((s, row[s]) for s in column.sources if row.get(s)), (None, ""))
        if source is None:
            if column.required:
                raise ValueError(f"empty {column.sources[0]}")
            values[column.target] = column.default
            continue
        try:
            values[column.target] = column.convert(text)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return values


def check_zone(path: Path, tz: str) -> None:
    """An unknown time zone makes every row wrong, so it is a whole-file InputError."""
    try:
        get_zone(tz)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def parse_rows(
    path: Path | str,
    build: RowBuilder,
    *,
    required: Sequence[str] = (),
    one_of: Sequence[str] = (),
    column_map: Mapping[str, str] | None = None,
) -> Iterator[ParseResult]:
    """Read rows and let `build` turn each into records; a ValueError from it rejects that row.

    `build` may yield several records for one row (a leak row naming a phone and an address);
    they are collected first so that a failing row yields a rejection and nothing else.
    """
    for item in read_rows(path, required=required, one_of=one_of, column_map=column_map):
        if isinstance(item, Rejection):
            yield item
            continue
        line, row, raw = item
        try:
            results = list(build(line, row, raw))
        except ValueError as exc:
            yield Rejection(line, str(exc), bound_raw(raw))
            continue
        yield from results


def parse_layout(
    path: Path,
    columns: tuple[Column, ...],
    build: LayoutBuilder,
    *,
    required: Sequence[str] = (),
    one_of: Sequence[str] = (),
    column_map: Mapping[str, str] | None = None,
) -> Iterator[ParseResult]:
    """`parse_rows` for a parser described by its layout: `build(columns, line, row, raw)` makes
    the records, and the file must have the headers of the required columns plus `required` (a
    column whose cells may be empty but whose absence would change every row's meaning)."""
    yield from parse_rows(path, functools.partial(build, columns), required=(*required_headers(columns), *required),
                          one_of=one_of, column_map=column_map)


def read_rows(
    path: Path | str,
    *,
    required: Sequence[str] = (),
    one_of: Sequence[str] = (),
    column_map: Mapping[str, str] | None = None,
) -> Iterator[Row | Rejection]:
    """Yield (physical line of the row's first line, {header: trimmed value}, raw text) or a Rejection.

    Header names are matched trimmed and case-insensitively, after renaming through `column_map`
    (source header → our name). `required` headers must all exist, and at least one of `one_of`
    if given. A missing, empty, binary or header-less file raises InputError on the first next();
    a gzip stream found damaged midway raises it when reached, after the rows before the damage.
    """
    path = Path(path)
    with _open_stream(path) as stream:
        lines = _LineSource(stream, path)
        reader = csv.reader(lines)
        header, shown = _read_header(reader, path, column_map or {})
        _check_header(path, header, required, one_of)
        yield from _rows(reader, lines, header, shown)


def read_text_lines(path: Path | str) -> Iterator[tuple[int, str, str | None]]:
    """Yield (physical line number from 1, text without the line break, problem or None) for a text
    file that is not CSV (FreeRADIUS `detail`), opened exactly like a CSV (gzip, BOM, binary refused).

    A line with a NUL or an undecodable byte comes with the same reason a CSV row would get, and its
    text shows those bytes as \\xNN escapes, so the caller can reject its record and go on. Lines
    are read about a megabyte at a time: detail files run to tens of millions of short lines.
    """
    path = Path(path)
    number = 0
    with _open_stream(path) as stream:
        while batch := _line_batch(stream, path):
            for data in batch:
                number += 1
                if number == 1:
                    data = data.removeprefix(UTF8_BOM.encode())
                try:
                    text = data.decode("utf-8").rstrip("\r\n")
                    problem = _nul_byte(text) if NUL in text else None
                except UnicodeDecodeError:
                    text = data.decode("utf-8", "surrogateescape").rstrip("\r\n")
                    problem = _nul_byte(text) or _bad_utf8(text)
                yield number, _printable(text) if problem else text, problem


def _line_batch(stream: ByteStream, path: Path) -> list[bytes]:
    try:
        return stream.readlines(LINE_BATCH_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: damaged gzip file ({exc})") from None


def _open_stream(path: Path) -> ByteStream:
    """Open plain or gzip (told by magic bytes, whatever the suffix) and refuse non-text at once."""
    try:
        with path.open("rb") as probe:
            magic = probe.read(len(ZIP_MAGIC))
        stream: ByteStream = gzip.GzipFile(path, "rb") if magic.startswith(GZIP_MAGIC) else path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        _sniff(path, magic, _peek(stream, path))
    except InputError:
        stream.close()
        raise
    return stream


def _peek(stream: ByteStream, path: Path) -> bytes:
    try:
        return stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: damaged gzip file ({exc})") from None


def _sniff(path: Path, magic: bytes, head: bytes) -> None:
    if magic.startswith(ZIP_MAGIC):
        raise InputError(f"{path}: a zip archive, not CSV (unzip it, or use gzip)")
    if not head:
        raise InputError(f"{path}: empty file")
    if head.startswith(UTF16_BOMS):
        raise InputError(f"{path}: UTF-16 text is not supported (save the file as UTF-8 CSV)")
    first_line = head.split(b"\n", 1)[0]
    if b"\0" in first_line or head.count(b"\0") > len(head) * BINARY_NUL_SHARE:
        raise InputError(f"{path}: binary data, not a CSV text file")


class _LineSource:
    """Physical lines for csv.reader, decoded one by one, remembering the text of the current row.

    Decoding with surrogateescape never fails: undecodable bytes become lone surrogates, which
    `_bad_utf8` finds afterwards, so the decision is made per row instead of per file.
    """

    def __init__(self, stream: ByteStream, path: Path) -> None:
        self._stream = stream
        self._path = path
        self._first = True
        self.consumed: list[str] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        try:
            data = self._stream.readline()
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{self._path}: damaged gzip file ({exc})") from None
        if not data:
            raise StopIteration
        text = data.decode("utf-8", "surrogateescape")
        if self._first:
            text = text.removeprefix(UTF8_BOM)
            self._first = False
        self.consumed.append(text)
        return text

    def take_raw(self) -> str:
        """The text of the lines read since the last call, without the final line break."""
        raw = "".join(self.consumed).rstrip("\r\n")
        self.consumed.clear()
        return raw


def _read_header(
    reader: CsvReader, path: Path, column_map: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Return (our column names, header names as written) from the first non-blank row."""
    rename = {source.strip().lower(): ours for source, ours in column_map.items()}
    try:
        fields = next(reader)
        while not any(field.strip() for field in fields):
            fields = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file (no header line)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: unreadable header line ({exc})") from None
    shown = [field.strip() for field in fields]
    if any(NUL in name for name in shown):
        raise InputError(f"{path}: binary data, not a CSV text file (a NUL byte in the header)")
    if any(_bad_utf8(name) for name in shown):
        raise InputError(f"{path}: the header is not valid UTF-8 (save the file as UTF-8 CSV)")
    names = [name.lower() for name in shown]
    return [rename.get(name, name) for name in names], shown



def _check_header(path: Path, header: list[str], required: Sequence[str], one_of: Sequence[str]) -> None:
    named = [name for name in header if name]
    duplicates = sorted({name for name in named if named.count(name) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate column(s): {', '.join(duplicates)}")
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(f"{path}: missing required column(s): {', '.join(missing)}")
    if one_of and not any(name in header for name in one_of):
        raise InputError(f"{path}: needs at least one of the columns: {', '.join(one_of)}")


def _rows(
    reader: CsvReader, lines: _LineSource, header: list[str], shown: list[str]
) -> Iterator[Row | Rejection]:
    """Yield each data row or its rejection; blank rows (also ",,,") are skipped."""
    lines.take_raw()  # drop the header's text
    while True:
        try:
            item = read_record(reader, lines.take_raw, reader.line_num + 1, header, shown)
        except StopIteration:
            return
        if item is not None:
            yield item


def read_record(reader: CsvReader, take_raw: Callable[[], str], start: int, header: list[str],
                shown: list[str]) -> Row | Rejection | None:
    """The next CSV record of `reader`, which starts at physical line `start`: the row, a Rejection
    with its reason (unreadable CSV, a NUL byte, bad UTF-8, too few or too many fields), or None
    for a blank one (also ",,,"). `take_raw` gives the text the record was read from. Raises
    StopIteration at the end of the file. The one place a record is judged: `read_rows` and the
    sessions-csv fast reader's general path (notifier.ingest.assignments) both come here."""
    try:
        fields = next(reader)
    except csv.Error as exc:
        return Rejection(start, f"unreadable CSV ({exc})", bound_raw(_printable(take_raw())))
    raw = take_raw()
    if not any(field.strip() for field in fields):
        return None
    reason = _nul_byte(raw) or _bad_utf8(raw) or _field_count_problem(fields, shown)
    if reason:
        return Rejection(start, reason, bound_raw(_printable(raw)))
    return start, {name: value.strip() for name, value in zip(header, fields, strict=True) if name}, raw


def _field_count_problem(fields: list[str], shown: list[str]) -> str | None:
    if len(fields) < len(shown):
        absent = [name or f"column {index + 1}" for index, name in enumerate(shown)][len(fields):]
        return f"missing column(s): {', '.join(absent)}"
    if len(fields) > len(shown):
        return f"{len(fields)} fields but the header has {len(shown)} (an unquoted comma?)"
    return None


def _nul_byte(text: str) -> str | None:
    """PostgreSQL text cannot hold NUL (and no CSV value means one): such a row is rejected."""
    position = text.find(NUL)
    return None if position < 0 else f"contains a NUL byte (at position {position + 1})"


def _bad_utf8(text: str) -> str | None:
    """Describe the first undecodable byte in surrogateescape-decoded text, or None if there is none.

    A strict re-encode finds the lone surrogates at C speed; valid text passes untouched.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - SURROGATE_ESCAPE_BASE
        return f"not valid UTF-8 (byte 0x{byte:02x} at position {exc.start + 1}; save the file as UTF-8)"
    return None


def _printable(text: str) -> str:
    """Undecodable bytes and NULs as \\xNN escapes, so a rejected row's text can be stored (also
    in PostgreSQL, which refuses NUL in text) and shown."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").replace(NUL, "\\x00")
