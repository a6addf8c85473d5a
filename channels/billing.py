"""Billing-statement inserts: the files handed to the bill-print / e-invoice system, and its answers.

Unlike SMS or e-mail there is no provider to talk to: the hand-over is a batch of files, and the
confirmation comes back later as a file. This module only reads and writes those files; the stage
logic (which rows, their states) is `notifier.billing`.

A batch `BILL-2026-12-D05-001` is three files written side by side:

- `<batch_id>.csv` — UTF-8, RFC 4180 (CRLF, quoted fields: an insert has line breaks), header
  `batch_id,account_id,full_name,address,province,insert_text,reference`;
- `<batch_id>.json` — `{"batch_id", "cycle", "billing_day", "exported_at", "count", "inserts": [{the
  same seven keys}, …]}`;
- `<batch_id>.pdf` — a proof for people: one insert per page (A5 or A4), the operator's name as the
  header, the reference code, Vietnamese set in an embedded TrueType font (DejaVu Sans, shipped in
  the package: reportlab's built-in fonts have no Vietnamese glyphs).

Each file is written under a temporary name and renamed into place only by `publish()`, after the
database committed the batch: a crash leaves either no batch files or complete ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from importlib import resources
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from notifier.errors import ConfigError
from notifier.identifiers import parse_timestamp
from notifier.ingest.reader import read_rows
from notifier.ingest.records import Rejection

COLUMNS = ("batch_id", "account_id", "full_name", "address", "province", "insert_text", "reference")
ACK_COLUMNS = ("batch_id", "account_id", "status", "at")  # and an optional `reason`
ACK_STATUSES = ("printed", "sent", "failed")
BATCH_ID_RE = re.compile(r"BILL-\d{4}-\d{2}-D\d{2}-\d{3}")
MAX_ACK_REASON_CHARS = 200

# DejaVu Sans ships in the package (notifier/fonts, with its licence): `pip install .` prints
# Vietnamese on a machine without fonts.
PACKAGED_FONT = Path(str(resources.files("notifier").joinpath("fonts", "DejaVuSans.ttf")))
# Where distributions put DejaVu Sans (Debian/Ubuntu, Fedora/RHEL, Arch, Alpine, macOS, Windows).
SYSTEM_FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
    Path("/usr/share/fonts/ttf-dejavu/DejaVuSans.ttf"),
    Path("/usr/local/share/fonts/DejaVuSans.ttf"),
    Path("/Library/Fonts/DejaVuSans.ttf"),
    Path("C:/Windows/Fonts/DejaVuSans.ttf"),
)
# A font must have these to print Vietnamese: the letters with two marks and đ/ơ/ư.
VIETNAMESE_PROBE = "ĐđƠơƯưẠạẢảẤấẦầẨẩẪẫẬậẮắẰằẲẳẴẵẶặẸẹẺẻẼẽẾếỀềỂểỄễỆệỈỉỊịỌọỎỏỐốỒồỔổỖỗỘộỚớỜờỞởỠỡỢợỤụỦủỨứỪừỬửỮữỰựỲỳỴỵỶỷỸỹ"

PAGE_MARGIN_PT = 36.0
HEADER_SIZE_PT = 14.0
BODY_SIZES_PT = (10.0, 9.0, 8.0, 7.0)  # the largest that fits the page is used
FOOTER_SIZE_PT = 7.0
LEADING = 1.3  # line height as a multiple of the font size
WORD_CACHE_SIZE = 50_000  # words whose width a proof remembers (names of threats, IPs: most repeat)


@dataclass(frozen=True)
class InsertRecord:
    """One insert in a batch: a row of the CSV, an entry of the JSON, a page of the PDF."""

    batch_id: str
    account_id: str
    full_name: str
    address: str
    province: str
    insert_text: str
    reference: str


@dataclass(frozen=True)
class BatchInfo:
    """What the files say about the batch as a whole."""

    batch_id: str
    cycle: str  # "2026-12"
    billing_day: int
    exported_at: datetime
    operator_name: str


# --- the font -----------------------------------------------------------------------------------


def find_font(configured: Path | None) -> Path:
    """The TrueType font for the proof: `billing.font_path` if set, else the packaged DejaVu Sans,
    else the first system copy found. ConfigError (one line) when there is none, or when the font
    cannot print Vietnamese: a proof of boxes would pass a hurried check."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(f"billing.font_path {path} is not a file (NOTIFIER_BILLING__FONT_PATH); "
                              "point it at a TrueType font with Vietnamese glyphs, e.g. DejaVuSans.ttf")
        _check_vietnamese(path)
        return path
    for path in (PACKAGED_FONT, *SYSTEM_FONTS):
        if path.is_file():
            return path
    raise ConfigError("no font with Vietnamese glyphs for the billing PDF: install DejaVu Sans "
                      "(fonts-dejavu-core) or set billing.font_path (NOTIFIER_BILLING__FONT_PATH)")


