"""Reading rows from where users keep them, one at a time.

Every reader yields `(loc, row, problem)`: `loc` is the line number (JSON Lines,
CSV, TSV, .txt) or the index (JSON arrays, Parquet, hub datasets) that
`Source.where` turns into a place a user can find; exactly one of `row` (a dict)
and `problem` is set. Files are streamed so a 1 GB JSON Lines file keeps memory flat.

Limit: a JSON file whose top level is an *object* (`{"train": [...]}` or
columns as arrays) is read whole; top-level arrays are streamed element by element.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from tunewiz.core.config import SAMPLE_HELDOUT_NAME
from tunewiz.core.data.report import Problem
from tunewiz.core.errors import UserError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".txt": "txt",
    ".md": "txt",
}
# Not every stray high byte breaks a row: decoding with surrogateescape keeps reading and
# this finds the rows that had them.
_SURROGATE = re.compile("[\udc80-\udcff]")
_PARAGRAPH = re.compile(r"(?:[^\n]*\S[^\n]*(?:\n|$))+")  # runs of non-blank lines
_BLANK = re.compile(r"[ \t\r\n]*")  # JSON's whitespace; matches everywhere, if only ""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHUNK = 1 << 20

Record = tuple[int, "dict | None", "Problem | None"]


@dataclass
class Source:
    """One file (or hub dataset) to read rows from, and how to name places in it."""

    name: str  # what the user sees in places: the file name, or the hub id
    kind: str  # jsonl, json, csv, tsv, parquet, txt, hub
    path: Path | None = None
    compression: str | None = None
    hub_config: str = ""
    hub_split: str = "train"

    @property
    def indexed(self) -> bool:
        return self.kind in ("json", "parquet", "hub")

    def where(self, loc: int, field: str | None = None) -> str:
        if self.indexed:
            base = f"{self.name}[{loc}]"
            return f"{base}.{field}" if field else base
        base = f"{self.name}:{loc}"
        return f"{base} field '{field}'" if field else base


def resolve_sources(data: str, *, hub_config: str = "", hub_split: str = "train") -> list[Source]:
    """The files (or hub dataset) behind what the user typed."""
    from tunewiz.core.data import SAMPLE_DATASET, SAMPLE_HELDOUT

    text = data.strip()
    if not text:
        raise UserError(
            "no data given", where="data.data", hint="give a file, a folder, a hub id, or `sample`"
        )
    path = Path(text).expanduser()
    if text == "sample" and not path.exists():
        path = SAMPLE_DATASET
    elif text == SAMPLE_HELDOUT_NAME and not path.exists():
        path = SAMPLE_HELDOUT
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and _kind_of(p)[0] is not None
        )
        if not files:
            raise UserError(
                "this folder holds no data file (.jsonl, .json, .csv, .tsv, .parquet, .txt, optionally .gz)",
                where=str(path),
            )
        return [_file_source(p, display=str(p.relative_to(path))) for p in files]
    if path.is_file():
        return [_file_source(path, display=path.name)]
    if (
        _HUB_ID.match(text)
        and not text.startswith((".", "/", "~"))
        and path.suffix.lower() not in KINDS
    ):
        return [Source(name=text, kind="hub", hub_config=hub_config, hub_split=hub_split)]
    raise UserError(
        "data file not found",
        where=text,
        hint="give a file or folder that exists, a hub dataset id like `owner/name`, or `sample`",
    )


def _kind_of(path: Path) -> tuple[str | None, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    kind = KINDS.get(suffixes[-1]) if suffixes else None
    return kind, compression


def _file_source(path: Path, *, display: str) -> Source:
    kind, compression = _kind_of(path)
    if kind is None:
        raise UserError(
            f"unknown file type {''.join(path.suffixes) or '(no extension)'}",
            where=str(path),
            hint="tunewiz reads .jsonl, .json, .csv, .tsv, .parquet and .txt (optionally .gz/.bz2/.xz/.zst)",
        )
    if kind == "parquet" and compression:
        raise UserError(
            "compressed Parquet files are not supported; Parquet compresses itself", where=str(path)
        )
    return Source(name=display, kind=kind, path=path, compression=compression)


def open_binary(src: Source) -> io.BufferedIOBase:
    """The file as bytes, decompressed on the fly when it is compressed."""
    assert src.path is not None
    if src.compression == "gzip":
        return gzip.open(src.path, "rb")
    if src.compression == "bz2":
        return bz2.open(src.path, "rb")
    if src.compression == "xz":
        return lzma.open(src.path, "rb")
    if src.compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UserError(
                "reading .zst files needs the zstandard package",
                where=str(src.path),
                hint="pip install zstandard, or decompress the file first (zstd -d)",
            ) from None
        return io.BufferedReader(_ZstdReader(open(src.path, "rb"), zstandard))
    return open(src.path, "rb")


class _ZstdReader(io.RawIOBase):
    """Decompresses every frame of a .zst file. zstandard's own stream_reader ends silently
    on a truncated file; this raises EOFError then, as gzip, bz2 and lzma do."""

    def __init__(self, fh: BinaryIO, zstandard: ModuleType) -> None:
        self._fh, self._new = fh, zstandard.ZstdDecompressor().decompressobj
        self._d, self._buf, self._started = self._new(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        while not self._buf:
            chunk = self._fh.read(CHUNK)
            if not chunk:
                if self._started and not self._d.eof:
                    raise EOFError("the file ends in the middle of a zstd frame")
                return 0
            self._started = True
            self._buf = self._frames(chunk)
        view = memoryview(b)  # the reader's buffer, whatever object it is, as bytes
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _frames(self, chunk: bytes) -> bytes:
        if self._d.eof:  # the previous chunk ended exactly at the end of a frame
            self._d = self._new()
        out = self._d.decompress(chunk)
        while self._d.eof and self._d.unused_data:  # the next frame starts in this chunk
            rest, self._d = self._d.unused_data, self._new()
            out += self._d.decompress(rest)
        return out

    def close(self) -> None:
        self._fh.close()
        super().close()


def read_source(src: Source, *, text_split: str = "paragraph") -> Iterator[Record]:
    """The records of one source; a compressed file that is damaged, truncated or not
    compressed at all stops with a UserError naming the file and the last line read."""
    last = 0
    try:
        for record in _records(src, text_split):
            last = record[0]
            yield record
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise _damaged_file(src, last, exc) from None
    except Exception as exc:  # zstandard's ZstdError derives from Exception only
        if type(exc).__name__ != "ZstdError":
            raise
        raise _damaged_file(src, last, exc) from None


def _damaged_file(src: Source, last: int, exc: BaseException) -> UserError:
    kind = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "zstd": "zstd"}.get(src.compression or "")
    what = f"not a valid {kind} file, or truncated" if kind else "could not be read"
    after = f" after line {last}" if last and not src.indexed else ""
    detail = str(exc).strip() or type(exc).__name__
    return UserError(
        f"{what}{after} ({detail})",
        where=str(src.path or src.name),
        hint="download or compress the file again" if kind else None,
    )


def _records(src: Source, text_split: str) -> Iterator[Record]:
    """The records of one source, by the reader of its kind."""
    if src.kind == "hub":
        yield from _read_hub(src)
        return
    if src.kind == "parquet":
        yield from _read_parquet(src)
        return
    with open_binary(src) as f:
        if src.kind == "jsonl":
            yield from _read_jsonl(src, f)
        elif src.kind == "json":
            yield from _read_json(src, f)
        elif src.kind in ("csv", "tsv"):
            yield from _read_csv(src, f, "\t" if src.kind == "tsv" else ",")
        elif src.kind == "txt":
            yield from _read_txt(src, f, text_split)


def _read_jsonl(src: Source, f: Iterable[bytes], first_line: int = 1) -> Iterator[Record]:
    """One record per non-blank line; a line that is not a JSON object is a problem."""
    # The hot loop of big files: blank lines are only looked at when parsing fails.
    decode = json.JSONDecoder().decode  # what json.loads(str) calls, minus its checks
    for lineno, raw in enumerate(f, first_line):
        try:
            row = decode(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            detail = f"bytes that are not UTF-8 at column {exc.start + 1}"
            yield lineno, None, Problem(src.where(lineno), "non_utf8", detail)
            continue
        except RecursionError:
            detail = "invalid JSON: nested too deeply to read"
            yield lineno, None, Problem(src.where(lineno), "invalid_json", detail)
            continue
        except ValueError as exc:
            if not raw.strip():
                continue
            msg = getattr(exc, "msg", str(exc))
            col = getattr(exc, "colno", None)
            detail = f"invalid JSON: {msg}" + (f" (column {col})" if col else "")
            yield lineno, None, Problem(src.where(lineno), "invalid_json", detail)
            continue
        if type(row) is not dict:
            detail = f"expected an object {{...}}, got {type(row).__name__}"
            yield lineno, None, Problem(src.where(lineno), "not_an_object", detail)
            continue
        yield lineno, row, None


def _read_json(src: Source, f: io.BufferedIOBase) -> Iterator[Record]:
    """A JSON file: an array streamed element by element, an object read whole, and values
    one after the other read as JSON Lines."""
    # type-var: typeshed wants the `name` of a file; BufferedIOBase does not declare one (and
    # TextIOWrapper only shows it in its repr)
    reader = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape")  # type: ignore[type-var]
    head = reader.read(CHUNK)
    stripped = head.lstrip().lstrip("\ufeff")
    if not stripped:
        return
    if stripped[0] == "[":
        yield from _stream_array(src, reader, head)
        return
    text = head + reader.read()
    try:
        doc = json.loads(text.lstrip("\ufeff"))
    except RecursionError:
        problem = Problem(src.name, "invalid_json", "invalid JSON: nested too deeply to read")
        yield 0, None, problem
        return
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several values one after the other: it is JSON Lines
            yield from _read_jsonl(src, io.BytesIO(text.encode("utf-8", "surrogateescape")))
            return
        yield (
            exc.lineno,
            None,
            Problem(
                f"{src.name}:{exc.lineno}",
                "invalid_json",
                f"invalid JSON: {exc.msg} (column {exc.colno}); nothing could be read",
            ),
        )
        return
    yield from _rows_of_object(src, doc)


def _rows_of_object(src: Source, doc: object) -> Iterator[Record]:
    """The rows of a JSON object: its first array of rows, its columns as arrays, or the
    object itself as the only row."""
    if not isinstance(doc, dict):
        yield (
            0,
            None,
            Problem(src.name, "not_an_object", "expected an array of rows or an object of arrays"),
        )
        return
    lists = {k: v for k, v in doc.items() if isinstance(v, list)}
    row_lists = {k: v for k, v in lists.items() if v and all(isinstance(x, dict) for x in v[:10])}
    if row_lists:  # {"train": [{...}, ...]}: the first array of rows
        key = "train" if "train" in row_lists else next(iter(row_lists))
        sub = Source(name=f"{src.name}:{key}", kind="json", path=src.path)
        for i, row in enumerate(row_lists[key]):
            yield (
                (i, row, None)
                if isinstance(row, dict)
                else (
                    i,
                    None,
                    Problem(
                        sub.where(i),
                        "not_an_object",
                        f"expected an object, got {type(row).__name__}",
                    ),
                )
            )
        return
    if lists and len(lists) == len(doc) and len({len(v) for v in lists.values()}) == 1:
        keys = list(lists)  # columns as arrays: {"prompt": [...], "response": [...]}
        for i, values in enumerate(zip(*lists.values(), strict=False)):
            yield i, dict(zip(keys, values, strict=False)), None
        return
    if not lists:  # a single row
        yield 0, doc, None
        return
    yield (
        0,
        None,
        Problem(
            src.name,
            "not_an_object",
            "an object whose arrays have different lengths: cannot tell the rows",
        ),
    )


def _stream_array(src: Source, reader: TextIO, buf: str) -> Iterator[Record]:
    """Elements of a top-level JSON array, decoded one by one from 1 MB chunks.

    An element that cannot be read ends the stream with a problem saying where: the rest
    of a broken array cannot be told apart reliably."""
    cur = _ArrayCursor(reader, buf, buf.index("[") + 1)
    index = 0
    while True:
        _skip_separator(cur)
        if cur.pos >= len(cur.buf):
            detail = "invalid JSON: the array is not closed with ]"
            yield index, None, Problem(f"{src.name}:{cur.line(cur.pos)}", "invalid_json", detail)
            return
        if cur.buf[cur.pos] == "]":
            return
        try:
            obj, end = _decode_element(cur)
        except RecursionError:
            detail = (
                f"invalid JSON: element [{index}] is nested too deeply to read; nor what follows"
            )
            yield index, None, Problem(f"{src.name}:{cur.line(cur.pos)}", "invalid_json", detail)
            return
        except json.JSONDecodeError as exc:
            detail = (
                f"invalid JSON: {exc.msg}; element [{index}] and everything after it could not "
                "be read"
            )
            yield index, None, Problem(f"{src.name}:{cur.line(exc.pos)}", "invalid_json", detail)
            return
        yield _element_record(src, index, obj, _SURROGATE.search(cur.buf, cur.pos, end) is None)
        index += 1
        cur.step_past(end)


@dataclass
class _ArrayCursor:
    """Where reading a JSON array stands: `buf[pos:]` is the text not yet read, the text
    before it is dropped a chunk at a time (its newlines counted, for line numbers)."""

    reader: TextIO
    buf: str
    pos: int
    lines_before: int = 0  # newlines in the text already dropped from buf
    eof: bool = False
    expect_comma: bool = False  # an element was read: a comma must come before the next
    decode: Callable[[str, int], tuple[Any, int]] = field(
        default_factory=lambda: json.JSONDecoder().raw_decode
    )

    def line(self, at: int) -> int:
        """The line number (from 1) of `buf[at]` in the whole text."""
        return self.lines_before + self.buf.count("\n", 0, at) + 1

    def read_more(self) -> None:
        """Drop the text read and append the next chunk (`eof` when there is none)."""
        more = self.reader.read(CHUNK)
        self.eof = not more
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos :] + more, 0

    def step_past(self, end: int) -> None:
        """Move past an element read, dropping the text read once it exceeds a chunk."""
        self.pos = end
        self.expect_comma = True
        if self.pos > CHUNK:
            self.lines_before += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos = self.buf[self.pos :], 0


def _skip_separator(cur: _ArrayCursor) -> None:
    """Move past whitespace and the comma between elements, reading more text when the
    buffer runs out; stops at the next element, at `]`, or at the end of the text."""
    while True:
        buf = cur.buf
        pos = cur.pos = _BLANK.match(buf, cur.pos).end()  # type: ignore[union-attr]
        if pos < len(buf) and cur.expect_comma and buf[pos] == ",":
            cur.pos += 1
            cur.expect_comma = False
            continue
        if pos < len(buf) or cur.eof:
            return
        cur.read_more()


def _decode_element(cur: _ArrayCursor) -> tuple[Any, int]:
    """The element at the cursor and where it ends, reading more text while it may run past
    the buffer; JSONDecodeError (or RecursionError) when it cannot be read."""
    while True:
        try:
            if cur.expect_comma:
                raise json.JSONDecodeError("Expecting ',' delimiter", cur.buf, cur.pos)
            obj, end = cur.decode(cur.buf, cur.pos)
            if end >= len(cur.buf) and not cur.eof:
                raise json.JSONDecodeError("need more", cur.buf, end)
            return obj, end
        except json.JSONDecodeError:
            if cur.eof:
                raise
            cur.read_more()


def _element_record(src: Source, index: int, obj: Any, utf8: bool) -> Record:
    """An array element as a row, or the problem with it (not an object, bytes not UTF-8)."""
    if not isinstance(obj, dict):
        detail = f"expected an object, got {type(obj).__name__}"
        return index, None, Problem(src.where(index), "not_an_object", detail)
    if not utf8:
        return index, None, Problem(src.where(index), "non_utf8", "holds bytes that are not UTF-8")
    return index, obj, None


def _read_csv(src: Source, f: io.BufferedIOBase, delimiter: str) -> Iterator[Record]:
    """CSV or TSV rows keyed by the header; a quote never closed is placed and reported."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")  # type: ignore[type-var]  # as in _read_json
    # strict: a quote that is not closed where a field ends is an error we can place,
    # instead of a field that silently swallows the lines after it
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    header = [h.strip() for h in header]
    width = len(header)
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield line, None, _unclosed_quote(src, line, reader.line_num)
            if reader.line_num < line:
                return  # nothing consumed: stop rather than loop
            continue
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if any(_SURROGATE.search(v) for v in values):
            yield line, None, Problem(src.where(line), "non_utf8", "holds bytes that are not UTF-8")
            continue
        if len(values) > width:
            yield (
                line,
                None,
                Problem(
                    src.where(line),
                    "extra_fields",
                    f"{len(values)} fields but the header names {width}",
                ),
            )
            continue
        # A short row leaves its last columns out: reported as missing fields by the format.
        yield line, dict(zip(header, values, strict=False)), None


