"""A small, realistic, reproducible data set for `notifier demo` and the tests.

Subscribers with Vietnamese names, mobile numbers and e-mails; DHCP/PPPoE sessions; a
Shadowserver sinkhole report and a leak list, each with a few bad rows of the kinds real feeds
carry (a bad address, a bad time, a short row, a row in the wrong encoding). Addresses use the
example.vn domain; nothing here is a real person.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương"]
MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Thanh", "Quốc", "Ngọc", "Đức", "Thu", "Gia", "Bảo", "Xuân"]
GIVEN = ["An", "Anh", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương",
         "Khánh", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Ngọc", "Phúc", "Phương", "Quân", "Sơn", "Tâm",
         "Thảo", "Thắng", "Trang", "Trung", "Tuấn", "Uyên", "Việt", "Yến", "Đạt", "Ánh"]
PROVINCES = ["Hà Nội", "TP. Hồ Chí Minh", "Đà Nẵng", "Hải Phòng", "Cần Thơ", "Thừa Thiên Huế", "Nghệ An"]
MOBILE_PREFIXES = ["090", "091", "093", "094", "096", "097", "098", "032", "033", "034", "035", "036",
                   "037", "038", "039", "070", "076", "077", "078", "079", "081", "082", "083", "084", "085",
                   "086", "088", "089"]
LEGACY_OF = {"032": "0162", "033": "0163", "034": "0164", "035": "0165", "036": "0166", "037": "0167",
             "038": "0168", "039": "0169", "070": "0120", "079": "0121", "077": "0122", "076": "0126",
             "078": "0128", "083": "0123", "084": "0124", "085": "0125", "081": "0127", "082": "0129"}
FAMILIES = [("mirai", "botnet"), ("mozi", "botnet"), ("gafgyt", "botnet"), ("andromeda", "malware"),
            ("emotet", "malware")]
IP_BLOCKS = ["14.160", "14.161", "113.160", "171.224", "27.72"]
REPORT_NAME = "2026-11-20-event4_sinkhole_http-vietnam-geo_asn.csv"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@dataclass
class Subscriber:
    account_id: str
    full_name: str
    msisdns: list[str]
    emails: list[str]
    service: str
    status: str
    sms_opt_out: bool
    email_opt_out: bool
    province: str


@dataclass(frozen=True)
class DemoFiles:
    subscribers: Path
    sessions: Path
    shadowserver: Path
    leaks: Path


def generate(directory: Path, *, subscribers: int, seed: int) -> DemoFiles:
    """Write the four demo input files into `directory` (the same seed gives the same files)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    people = [_subscriber(rng, index) for index in range(1, subscribers + 1)]
    sessions = _sessions(rng, people)
    files = DemoFiles(directory / "subscribers.csv", directory / "sessions.csv",
                      directory / REPORT_NAME, directory / "leak-2026-11.csv")
    _write_subscribers(files.subscribers, people)
    _write_csv(files.sessions, ["account_id", "ip", "start", "end"], sessions)
    files.shadowserver.write_bytes(_shadowserver(rng, sessions))
    files.leaks.write_bytes(_leaks(rng, people))
    return files


def _subscriber(rng: random.Random, index: int) -> Subscriber:
    name = f"{rng.choice(SURNAMES)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
    msisdn = _mobile_number(rng)
    ascii_name = _ascii(name).lower().split()
    emails = [f"{ascii_name[-1]}.{ascii_name[0]}{index}@example.vn"] if rng.random() < 0.8 else []
    return Subscriber(
        account_id=f"HN{100000 + index}", full_name=name, msisdns=[msisdn], emails=emails,
        service=rng.choices(["ftth", "mobile"], weights=[3, 1])[0],
        status=rng.choices(["active", "suspended", "terminated"], weights=[96, 2, 2])[0],
        sms_opt_out=rng.random() < 0.03, email_opt_out=rng.random() < 0.05, province=rng.choice(PROVINCES),
    )


