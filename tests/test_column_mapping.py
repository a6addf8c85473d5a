"""The operator's own export headers, configured once (`[subscribers.columns]` in the settings) and
used by every `subscribers import` that gives no `--column-map` (issue 7, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.db import session_scope
from notifier.errors import InputError
from notifier.ingest.subscribers import parse_subscribers
from notifier.models import Account, ContactPoint
from notifier.settings import Settings, reset_settings
from tests.factories import write_csv

runner = CliRunner()
OPERATOR_HEADERS = ["MA_KH", "HO_TEN", "SO_DT", "EMAIL", "TEN_DANG_NHAP"]
SETTINGS_FILE = """
[subscribers.columns]
MA_KH = "account_id"
HO_TEN = "full_name"
SO_DT = "msisdn"
EMAIL = "email"
TEN_DANG_NHAP = "usernames"
"""


@pytest.fixture
def operator_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "operator.toml"
    path.write_text(SETTINGS_FILE, encoding="utf-8")
    monkeypatch.setenv("NOTIFIER_CONFIG", str(path))
    reset_settings()
    yield path
    reset_settings()


def _export(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "khach_hang.csv", OPERATOR_HEADERS, [
        ["HN7", "Lê Quốc Đạt", "0912 345 678", "dat@example.vn", "hn_100089"],
        ["HN8", "Phạm Thị Hoa", "0987654321;0912345679", "", ""],
    ])


def test_the_settings_map_is_read_from_the_config_file(operator_config: Path) -> None:
    assert Settings().subscribers.columns["TEN_DANG_NHAP"] == "usernames"


def test_import_uses_the_configured_map_without_an_option(cli_db: str, operator_config: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["subscribers", "import", str(_export(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["accepted"], document["rejected"]) == (2, 0)
    with session_scope(cli_db) as session:
        account = session.exec(select(Account).where(Account.account_ref == "HN7")).one()
        assert account.full_name == "Lê Quốc Đạt"
        contacts = {(c.kind, c.value) for c in session.exec(select(ContactPoint).where(
            ContactPoint.account_id == account.id))}
        assert contacts == {("msisdn", "+84912345678"), ("email", "dat@example.vn"), ("username", "hn_100089")}


def test_a_column_map_option_replaces_the_configured_one(cli_db: str, operator_config: Path, tmp_path: Path) -> None:
    other = write_csv(tmp_path / "other.csv", ["CONTRACT", "NAME"], [["HN9", "Võ Văn Kiệt"]])
    mapping = tmp_path / "map.toml"
    mapping.write_text('[columns]\nCONTRACT = "account_id"\nNAME = "full_name"\n', encoding="utf-8")
    result = runner.invoke(app, ["subscribers", "import", str(other), "--column-map", str(mapping), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"] == 1


def test_without_a_map_the_operator_headers_are_missing_columns(cli_db: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["subscribers", "import", str(_export(tmp_path))])
    assert result.exit_code == 2 and "missing required column(s): account_id, full_name" in result.stderr


def test_a_map_naming_a_column_we_do_not_have_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="column map: 'msidsn' is not a subscriber column"):
        list(parse_subscribers(_export(tmp_path), column_map={"MA_KH": "account_id", "SO_DT": "msidsn"}))


def test_our_names_in_a_map_are_case_and_space_insensitive(tmp_path: Path) -> None:
    records = list(parse_subscribers(_export(tmp_path), column_map={
        "ma_kh": " Account_ID ", "HO_TEN": "FULL_NAME", "so_dt": "msisdn"}))
    assert [record.account_ref for record in records] == ["HN7", "HN8"]
    assert records[1].msisdns == ("+84987654321", "+84912345679")