def _check_vietnamese(path: Path) -> None:
    missing = [char for char in VIETNAMESE_PROBE if ord(char) not in _font_face(path).charToGlyph]
    if missing:
        raise ConfigError(f"billing.font_path {path} has no glyph for {''.join(missing[:8])}… "
                          "(Vietnamese would print as boxes); use e.g. DejaVuSans.ttf")


def _font_face(path: Path) -> Any:
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    try:
        return TTFont(_font_name(path), str(path)).face
    except (TTFError, OSError, ValueError) as exc:
        raise ConfigError(f"billing.font_path {path} is not a TrueType font reportlab can embed: {exc}") from None


def _font_name(path: Path) -> str:
    """One registered name per font file: reportlab's registry is process-wide."""
    return "Insert-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def register_font(path: Path) -> str:
    """Register the font with reportlab (once per file) and return its name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = _font_name(path)
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    return name


# --- writing a batch ------------------------------------------------------------------------------


class BatchWriter:
    """The three files of one batch, written as inserts come (memory holds one page, not the batch).

    Use: `add()` each insert, `close()`, then `publish()` once the database committed (renames the
    temporary files into place) or `discard()` (removes them).
    """

    def __init__(self, out_dir: Path, info: BatchInfo, *, font_path: Path, page_size: str = "A5") -> None:
        self.info = info
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.final = {ext: self.out_dir / f"{info.batch_id}.{ext}" for ext in ("csv", "json", "pdf")}
        self.temporary = {ext: path.with_name(f".{path.name}.tmp") for ext, path in self.final.items()}
        self.count = 0
        self._csv_file: IO[str] = open(self.temporary["csv"], "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(COLUMNS)
        self._json: IO[str] = open(self.temporary["json"], "w", encoding="utf-8")
        self._json.write(_json_head(info))
        self._pdf = InsertProof(self.temporary["pdf"], info, font_path=font_path, page_size=page_size)
        self._closed = False

    def add(self, record: InsertRecord) -> None:
        values = asdict(record)
        self._csv.writerow([values[column] for column in COLUMNS])
        self._json.write(("" if self.count == 0 else ",\n") + json.dumps(values, ensure_ascii=False))
        self._pdf.add(record)
        self.count += 1

    def close(self) -> None:
        """Finish the files (still under their temporary names)."""
        if self._closed:
            return
        self._closed = True
        self._csv_file.close()
        self._json.write(f"\n], \"count\": {self.count}}}\n")
        self._json.close()
        self._pdf.save()

    def publish(self) -> list[Path]:
        """Rename the finished files into place; returns their paths (csv, json, pdf)."""
        self.close()
        for ext, path in self.temporary.items():
            os.replace(path, self.final[ext])
        return list(self.final.values())

    def discard(self) -> None:
        """Remove the temporary files (the batch was not committed, or was empty)."""
        if not self._closed:
            self._closed = True
            for handle in (self._csv_file, self._json):
                handle.close()
        for path in self.temporary.values():
            path.unlink(missing_ok=True)


def _json_head(info: BatchInfo) -> str:
    head = {"batch_id": info.batch_id, "cycle": info.cycle, "billing_day": info.billing_day,
            "exported_at": info.exported_at.isoformat()}
    return json.dumps(head, ensure_ascii=False)[:-1] + ', "inserts": [\n'


class InsertProof:
    """The PDF proof: one page per insert, the operator's name as the header, the reference at the
    top right, the insert's lines wrapped to the page, the batch and account at the foot.

    `invariant` output: the same inserts give the same bytes (`billing export --again` rewrites a
    batch identically), because reportlab then leaves out the creation time and random file id."""

    def __init__(self, path: Path, info: BatchInfo, *, font_path: Path, page_size: str = "A5") -> None:
        from reportlab import rl_config
        from reportlab.lib import pagesizes
        from reportlab.pdfgen.canvas import Canvas

        # Compressed streams stay binary: ASCII85 on top made every page 25% larger and was a
        # third of the export's CPU (pure Python in reportlab 4). Only this process's PDFs are affected.
        rl_config.useA85 = 0
        self.info = info
        self.font = register_font(font_path)
        self._word_widths: dict[str, float] = {}
        self.width, self.height = {"A4": pagesizes.A4, "A5": pagesizes.A5}[page_size]
        self.canvas = Canvas(str(path), pagesize=(self.width, self.height), invariant=1, pageCompression=1)
        self.canvas.setTitle(f"{info.batch_id}: billing inserts, cycle {info.cycle}, day {info.billing_day}")
        self.canvas.setAuthor(info.operator_name)
        self.canvas.setCreator("notifier billing export")
        self.pages = 0

    def add(self, record: InsertRecord) -> None:
        canvas, margin = self.canvas, PAGE_MARGIN_PT
        top = self.height - margin
        canvas.setFont(self.font, HEADER_SIZE_PT)
        canvas.drawString(margin, top - HEADER_SIZE_PT, self.info.operator_name)
        canvas.setFont(self.font, 9)
        canvas.drawRightString(self.width - margin, top - HEADER_SIZE_PT, record.reference)
        rule = top - HEADER_SIZE_PT - 8
        canvas.setLineWidth(0.6)
        canvas.line(margin, rule, self.width - margin, rule)
        size, lines = self._fit(record.insert_text, rule - margin - 3 * FOOTER_SIZE_PT)
        body = canvas.beginText(margin, rule - 6 - size)  # one text object: no width computed per line
        body.setFont(self.font, size, size * LEADING)
        for line in lines:
            body.textLine(line)
        canvas.drawText(body)
        canvas.setFont(self.font, FOOTER_SIZE_PT)
        canvas.drawString(margin, margin, f"{record.batch_id} · {record.account_id} · {record.reference}")
        canvas.showPage()
        self.pages += 1

    def _fit(self, text: str, room: float) -> tuple[float, list[str]]:
        """The largest body size whose wrapped lines fit `room` points of height (the smallest if none)."""
        width = self.width - 2 * PAGE_MARGIN_PT
        lines: list[str] = []
        for size in BODY_SIZES_PT:
            lines = [piece for paragraph in text.splitlines() for piece in self._wrap(paragraph, width / size)]
            if len(lines) * size * LEADING <= room:
                return size, lines
        return BODY_SIZES_PT[-1], lines

    def _wrap(self, paragraph: str, room: float) -> list[str]:
        """Greedy word wrap to `room` (in units of the font size). Word widths are remembered: every
        insert of a batch repeats the same sentences, and measuring glyph by glyph in reportlab
        (pure Python) was the largest cost of a page."""
        words = paragraph.split(" ")
        lines: list[str] = []
        current: list[str] = []
        used = 0.0
        space = self._measure(" ")
        for word in words:
            extra = self._measure(word) + (space if current else 0.0)
            if current and used + extra > room:
                lines.append(" ".join(current))
                current, used = [word], self._measure(word)
            else:
                current.append(word)
                used += extra
        lines.append(" ".join(current))
        return lines

    def _measure(self, word: str) -> float:
        """A word's width at font size 1."""
        width = self._word_widths.get(word)
        if width is None:
            from reportlab.pdfbase.pdfmetrics import stringWidth

            if len(self._word_widths) > WORD_CACHE_SIZE:
                self._word_widths.clear()
            width = self._word_widths[word] = stringWidth(word, self.font, 1.0)
        return width

    def save(self) -> None:
        if self.pages == 0:  # an empty document is still a valid PDF
            self.canvas.showPage()
        self.canvas.save()


