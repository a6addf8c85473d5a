"""A campaign's template must fit the kind of its feed (issue 5, item 1): a leak warning is never
planned for infected devices nor the reverse, and `templates/catalog.toml` says which fits which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from cli import app
from notifier.campaigns import create_campaign
from notifier.db import session_scope
from notifier.errors import ConfigError, InputError
from notifier.importing import import_feed
from notifier.models import Campaign, Feed, FeedItem
from notifier.settings import TEMPLATES_DIR
from notifier.template_catalog import CATALOG_FILE_NAME, TemplateCatalog, load_catalog
from tests.factories import UTC_NOON, add_account, write_csv

runner = CliRunner()
BOTH_KINDS = frozenset({"infected_device", "data_leak"})


def _leak_feed(session: Session, tmp_path: Path) -> int:
    path = write_csv(tmp_path / "leak.csv", ["msisdn", "email", "leaked_at", "source", "data_classes"],
                     [["0912345678", "", "2026-11-18", "forum-dump-2026", "password;address"]])
    return import_feed(session, path, fmt="leak-csv", source="AIS").id or 0


def _sinkhole_feed(session: Session, tmp_path: Path) -> int:
    path = write_csv(tmp_path / "2026-11-20-event4_sinkhole-vn.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
                     [["2026-11-19 21:14:05Z", "14.160.1.2", "51234", "mirai", "mirai", ""]])
    return import_feed(session, path, fmt="shadowserver").id or 0


def _compromised_account_feed(session: Session, tmp_path: Path) -> int:
    path = write_csv(tmp_path / "2026-11-20-compromised_account-vn.csv",
                     ["timestamp", "email", "infection", "service", "username"],
                     [["2026-11-19 21:14:05Z", "anh@example.vn", "redline-stealer", "webmail", "anh"]])
    return import_feed(session, path, fmt="shadowserver").id or 0


def _mixed_feed(session: Session) -> int:
    """A feed holding both kinds of event (an Authority list could): built row by row, since no
    shipped parser mixes them in one file."""
    feed = Feed(format="ais-json", filename="mixed.json", file_sha256="0" * 64, kind="infected_device")
    session.add(feed)
    session.flush()
    session.add_all([
        FeedItem(feed_id=feed.id, line=1, status="unmatched", kind="infected_device", identifier_kind="ip",
                 identifier="14.160.1.2", seen_at=UTC_NOON, threat="mirai"),
        FeedItem(feed_id=feed.id, line=2, status="unmatched", kind="data_leak", identifier_kind="msisdn",
                 identifier="+84912345679"),
        FeedItem(feed_id=feed.id, line=3, status="rejected", reason="bad line"),
    ])
    session.flush()
    return feed.id or 0


def _campaigns(session: Session) -> list[Campaign]:
    return list(session.exec(select(Campaign)))


def test_a_leak_feed_refuses_the_infected_device_template(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        feed_id = _leak_feed(session, tmp_path)
        assert session.get(Feed, feed_id).kind == "data_leak"
        with pytest.raises(InputError) as caught:
            create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        assert str(caught.value) == (f"feed {feed_id} is a data_leak feed; template infected_device is for "
                                     "infected_device feeds (use data_leak or general_advisory or leaked_credentials)")
        assert _campaigns(session) == []
        plan = create_campaign(session, feed_id=feed_id, template="data_leak", channels=["sms"])
        assert (plan.accounts, plan.planned) == (1, 1)


def test_an_infected_device_feed_refuses_the_data_leak_template(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _sinkhole_feed(session, tmp_path)
        with pytest.raises(InputError) as caught:
            create_campaign(session, feed_id=feed_id, template="data_leak", channels=["sms", "email"])
        assert str(caught.value) == (f"feed {feed_id} is an infected_device feed; template data_leak is for "
                                     "data_leak feeds (use general_advisory or infected_device or malware)")
        assert _campaigns(session) == []
        create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms", "email"])
        assert [c.template for c in _campaigns(session)] == ["infected_device"]


def test_shadowserver_compromised_accounts_are_a_leak_feed(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _compromised_account_feed(session, tmp_path)
        assert session.get(Feed, feed_id).kind == "data_leak"
        with pytest.raises(InputError, match=f"feed {feed_id} is a data_leak feed"):
            create_campaign(session, feed_id=feed_id, template="infected_device", channels=["email"])
        create_campaign(session, feed_id=feed_id, template="data_leak", channels=["email"])


def test_a_mixed_feed_refuses_both_single_kind_templates(database_url: str) -> None:
    with session_scope(database_url) as session:
        feed_id = _mixed_feed(session)
        for template in ("infected_device", "data_leak"):
            with pytest.raises(InputError) as caught:
                create_campaign(session, feed_id=feed_id, template=template, channels=["sms"])
            assert str(caught.value) == (
                f"feed {feed_id} mixes data_leak and infected_device events; template {template} is only for "
                f"{template} feeds (use general_advisory)")
        assert _campaigns(session) == []


def test_a_template_made_for_several_kinds_fits_a_mixed_feed(database_url: str, tmp_path: Path) -> None:
    (tmp_path / CATALOG_FILE_NAME).write_text(
        (TEMPLATES_DIR / CATALOG_FILE_NAME).read_text(encoding="utf-8")
        .replace('kinds = ["advisory", "infected_device", "data_leak"]', 'kinds = ["infected_device", "data_leak"]'),
        encoding="utf-8")
    catalog = load_catalog(tmp_path)
    assert catalog.kinds["general_advisory"] == BOTH_KINDS
    with session_scope(database_url) as session:
        feed_id = _mixed_feed(session)
        with pytest.raises(InputError, match=r"\(use general_advisory\)$"):
            create_campaign(session, feed_id=feed_id, template="data_leak", channels=["sms"], catalog=catalog)
        plan = create_campaign(session, feed_id=feed_id, template="general_advisory", channels=["sms"],
                               catalog=catalog)
        assert [c.template for c in _campaigns(session)] == ["general_advisory"]
        assert plan.planned == 0  # nothing matched: planned, not guessed
        leak_id = _leak_feed(session, tmp_path)
        create_campaign(session, feed_id=leak_id, template="general_advisory", channels=["sms"], catalog=catalog)


def test_a_template_missing_from_the_catalog_is_refused(database_url: str, tmp_path: Path) -> None:
    catalog = TemplateCatalog({"data_leak": frozenset({"data_leak"})}, source="catalog.toml")
    with session_scope(database_url) as session:
        feed_id = _sinkhole_feed(session, tmp_path)
        with pytest.raises(InputError) as caught:
            create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"], catalog=catalog)
        assert str(caught.value) == "template infected_device is not in the template catalog catalog.toml (listed: data_leak)"
        assert _campaigns(session) == []


@pytest.mark.parametrize(("text", "message"), [
    (None, "template catalog missing"),
    ("[data_leak\nkinds = 1", "not valid TOML"),
    ('[data_leak]\nkind = ["data_leak"]\n', "[data_leak] needs kinds"),
    ("[data_leak]\nkinds = []\n", "[data_leak] needs kinds"),
    ('data_leak = "data_leak"\n', "[data_leak] needs kinds"),
    ('[data_leak]\nkinds = ["data-leak"]\n', "unknown feed kind(s) data-leak (known: infected_device, data_leak, advisory)"),
])
def test_a_broken_catalog_is_a_config_error(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / CATALOG_FILE_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path)
    assert message in str(caught.value) and CATALOG_FILE_NAME in str(caught.value)


def test_the_shipped_catalog_lists_exactly_the_shipped_templates() -> None:
    catalog = load_catalog()  # the configured templates directory
    assert catalog.kinds["infected_device"] == {"infected_device"} and catalog.kinds["data_leak"] == {"data_leak"}
    for language in (entry for entry in TEMPLATES_DIR.iterdir() if entry.is_dir()):
        folders = {entry.name for entry in language.iterdir() if entry.is_dir()}
        assert folders == set(catalog.kinds), language.name


# --- the command line ----------------------------------------------------------------------------


def test_cli_refuses_a_template_for_another_kind_in_one_line(cli_db: str, tmp_path: Path) -> None:
    leak = write_csv(tmp_path / "leak.csv", ["msisdn", "source"], [["0912345678", "forum-dump-2026"]])
    imported = runner.invoke(app, ["feed", "import", str(leak), "--format", "leak-csv", "--json"])
    assert imported.exit_code == 0, imported.output
    feed_id = json.loads(imported.stdout)["id"]

    refused = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--template", "infected_device"])
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == [f"error: feed {feed_id} is a data_leak feed; template infected_device "
                                           "is for infected_device feeds (use data_leak or general_advisory or "
                                           "leaked_credentials)"]
    assert "0912345678" not in refused.output and "+84912345678" not in refused.output

    created = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--template", "data_leak", "--json"])
    assert created.exit_code == 0, created.output
    with session_scope(cli_db) as session:
        assert [c.template for c in _campaigns(session)] == ["data_leak"]