def _mobile_number(rng: random.Random) -> str:
    """A number in a range the numbering plan has allocated (not every prefix block is)."""
    from notifier.identifiers import classify_msisdn

    while True:
        number = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**7):07d}"
        if classify_msisdn(number)[1] is None:  # kept-but-unknown ranges (0890-0895) would warn
            return number


def _ascii(text: str) -> str:
    from unicodedata import combining, normalize

    text = text.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in normalize("NFD", text) if not combining(c))


def _sessions(rng: random.Random, people: list[Subscriber]) -> list[list[str]]:
    rows: list[list[str]] = []
    used: set[str] = set()
    for person in people:
        if person.service != "ftth":
            continue
        start = NOW - timedelta(days=3, hours=rng.randrange(12))
        for _ in range(rng.randint(1, 3)):
            ip = _fresh_ip(rng, used)
            end = start + timedelta(hours=rng.randint(6, 30))
            rows.append([person.account_id, ip, _local(start), "" if end > NOW else _local(end)])
            start = end
    return rows


def _fresh_ip(rng: random.Random, used: set[str]) -> str:
    while True:
        ip = f"{rng.choice(IP_BLOCKS)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if ip not in used:
            used.add(ip)
            return ip


def _local(moment: datetime) -> str:
    """Operator logs are in local time (UTC+7), written without a zone."""
    return (moment + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")


def _write_subscribers(path: Path, people: list[Subscriber]) -> None:
    header = ["account_id", "full_name", "msisdn", "email", "service", "status", "sms_opt_out",
              "email_opt_out", "province"]
    rows = [[p.account_id, p.full_name, ";".join(p.msisdns), ";".join(p.emails), p.service, p.status,
             "1" if p.sms_opt_out else "0", "1" if p.email_opt_out else "0", p.province] for p in people]
    rows.append(["HN999998", "Số Sai", "12345", "", "ftth", "active", "0", "0", "Hà Nội"])  # bad phone
    _write_csv(path, header, rows)


def _shadowserver(rng: random.Random, sessions: list[list[str]]) -> bytes:
    header = ["timestamp", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "asn", "geo",
              "infection", "family", "tag", "naics"]
    rows: list[list[str]] = []
    for account_id, ip, start, end in rng.sample(sessions, k=min(60, len(sessions))):
        begin = datetime.fromisoformat(start).replace(tzinfo=UTC) - timedelta(hours=7)
        finish = datetime.fromisoformat(end).replace(tzinfo=UTC) - timedelta(hours=7) if end else NOW
        family, _ = rng.choice(FAMILIES)
        for _ in range(rng.randint(1, 3)):  # several hits per host: aggregated into one warning
            seen = begin + (finish - begin) * rng.random()
            rows.append([seen.strftime("%Y-%m-%d %H:%M:%SZ"), ip, str(rng.randrange(1024, 65535)),
                         "198.51.100.7", "80", "tcp", "45899", "VN", f"{family}-http", family, "", ""])
    for _ in range(5):  # hosts outside our address plan: unmatched
        rows.append([NOW.strftime("%Y-%m-%d %H:%M:%SZ"), f"203.0.113.{rng.randrange(1, 255)}", "4444",
                     "198.51.100.7", "80", "tcp", "45899", "VN", "mirai", "mirai", "", ""])
    rows.sort(key=lambda r: r[0])
    text = _csv_text(header, rows)
    bad = ("2026-11-20 01:00:00Z,14.160.300.1,5555,198.51.100.7,80,tcp,45899,VN,mirai,mirai,,\n"
           "hôm qua,14.160.1.1,5555,198.51.100.7,80,tcp,45899,VN,mirai,mirai,,\n"
           "2026-11-20 01:00:00Z,14.160.1.2\n")
    return text.encode("utf-8") + bad.encode("utf-8") + "2026-11-20 01:00:00Z,14.160.1.3,5555,198.51.100.7,80,tcp,45899,VN,mirai,mirai,Bùi,\n".encode("cp1258")


def _leaks(rng: random.Random, people: list[Subscriber]) -> bytes:
    header = ["msisdn", "email", "msisdn_sha256", "leaked_at", "source", "data_classes"]
    rows: list[list[str]] = []
    for person in rng.sample(people, k=min(40, len(people))):
        number = person.msisdns[0]
        style = rng.random()
        if style < 0.25 and number[:3] in LEGACY_OF:  # an old database still holds 11-digit numbers
            rows.append([LEGACY_OF[number[:3]] + number[3:], "", "", "2025-08-14", "shop-db-2025", "password;address"])
        elif style < 0.45:
            digest = hashlib.sha256(("84" + number[1:]).encode()).hexdigest()
            rows.append(["", "", digest, "2025-08-14", "shop-db-2025", "password;dob"])
        else:
            email = person.emails[0] if person.emails else ""
            rows.append([number[:4] + "." + number[4:7] + "." + number[7:], email, "", "2026-03-02",
                         "ecommerce-leak", "password;address;national_id"])
    for _ in range(3):  # other operators' customers: unmatched here
        rows.append([_mobile_number(rng), "", "", "2026-03-02", "ecommerce-leak", "password"])
    rows.append(["0999", "", "", "2026-03-02", "ecommerce-leak", "password"])  # not a phone number
    rows.append(["", "khong-phai-email", "", "2026-03-02", "ecommerce-leak", "password"])
    rows.append(["0912345678", "", "", "02/30/2026", "ecommerce-leak", "password"])  # bad date
    return _csv_text(header, rows).encode("utf-8")


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text(_csv_text(header, rows), encoding="utf-8")


def write_uniform_inputs(directory: Path, *, accounts: int) -> DemoFiles:
    """A uniform data set for load and crash tests: `accounts` subscribers, each with one phone,
    one e-mail, one open session and one sinkhole hit (no leak list)."""
    directory.mkdir(parents=True, exist_ok=True)
    ips = [f"14.{160 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}" for i in range(accounts)]
    files = DemoFiles(directory / "subscribers.csv", directory / "sessions.csv",
                      directory / "2026-11-20-event4_sinkhole-vn.csv", directory / "leak-none.csv")
    _write_csv(files.subscribers, ["account_id", "full_name", "msisdn", "email"],
               [[f"HN{i}", f"Nguyễn Văn Ánh {i}", f"091{i:07d}", f"khach{i}@example.vn"] for i in range(accounts)])
    _write_csv(files.sessions, ["account_id", "ip", "start", "end"],
               [[f"HN{i}", ip, "2026-11-19 08:00:00", ""] for i, ip in enumerate(ips)])
    _write_csv(files.shadowserver, ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
               [["2026-11-20 03:00:00Z", ip, "4000", "mirai", "mirai", ""] for ip in ips])
    return files


StepCallback = Callable[[str, int, float], None]


def load_uniform_campaign(database_url: str, directory: Path, *, accounts: int, channels: list[str],
                          on_step: StepCallback | None = None) -> int:
    """Write the uniform data set, import and match it, plan a campaign on `channels`; returns its id.

    Each step is its own unit of work; `on_step(label, rows, seconds)` hears how long each took
    (the ingest benchmark prints it).
    """
    from notifier.campaigns import create_campaign
    from notifier.db import session_scope
    from notifier.importing import import_assignments, import_feed, import_subscribers

    files = write_uniform_inputs(directory, accounts=accounts)
    tz = "Asia/Ho_Chi_Minh"
    steps: list[tuple[str, Callable[..., Any]]] = [
        ("subscribers import", lambda s: import_subscribers(s, files.subscribers, tz=tz)),
        ("sessions import", lambda s: import_assignments(s, files.sessions, fmt="sessions-csv", tz=tz)),
        ("feed import + match", lambda s: import_feed(s, files.shadowserver, fmt="shadowserver")),
    ]
    results = []
    for label, step in steps:
        started = time.perf_counter()
        with session_scope(database_url) as session:
            results.append(step(session))
        if on_step:
            on_step(label, accounts, time.perf_counter() - started)
    started = time.perf_counter()
    with session_scope(database_url) as session:
        plan = create_campaign(session, feed_id=results[-1].id, template="infected_device", channels=channels)
    if on_step:
        on_step(f"campaign plan ({len(channels)} ch.)", accounts, time.perf_counter() - started)
    return plan.campaign_id