# --- reading acknowledgements ---------------------------------------------------------------------


@dataclass(frozen=True)
class AckLine:
    """One line of an acknowledgement file: the bill-print system's word on one insert."""

    line: int
    batch_id: str
    account_id: str
    status: str  # printed | sent | failed
    at: datetime
    reason: str | None = None

    @property
    def provider_id(self) -> str:
        return provider_id(self.batch_id, self.account_id)


def provider_id(batch_id: str, account_id: str) -> str:
    """The id an insert is known by (a `message_part` row): `BILL-2026-12-D05-001/HN000123`."""
    return f"{batch_id}/{account_id}"


def read_acks(path: Path, *, tz: str) -> Iterator[AckLine | Rejection]:
    """Each line of an acknowledgement CSV (`batch_id,account_id,status,at[,reason]`), or a
    Rejection saying why it cannot be used; a time without a zone is read in `tz`. The same insert
    twice in one file: the later line is rejected (which word would be true?)."""
    seen: dict[str, int] = {}
    for item in read_rows(path, required=ACK_COLUMNS):
        if isinstance(item, Rejection):
            yield item
            continue
        line, row, raw = item
        try:
            ack = _ack_line(line, row, tz)
        except ValueError as exc:
            yield Rejection(line, str(exc), raw)
            continue
        earlier = seen.setdefault(ack.provider_id, line)
        if earlier != line:
            yield Rejection(line, f"{ack.batch_id} account {ack.account_id} already on line {earlier}", raw)
            continue
        yield ack


def _ack_line(line: int, row: dict[str, str], tz: str) -> AckLine:
    batch_id = row.get("batch_id", "").strip().upper()
    if not BATCH_ID_RE.fullmatch(batch_id):
        raise ValueError("batch_id: not a batch id (expected e.g. BILL-2026-12-D05-001)")
    account_id = row.get("account_id", "").strip()
    if not account_id:
        raise ValueError("empty account_id")
    status = row.get("status", "").strip().lower()
    if status not in ACK_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(ACK_STATUSES)}")
    try:
        at = parse_timestamp(row.get("at", ""), tz)
    except ValueError as exc:
        raise ValueError(f"at: {exc}") from None
    reason = " ".join((row.get("reason") or "").split())[:MAX_ACK_REASON_CHARS] or None
    return AckLine(line, batch_id, account_id, status, at, reason)
