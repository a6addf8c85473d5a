"""`notifier templates check | preview`: the check passes on the shipped library (CI runs this),
fails with every problem and one `error:` line on a broken one; preview prints an SMS with its
encoding and parts, and with `--account` renders the account's real data, audited."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.db import session_scope
from notifier.models import AuditLog, Feed, FeedItem
from tests.factories import add_account

runner = CliRunner()
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def test_check_passes_on_the_shipped_templates() -> None:
    result = runner.invoke(app, ["templates", "check"])
    assert result.exit_code == 0, result.output
    assert "all rules hold" in result.stdout
    for name in ("infected_device", "malware", "leaked_credentials", "data_leak", "scam_advisory", "general_advisory"):
        assert name in result.stdout


def test_check_json_lists_every_template_and_language() -> None:
    result = runner.invoke(app, ["templates", "check", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["problems"] == [] and len(document["templates"]) == 12


def test_check_prints_every_problem_then_one_error_line(tmp_path: Path) -> None:
    broken = Path(shutil.copytree(TEMPLATES_DIR, tmp_path / "templates"))
    (broken / "vi/data_leak/sms.txt.j2").write_text("Xem https://vnpt.vn. Mã {{ reference }}.", encoding="utf-8")
    result = runner.invoke(app, ["templates", "check", "--templates-dir", str(broken)])
    assert result.exit_code == 2
    assert "data_leak/vi sms [full]: variant 1: a URL scheme or link: 'https://'" in result.stdout
    assert "no sentence saying the operator never asks" in result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "problem(s) in the templates" in result.stderr


def test_check_budget_is_an_option() -> None:
    result = runner.invoke(app, ["templates", "check", "--sms-parts-ucs2", "1"])
    assert result.exit_code == 2
    assert "over budget" in result.stdout and "limit 1" in result.stdout


def test_preview_sms_shows_encoding_and_parts() -> None:
    result = runner.invoke(app, ["templates", "preview", "infected_device", "--channel", "sms"])
    assert result.exit_code == 0, result.output
    first, body = result.stdout.splitlines()[:2]
    assert first.startswith("UCS-2, 3 part(s), ")
    assert "CB-12-3456" in body and "Mirai" in body
    plain = runner.invoke(app, ["templates", "preview", "data_leak", "--channel", "sms-plain", "--language", "en"])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith("GSM-7, 2 part(s), ")


def test_preview_voice_email_and_billing() -> None:
    voice = runner.invoke(app, ["templates", "preview", "scam_advisory", "--channel", "voice"])
    assert voice.exit_code == 0 and "C B, 1 2, 3 4 5 6" in voice.stdout
    email = runner.invoke(app, ["templates", "preview", "malware", "--channel", "email", "--html"])
    assert email.exit_code == 0 and email.stdout.startswith("Subject: [")
    assert "<!DOCTYPE html>" in email.stdout
    billing = runner.invoke(app, ["templates", "preview", "leaked_credentials", "--channel", "billing"])
    assert billing.exit_code == 0 and billing.stdout.startswith("THÔNG BÁO CẢNH BÁO LỘ MẬT KHẨU")


def test_preview_refuses_an_unknown_template_or_channel() -> None:
    unknown = runner.invoke(app, ["templates", "preview", "nope"])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: unknown template 'nope'")
    channel = runner.invoke(app, ["templates", "preview", "malware", "--channel", "fax"])
    assert channel.exit_code == 2 and "unknown channel 'fax'" in channel.stderr


def _account_with_events(database_url: str) -> int:
    with session_scope(database_url) as session:
        account = add_account(session, "HNI-0042", name="Trần Văn Bình")
        feed = Feed(format="shadowserver", filename="botnet.csv", file_sha256="0" * 64)
        session.add(feed)
        session.flush()
        session.add(FeedItem(feed_id=feed.id, line=2, status="matched", kind="infected_device",
                             identifier_kind="ip", identifier="14.160.9.9", port=23, threat="mozi",
                             category="iot", seen_at=datetime(2026, 11, 19, 21, 14, tzinfo=UTC),
                             account_id=account.id))
        return feed.id or 0


def test_preview_with_an_account_uses_its_data_and_is_audited(cli_db: str) -> None:
    feed_id = _account_with_events(cli_db)
    result = runner.invoke(app, ["templates", "preview", "infected_device", "--channel", "email",
                                 "--account", "hni-0042", "--actor", "care-agent-7"])
    assert result.exit_code == 0, result.output
    assert "Kính gửi Quý khách Trần Văn Bình" in result.stdout
    assert "Mozi" in result.stdout and "14.160.9.9" in result.stdout
    assert f"account HNI-0042, feed {feed_id}, 1 event(s)" in result.stderr
    with session_scope(cli_db) as session:
        audit = session.exec(select(AuditLog)).one()
        assert (audit.actor, audit.action, audit.target, audit.result_count) == (
            "care-agent-7", "templates.preview", "hni-0042", 1)
        assert json.loads(audit.detail or "{}")["accounts"] == ["HNI-0042"]


def test_preview_of_an_unknown_account_fails_and_is_still_audited(cli_db: str) -> None:
    result = runner.invoke(app, ["templates", "preview", "malware", "--account", "XX-1"])
    assert result.exit_code == 2 and result.stderr == "error: account XX-1 not found\n"
    with session_scope(cli_db) as session:
        audit = session.exec(select(AuditLog)).one()
        assert (audit.action, audit.result_count) == ("templates.preview", 0)
