"""Billing-statement inserts (issue 8, item 5): the batch for the bill-print system (CSV, JSON, a PDF
proof read back and rendered to PNG), the states sent → delivered / failed through its answers, an
export that never exports twice, and billing rows that no worker ever touches. SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

import cli
from channels.billing import COLUMNS, PACKAGED_FONT, find_font
from notifier.billing import BillingCycle, apply_acks, export_cycle, rewrite_cycle
from notifier.campaigns import create_campaign
from notifier.db import session_scope
from notifier.dispatch.loops import run_campaign
from notifier.errors import ConfigError
from notifier.importing import import_assignments, import_feed, import_subscribers
from notifier.models import DeliveryEvent, MessagePart, Notification
from notifier.peers.smsc import SmscPeer
from notifier.settings import BillingSettings, Settings
from tests.conftest import make_settings
from tests.factories import write_csv

CYCLE = BillingCycle.parse("2026-12", 5)
BATCH = "BILL-2026-12-D05-001"
OPERATOR = "Nhà mạng Việt Thử Nghiệm"
SUBSCRIBERS = [  # account, name, phone, address, province, billing day
    ["HN1", "Nguyễn Văn Ánh", "0912345678", "Số 12 ngõ 34 phố Huế, phường Phố Huế, quận Hai Bà Trưng", "Hà Nội", "5"],
    ["HN2", "Trần Thị Bích Ngọc", "0987654321", "45 Lê Lợi, phường Bến Nghé, Quận 1", "Hồ Chí Minh", "5"],
    ["HN3", "Lê Quốc Đạt", "0901234599", "", "Đà Nẵng", "5"],                    # no address: suppressed
    ["HN4", "Phạm Minh Châu", "0933333333", "7 Trần Phú, phường Vĩnh Ninh", "Huế", "12"],  # billed on the 12th
    ["HN5", "Đỗ Thu Hà", "0944444444", "9 Nguyễn Trãi, Thanh Xuân", "Hà Nội", ""],  # no billing day: suppressed
]
runner = CliRunner()


def _settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    from notifier.settings import OperatorSettings

    return make_settings(database_url, operator=OperatorSettings(name=OPERATOR),
                         billing=BillingSettings(output_dir=tmp_path / "billing"), **overrides)


def _plan(settings: Settings, tmp_path: Path, channels: list[str]) -> int:
    """Import five subscribers, their sessions and a Mirai feed that hits each; plan a campaign."""
    subscribers = write_csv(tmp_path / "subscribers.csv",
                            ["account_id", "full_name", "msisdn", "address", "province", "billing_day"], SUBSCRIBERS)
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"],
                         [[row[0], f"14.160.1.{n}", "2026-11-19 08:00:00", ""] for n, row in enumerate(SUBSCRIBERS, 1)])
    feed = write_csv(tmp_path / "2026-11-20-event4_sinkhole_http-vietnam-geo_asn.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
                     [["2026-11-19 21:14:05Z", f"14.160.1.{n}", "51234", "mirai-http", "mirai", ""]
                      for n in range(1, len(SUBSCRIBERS) + 1)])
    with session_scope(settings.database_url) as session:
        assert import_subscribers(session, subscribers, tz=settings.timezone).accepted == len(SUBSCRIBERS)
        import_assignments(session, sessions, fmt="sessions-csv", tz=settings.timezone)
        feed_id = import_feed(session, feed, fmt="shadowserver").id
        plan = create_campaign(session, feed_id=feed_id or 0, template="infected_device", channels=channels)
    return plan.campaign_id


def _rows(database_url: str, channel: str = "billing") -> dict[str, Notification]:
    from notifier.models import Account

    with session_scope(database_url) as session:
        found = session.exec(select(Notification, Account.account_ref).join(Account, Account.id == Notification.account_id)
                             .where(Notification.channel == channel)).all()
        return {ref: notification for notification, ref in found}


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def exported(database_url: str, tmp_path: Path) -> tuple[Settings, int, object]:
    """A billing-only campaign run (nothing to send: it ends at once) and the cycle exported."""
    settings = _settings(database_url, tmp_path)
    campaign_id = _plan(settings, tmp_path, ["billing"])
    assert run_campaign(settings, campaign_id)["state"] == "done"
    return settings, campaign_id, export_cycle(settings, CYCLE)


def test_planning_needs_a_postal_address_and_a_billing_day(exported: tuple[Settings, int, object]) -> None:
    settings, _, _ = exported
    rows = _rows(settings.database_url)
    assert rows["HN3"].state == rows["HN5"].state == "suppressed"
    assert rows["HN3"].reason == "no postal address on record"
    assert rows["HN5"].reason == "no billing day on record"
    assert rows["HN4"].state == "planned"  # waits for the export of day 12
    assert rows["HN1"].destination == SUBSCRIBERS[0][3]


def test_export_writes_csv_json_and_a_pdf_proof_with_the_vietnamese_insert(
        exported: tuple[Settings, int, object], tmp_path: Path) -> None:
    import pypdfium2

    settings, campaign_id, summary = exported
    out = tmp_path / "billing"
    assert summary.batches == [BATCH] and summary.exported == 2 and summary.failed == 0
    assert sorted(Path(name).name for name in summary.files) == [f"{BATCH}.{ext}" for ext in ("csv", "json", "pdf")]
    assert sorted(path.name for path in out.iterdir()) == [f"{BATCH}.csv", f"{BATCH}.json", f"{BATCH}.pdf"]
    rows = _rows(settings.database_url)

    with open(out / f"{BATCH}.csv", encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == COLUMNS
    assert [row["account_id"] for row in table] == ["HN1", "HN2"]
    first = table[0]
    assert first["full_name"] == "Nguyễn Văn Ánh" and first["address"] == SUBSCRIBERS[0][3]
    assert first["province"] == "Hà Nội" and first["batch_id"] == BATCH
    assert first["reference"] == f"CB-{campaign_id}-{rows['HN1'].id}"
    insert = first["insert_text"]
    assert insert == rows["HN1"].text  # the text as handed over is the text stored
    assert insert.startswith("THÔNG BÁO CẢNH BÁO AN TOÀN THÔNG TIN\n")
    assert "nhiễm mã độc Mirai" in insert and "14.160.1.1" in insert and OPERATOR in insert
    assert f"Mã tham chiếu: {first['reference']}" in insert
    assert "Nguyễn Văn Ánh" not in insert  # the bill-print system prints name and address

    document = json.loads((out / f"{BATCH}.json").read_text(encoding="utf-8"))
    assert (document["batch_id"], document["cycle"], document["billing_day"], document["count"]) == (BATCH, "2026-12", 5, 2)
    assert document["inserts"] == [{column: row[column] for column in COLUMNS} for row in table]

    pdf = pypdfium2.PdfDocument(str(out / f"{BATCH}.pdf"))
    try:
        assert len(pdf) == 2  # one insert per page
        for number, row in enumerate(table):
            page_text = pdf[number].get_textpage().get_text_range()
            assert _flat(row["insert_text"]) in _flat(page_text)  # diacritics and all, as rendered
            assert OPERATOR in page_text and row["reference"] in page_text
        image = pdf[0].render(scale=2).to_pil()
        png = tmp_path / f"{BATCH}-page1.png"
        image.save(png)
    finally:
        pdf.close()
    print(f"\nbilling proof, page 1: {png}")
    assert png.stat().st_size > 10_000
    assert image.convert("L").getextrema()[0] < 64  # ink on the page, not a blank sheet


def test_export_marks_rows_sent_with_their_batch_and_never_exports_twice(
        exported: tuple[Settings, int, object], tmp_path: Path) -> None:
    settings, _, _ = exported
    rows = _rows(settings.database_url)
    assert rows["HN1"].state == rows["HN2"].state == "sent" and rows["HN1"].sent_at is not None
    with session_scope(settings.database_url) as session:
        parts = {part.notification_id: part for part in session.exec(select(MessagePart))}
        event = session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == rows["HN1"].id,
                                                         DeliveryEvent.to_state == "sent")).one()
    assert parts[rows["HN1"].id].provider_message_id == f"{BATCH}/HN1" and parts[rows["HN1"].id].channel == "billing"
    assert (event.from_state, event.source) == ("planned", "billing-export") and f"{BATCH}/HN1" in event.detail

    out = tmp_path / "billing"
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = export_cycle(settings, CYCLE)
    assert (again.batches, again.exported, again.files) == ([], 0, [])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # nothing new, nothing rewritten

    for path in out.iterdir():
        path.unlink()
    rewritten = rewrite_cycle(settings, CYCLE)
    assert rewritten.batches == [BATCH] and rewritten.exported == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # the same bytes, PDF included
    assert _rows(settings.database_url)["HN1"].state == "sent"

    day12 = export_cycle(settings, BillingCycle.parse("2026-12", 12))
    assert day12.batches == ["BILL-2026-12-D12-001"] and day12.exported == 1


def test_ack_delivers_printed_fails_failed_and_reports_bad_lines(exported: tuple[Settings, int, object],
                                                                 tmp_path: Path) -> None:
    settings, _, _ = exported
    ack = write_csv(tmp_path / "ack.csv", ["batch_id", "account_id", "status", "at", "reason"], [
        [BATCH, "HN1", "printed", "2026-12-06 09:30", ""],                     # line 2: local time
        [BATCH, "HN2", "FAILED", "2026-12-06T02:31:00Z", "địa chỉ không hợp lệ"],  # line 3
        ["BILL-2026-12-D05-009", "HN1", "printed", "2026-12-06 09:30", ""],    # line 4: unknown batch
        [BATCH, "HN4", "printed", "2026-12-06 09:30", ""],                     # line 5: not in that batch
        [BATCH, "HN1", "lost", "2026-12-06 09:30", ""],                        # line 6: bad status
        [BATCH, "HN2", "sent", "hôm qua", ""],                                 # line 7: bad time
        ["B-1", "HN1", "printed", "2026-12-06 09:30", ""],                     # line 8: not a batch id
        [BATCH, "HN1", "sent", "2026-12-06 09:40", ""],                        # line 9: HN1 again
    ])
    result = apply_acks(settings, ack)
    assert (result.accepted, result.rejected, result.counts) == (2, 6, {"delivered": 1, "failed": 1})
    reasons = {error["line"]: error["reason"] for error in result.errors}
    assert reasons[4] == "unknown batch BILL-2026-12-D05-009"
    assert reasons[5] == f"account HN4 is not in batch {BATCH}"
    assert reasons[6].startswith("status: 'lost'") and reasons[7].startswith("at: not a time")
    assert reasons[8].startswith("batch_id: not a batch id") and reasons[9] == f"{BATCH} account HN1 already on line 2"

    rows = _rows(settings.database_url)
    assert rows["HN1"].state == "delivered" and rows["HN1"].delivered_at.isoformat() == "2026-12-06T02:30:00+00:00"
    assert rows["HN2"].state == "failed" and rows["HN2"].reason == "bill-print system: địa chỉ không hợp lệ"
    with session_scope(settings.database_url) as session:
        states = {part.provider_message_id: part.state for part in session.exec(select(MessagePart))}
        events = session.exec(select(DeliveryEvent).where(DeliveryEvent.source == "billing-ack")
                              .order_by(DeliveryEvent.notification_id)).all()
    assert states == {f"{BATCH}/HN1": "delivered", f"{BATCH}/HN2": "failed"}
    assert [(e.from_state, e.to_state, e.provider_status) for e in events] == [
        ("sent", "delivered", "printed"), ("sent", "failed", "failed")]

    repeated = apply_acks(settings, write_csv(tmp_path / "ack2.csv", ["batch_id", "account_id", "status", "at"], [
        [BATCH, "HN1", "printed", "2026-12-06 09:30"], [BATCH, "HN2", "printed", "2026-12-07 09:30"]]))
    assert (repeated.accepted, repeated.unchanged, repeated.rejected) == (0, 1, 1)
    assert repeated.errors == [{"line": 3, "reason": f"printed: the insert {BATCH}/HN2 is already failed"}]


def test_billing_rows_never_reach_a_worker(database_url: str, tmp_path: Path, smsc: SmscPeer) -> None:
    settings = _settings(database_url, tmp_path, smsc=smsc)
    campaign_id = _plan(settings, tmp_path, ["sms", "billing"])
    status = run_campaign(settings, campaign_id)
    assert status["state"] == "done"
    assert status["by_channel"]["sms"] == {"delivered": 4, "undelivered": 1}  # 0901234599: the peer fails …99
    assert status["by_channel"]["billing"] == {"planned": 3, "suppressed": 2}  # waiting for the export
    assert len(smsc.messages()) == 5  # SMS only: nothing else went to a provider
    with session_scope(database_url) as session:
        billing_events = session.exec(select(DeliveryEvent.source).join(
            Notification, Notification.id == DeliveryEvent.notification_id).where(Notification.channel == "billing")).all()
    assert set(billing_events) <= {"planner"}  # no dispatcher, no worker ever moved one
    summary = export_cycle(settings, CYCLE)
    assert summary.exported == 2 and {row.state for row in _rows(database_url).values()} == {"sent", "planned", "suppressed"}


def test_cli_export_and_ack_print_one_line_or_json(cli_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(cli_db)
    campaign_id = _plan(settings, tmp_path, ["billing"])
    out = tmp_path / "batches"
    waiting = runner.invoke(cli.app, ["billing", "export", "--cycle", "2026-12", "--billing-day", "5", "--out", str(out)])
    assert waiting.exit_code == 0 and "0 insert(s) exported" in waiting.stderr  # not run yet: not released
    assert runner.invoke(cli.app, ["campaign", "run", str(campaign_id), "--json"]).exit_code == 0

    done = runner.invoke(cli.app, ["billing", "export", "--cycle", "2026-12", "--billing-day", "5", "--out", str(out),
                                   "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"cycle": "2026-12", "billing_day": 5, "batches": [BATCH], "exported": 2,
                                       "failed": 0, "rewritten": False,
                                       "files": [str(out / f"{BATCH}.{ext}") for ext in ("csv", "json", "pdf")]}
    ack = write_csv(tmp_path / "ack.csv", ["batch_id", "account_id", "status", "at"],
                    [[BATCH, "HN1", "sent", "2026-12-06 09:30"], [BATCH, "HNX", "sent", "2026-12-06 09:30"]])
    applied = runner.invoke(cli.app, ["billing", "ack", str(ack)])
    assert applied.exit_code == 0
    assert applied.stderr.splitlines() == ["billing ack: 1 delivered, 0 failed, 0 unchanged, 1 rejected",
                                           f"  line 3: account HNX is not in batch {BATCH}"]

    bad_cycle = runner.invoke(cli.app, ["billing", "export", "--cycle", "2026-13", "--billing-day", "5"])
    assert bad_cycle.exit_code == 2
    assert bad_cycle.stderr.strip() == "error: --cycle must be a month as YYYY-MM (e.g. 2026-12), not '2026-13'"
    no_batch = runner.invoke(cli.app, ["billing", "export", "--cycle", "2027-01", "--billing-day", "5", "--again"])
    assert no_batch.exit_code == 2 and no_batch.stderr.startswith("error: cycle 2027-01 day 5 has no exported batch")

    monkeypatch.setenv("NOTIFIER_BILLING__FONT_PATH", str(tmp_path / "missing.ttf"))
    from notifier.settings import reset_settings

    reset_settings()
    no_font = runner.invoke(cli.app, ["billing", "export", "--cycle", "2026-12", "--billing-day", "5"])
    assert no_font.exit_code == 2 and len(no_font.stderr.splitlines()) == 1
    assert no_font.stderr.startswith(f"error: billing.font_path {tmp_path / 'missing.ttf'} is not a file")


def test_the_font_ships_in_the_package_and_a_font_without_vietnamese_is_refused(tmp_path: Path) -> None:
    assert PACKAGED_FONT.is_file() and (PACKAGED_FONT.parent / "LICENSE-DejaVu.txt").is_file()
    assert find_font(None) == PACKAGED_FONT
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"\x00\x01\x00\x00 definitely not a font")
    with pytest.raises(ConfigError, match="is not a TrueType font"):
        find_font(not_a_font)
    copy = tmp_path / "copy.ttf"
    shutil.copy(PACKAGED_FONT, copy)
    assert find_font(copy) == copy