def _unclosed_quote(src: Source, start: int, end: int) -> Problem:
    swallowed = end - start
    more = f"; it swallowed the next {swallowed} lines (to line {end})" if swallowed > 0 else ""
    return Problem(
        src.where(start),
        "unclosed_quote",
        f'a quoted field that starts on line {start} is not closed by a " before its comma or '
        f"line end{more}: check the quotes on line {start}",
    )


def _read_txt(src: Source, f: io.BufferedIOBase, text_split: str) -> Iterator[Record]:
    """Plain text as `{"text"}` rows: one per paragraph, or the whole file as one document."""
    text = f.read().decode("utf-8", errors="surrogateescape")
    if text_split == "document":
        if text.strip():
            if bad := _SURROGATE.search(text):
                at = 1 + text.count("\n", 0, bad.start())  # the line with the first bad byte
                yield at, None, Problem(src.where(at), "non_utf8", "holds bytes that are not UTF-8")
            else:
                yield 1, {"text": text.strip("\n")}, None
        return
    line, pos = 1, 0
    for m in _PARAGRAPH.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        block = m.group()
        if bad := _SURROGATE.search(block):
            at = line + block.count("\n", 0, bad.start())  # the line with the first bad byte
            yield line, None, Problem(src.where(at), "non_utf8", "holds bytes that are not UTF-8")
        else:
            yield line, {"text": block.strip()}, None


def _read_parquet(src: Source) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except Exception as exc:  # pyarrow raises its own error types for broken files
        raise UserError(f"not a readable Parquet file: {exc}", where=str(src.path)) from None
    index = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield index, row, None
            index += 1


def _read_hub(src: Source) -> Iterator[Record]:
    try:
        import datasets

        ds = datasets.load_dataset(
            src.name, src.hub_config or None, split=src.hub_split, streaming=True
        )
        rows = iter(ds)
        first = next(rows, None)
    except Exception as exc:  # datasets raises many types (connection, missing config, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not load the hub dataset {src.name!r}: {first_line}",
            where=src.name,
            hint="offline? download the dataset where there is network and give its file or folder "
            "instead; check the config name (data_config_name) and split (data_split)",
        ) from None
    if first is None:
        return
    yield 0, dict(first), None
    for i, row in enumerate(rows, 1):
        yield i, dict(row), None
