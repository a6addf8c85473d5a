"""Templates per threat category (issue 8, item 9): one feed with a Mirai-infected router, a
FluBot-infected phone and a compromised mailbox tells each subscriber their own story, chosen per
account by `--template auto`; an explicit template still tells every account the same one; an
account with several categories follows the rule in `notifier/threat_categories.py`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from cli import app
from notifier.campaigns import create_campaign
from notifier.db import session_scope
from notifier.dispatch.delivery import _prepare, render_notification
from notifier.dispatch.recording import BatchReport
from notifier.dispatch.runtime import Runtime
from notifier.errors import ConfigError, InputError
from notifier.importing import import_assignments, import_feed
from notifier.models import Account, Campaign, FeedItem, Notification, NotificationItem
from notifier.rendering import Renderer
from notifier.settings import TEMPLATES_DIR
from notifier.template_catalog import CATALOG_FILE_NAME, load_catalog
from notifier.threat_categories import (
    BOTNET, IOT_MALWARE, LEAKED_CREDENTIALS, LEAKED_PERSONAL_DATA, PC_MALWARE, PHONE_MALWARE, SCAM,
    GENERAL_ADVISORY, account_story, advisory_category, item_category,
)
from tests.conftest import make_settings
from tests.factories import add_account, write_csv

runner = CliRunner()
AIS_DATA = Path(__file__).parent / "data" / "ais"

# account → (how it is reached by the feed, what its events are)
IPS = {"MIRAI": "14.160.1.1", "FLUBOT": "14.160.1.2", "UNKNOWN": "14.160.1.3", "TWO_DEVICES": "14.160.1.4",
       "DEVICE_AND_LEAK": "14.160.1.8"}
PHONES = {"LEAK_PW": "0912000006", "LEAK_NOPW": "0912000007", "DEVICE_AND_LEAK": "0912000008",
          "PW_AND_PERSONAL": "0912000009"}
MAILBOX = ("COMPROMISED", "anh.nguyen@example.vn")


def _accounts(session: Session, tmp_path: Path) -> None:
    """The subscribers, and the sessions that put the sinkhole's IPs on their lines."""
    refs = sorted({*IPS, *PHONES, MAILBOX[0]})
    for ref in refs:
        phone = PHONES.get(ref)
        add_account(session, ref, msisdn=("+84" + phone[1:]) if phone else "+8491" + f"{refs.index(ref):07d}",
                    email=MAILBOX[1] if ref == MAILBOX[0] else None)
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"],
                         [[ref, ip, "2026-11-19 08:00:00", ""] for ref, ip in IPS.items()])
    import_assignments(session, sessions, fmt="sessions-csv", tz="UTC")


def _sinkhole(session: Session, tmp_path: Path, *, again: bool = False) -> int:
    rows = [("MIRAI", "mirai"), ("FLUBOT", "flubot"), ("UNKNOWN", "xyzbot"),
            ("TWO_DEVICES", "mirai"), ("TWO_DEVICES", "flubot"), ("DEVICE_AND_LEAK", "flubot")]
    path = write_csv(tmp_path / "2026-11-20-event4_sinkhole-vn.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
                     [[f"2026-11-19 21:1{n}:05Z", IPS[ref], "51234", family, family, ""]
                      for n, (ref, family) in enumerate(rows)])
    return import_feed(session, path, fmt="shadowserver", again=again).id or 0


def _compromised_accounts(session: Session, tmp_path: Path) -> int:
    path = write_csv(tmp_path / "2026-11-20-compromised_account-vn.csv",
                     ["timestamp", "email", "infection", "service", "username"],
                     [["2026-11-19 21:14:05Z", MAILBOX[1], "redline-stealer", "webmail", "anh"]])
    return import_feed(session, path, fmt="shadowserver").id or 0


def _leak_list(session: Session, tmp_path: Path) -> int:
    rows = [(PHONES["LEAK_PW"], "password;email"), (PHONES["LEAK_NOPW"], "address;dob"),
            (PHONES["DEVICE_AND_LEAK"], "password"), (PHONES["PW_AND_PERSONAL"], "address;national_id"),
            (PHONES["PW_AND_PERSONAL"], "password")]
    path = write_csv(tmp_path / "leak.csv", ["msisdn", "leaked_at", "source", "data_classes"],
                     [[phone, "2026-11-18", f"shop-db-{n}", classes] for n, (phone, classes) in enumerate(rows)])
    return import_feed(session, path, fmt="leak-csv").id or 0


def _one_feed(session: Session, tmp_path: Path) -> int:
    """One feed holding all three files' events, parsed and matched as each importer does (an
    Authority list could mix them; no shipped format does in one file): the others' items move in."""
    _accounts(session, tmp_path)
    target = _sinkhole(session, tmp_path)
    for offset, other in ((1000, _compromised_accounts(session, tmp_path)), (2000, _leak_list(session, tmp_path))):
        session.execute(sa.update(FeedItem).where(FeedItem.feed_id == other)
                        .values(feed_id=target, line=FeedItem.line + offset))
    matched = session.exec(select(sa.func.count()).select_from(FeedItem).where(
        FeedItem.feed_id == target, FeedItem.status == "matched")).one()
    assert matched == 12  # 6 sinkhole lines, 1 mailbox, 5 leak rows: every event reached its account
    return target


def _by_account(session: Session, campaign_id: int) -> dict[str, Notification]:
    return {ref: notification for notification, ref in session.exec(
        select(Notification, Account.account_ref).join(Account, Account.id == Notification.account_id)
        .where(Notification.campaign_id == campaign_id, Notification.channel == "sms"))}


def _sms_as_dispatch_renders(database_url: str, campaign_id: int) -> dict[str, str]:
    """Each account's SMS rendered by the worker's own path (`_prepare`: one SELECT, then render)."""
    with session_scope(database_url) as session:
        session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(state="running"))
        session.execute(sa.update(Notification).where(Notification.campaign_id == campaign_id)
                        .values(state="queued"))
        ids = {n.id: ref for ref, n in _by_account(session, campaign_id).items()}
    runtime = Runtime(settings=make_settings(database_url), renderer=Renderer(TEMPLATES_DIR))
    sends = _prepare(runtime, list(ids), BatchReport())
    return {ids[send.notification_id]: send.message.body for send in sends}


def _linked_lines(session: Session, notification: Notification) -> list[int]:
    return sorted(session.exec(select(FeedItem.line).join(NotificationItem, NotificationItem.feed_item_id == FeedItem.id)
                               .where(NotificationItem.notification_id == notification.id)))


# --- the mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "threat", "category", "classes", "expected"), [
    ("infected_device", "mirai", "botnet", None, IOT_MALWARE),  # Shadowserver sinkhole
    ("infected_device", None, "camera", None, IOT_MALWARE),  # compromised_iot: its device_type
    ("infected_device", "Android.Banker.FluBot", "botnet", None, PHONE_MALWARE),
    ("infected_device", "emotet", "botnet", None, PC_MALWARE),  # a botnet, but on a Windows PC
    ("infected_device", "xyzbot", "botnet", None, BOTNET),  # a family nobody placed
    ("infected_device", None, None, None, BOTNET),
    ("infected_device", "unknown", "mobile malware", None, PHONE_MALWARE),  # an Authority's category
    ("infected_device", "unknown", "smartphone", None, PHONE_MALWARE),
    ("infected_device", "unknown", "PC", None, PC_MALWARE),
    ("data_leak", "redline-stealer", "compromised_account", "password", LEAKED_CREDENTIALS),
    ("data_leak", "shop-db", "data_leak", "email;Password", LEAKED_CREDENTIALS),
    ("data_leak", "shop-db", "data_leak", "address;dob", LEAKED_PERSONAL_DATA),
    ("data_leak", "shop-db", "data_leak", "password_hint", LEAKED_PERSONAL_DATA),
    ("data_leak", "AIS-list", "data_leak", None, LEAKED_PERSONAL_DATA),
])
def test_each_feed_item_has_one_threat_category(kind: str, threat: str | None, category: str | None,
                                                classes: str | None, expected: str) -> None:
    item = SimpleNamespace(kind=kind, threat=threat, category=category, data_classes=classes)
    assert item_category(item) == expected


@pytest.mark.parametrize(("category", "name", "expected"), [
    ("phishing", "Tin nhắn giả mạo ngân hàng", SCAM), ("Lừa đảo trực tuyến", None, SCAM),
    (None, "Scam calls impersonating the police", SCAM), ("vulnerability", "Lỗ hổng modem FTTH", GENERAL_ADVISORY),
    (None, None, GENERAL_ADVISORY),
])
def test_an_advisory_is_a_scam_warning_only_when_it_says_so(category: str | None, name: str | None,
                                                             expected: str) -> None:
    assert advisory_category({"threat": {"category": category, "name": name}}) == expected


def test_the_shipped_catalog_gives_every_category_one_template() -> None:
    assert load_catalog(TEMPLATES_DIR).categories == {
        BOTNET: "infected_device", IOT_MALWARE: "infected_device", PHONE_MALWARE: "malware",
        PC_MALWARE: "malware", LEAKED_CREDENTIALS: "leaked_credentials", LEAKED_PERSONAL_DATA: "data_leak",
        SCAM: "scam_advisory", GENERAL_ADVISORY: "general_advisory",
    }


def test_a_mixed_account_is_told_one_story() -> None:
    mirai = SimpleNamespace(kind="infected_device", threat="mirai", category="botnet", data_classes=None)
    flubot = SimpleNamespace(kind="infected_device", threat="flubot", category="botnet", data_classes=None)
    emotet = SimpleNamespace(kind="infected_device", threat="emotet", category="botnet", data_classes=None)
    personal = SimpleNamespace(kind="data_leak", threat="a", category="data_leak", data_classes="address")
    password = SimpleNamespace(kind="data_leak", threat="b", category="data_leak", data_classes="password")
    assert account_story([flubot, mirai]).category == IOT_MALWARE  # the device story that names both
    assert account_story([flubot, emotet]).category == PHONE_MALWARE  # both on phones/PCs: malware
    story = account_story([personal, password])
    assert (story.category, story.items, story.untold) == (LEAKED_CREDENTIALS, [password, personal], [])
    story = account_story([password, flubot])
    assert (story.category, story.items, story.untold) == (PHONE_MALWARE, [flubot], [password])


# --- one feed, each account its story ---------------------------------------------------------------


def test_auto_gives_each_account_the_template_of_its_category(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _one_feed(session, tmp_path)
        plan = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"])
        assert (plan.accounts, plan.planned, plan.untold) == (9, 9, 1)
        assert plan.templates == {"data_leak": 1, "infected_device": 3, "leaked_credentials": 3, "malware": 2}
        assert session.get(Campaign, plan.campaign_id).template == "auto"
        chosen = {ref: json.loads(n.context)["template"] for ref, n in _by_account(session, plan.campaign_id).items()}
    assert chosen == {
        "MIRAI": "infected_device", "FLUBOT": "malware", "UNKNOWN": "infected_device",
        "TWO_DEVICES": "infected_device", "COMPROMISED": "leaked_credentials", "LEAK_PW": "leaked_credentials",
        "LEAK_NOPW": "data_leak", "DEVICE_AND_LEAK": "malware", "PW_AND_PERSONAL": "leaked_credentials",
    }
    sms = _sms_as_dispatch_renders(database_url, plan.campaign_id)
    assert len(sms) == 9
    # A router with Mirai: the device story, router/camera steps.
    assert "thiết bị của Quý khách nhiễm mã độc Mirai (IP 14.160.1.1, 04:10 20/11)" in sms["MIRAI"]
    assert "modem/camera" in sms["MIRAI"]
    # A phone with FluBot: the phone/PC story ("máy", not "thiết bị"), remove the unknown app.
    assert "máy của Quý khách nhiễm mã độc FluBot (IP 14.160.1.2" in sms["FLUBOT"]
    assert "Gỡ ứng dụng lạ" in sms["FLUBOT"] and "modem" not in sms["FLUBOT"]
    # A family nobody placed: named as it came, with the general device steps.
    assert "thiết bị của Quý khách nhiễm mã độc Xyzbot (IP 14.160.1.3" in sms["UNKNOWN"]
    assert "modem/camera, cập nhật phần mềm" in sms["UNKNOWN"]
    # Mirai and FluBot behind one line: one device warning, the other threat counted in the SMS.
    assert "thiết bị của Quý khách nhiễm mã độc FluBot (IP 14.160.1.4" in sms["TWO_DEVICES"]
    assert "và 1 mã độc khác" in sms["TWO_DEVICES"]
    # A compromised mailbox and leak rows with a password: the credentials story, masked login.
    for ref in ("COMPROMISED", "LEAK_PW", "PW_AND_PERSONAL"):
        assert "mật khẩu tài khoản" in sms[ref] and "bị lộ" in sms[ref] and "xác thực 2 bước" in sms[ref], ref
        assert "mã độc" not in sms[ref]
    assert "mật khẩu tài khoản a***@example.vn của Quý khách bị lộ" in sms["COMPROMISED"]
    assert "mật khẩu tài khoản +8491****006 của Quý khách bị lộ" in sms["LEAK_PW"]
    # A leak without a password: the personal-data story names what leaked.
    assert "Ngày sinh và địa chỉ của Quý khách bị lộ" in sms["LEAK_NOPW"]
    assert "mã độc" not in sms["LEAK_NOPW"] and "mật khẩu tài khoản" not in sms["LEAK_NOPW"]
    # Every message still carries its own reference.
    with session_scope(database_url) as session:
        for ref, notification in _by_account(session, plan.campaign_id).items():
            assert f"CB-{plan.campaign_id}-{notification.id}" in sms[ref]


def test_a_device_and_a_leak_on_one_account_tell_the_device_and_leave_the_leak_unlinked(
        database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _one_feed(session, tmp_path)
        plan = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms", "email"])
        both = {n.channel: n for n in session.exec(select(Notification).join(Account).where(
            Notification.campaign_id == plan.campaign_id, Account.account_ref == "DEVICE_AND_LEAK"))}
        assert set(both) == {"sms", "email"}
        for notification in both.values():
            context = json.loads(notification.context)
            assert context["template"] == "malware" and context["threats"] == ["flubot"]
            assert context["data_classes"] == [] and notification.threat == "flubot"
            assert _linked_lines(session, notification) == [7]  # its sinkhole line, not its leak row
        leak_row = session.exec(select(FeedItem).where(FeedItem.feed_id == feed_id, FeedItem.line == 2004)).one()
        assert leak_row.status == "matched"  # still the account's; no warning claims to have told it
        assert session.exec(select(NotificationItem).where(NotificationItem.feed_item_id == leak_row.id)).all() == []
        # Credentials and other personal data: one credentials warning linking both rows, quoting
        # the data of both.
        [pw] = [n for n in _by_account(session, plan.campaign_id).values()
                if json.loads(n.context)["template"] == "leaked_credentials" and _linked_lines(session, n) == [2005, 2006]]
        assert json.loads(pw.context)["data_classes"] == ["address", "national_id", "password"]


def test_a_device_already_warned_about_lets_the_new_leak_be_told(database_url: str, tmp_path: Path) -> None:
    """Cooldown per story: the same FluBot within the cooldown joins its earlier warning, and the
    account's new leak becomes the story this campaign tells."""
    with session_scope(database_url) as session:
        _accounts(session, tmp_path)
        first = create_campaign(session, feed_id=_sinkhole(session, tmp_path), template="auto", channels=["sms"])
        second_feed = _sinkhole(session, tmp_path, again=True)  # the same sightings, reported again
        leak = _leak_list(session, tmp_path)
        session.execute(sa.update(FeedItem).where(FeedItem.feed_id == leak)
                        .values(feed_id=second_feed, line=FeedItem.line + 2000))
        second = create_campaign(session, feed_id=second_feed, template="auto", channels=["sms"])
        assert second.untold == 0 and second.attached == 4  # the device-only accounts: nothing new
        told = _by_account(session, second.campaign_id)
        assert json.loads(told["DEVICE_AND_LEAK"].context)["template"] == "leaked_credentials"
        earlier = _by_account(session, first.campaign_id)["DEVICE_AND_LEAK"]
        assert len(_linked_lines(session, earlier)) == 2  # the first FluBot sighting and this one


def test_the_story_a_campaign_left_out_is_told_by_an_untold_campaign(database_url: str, tmp_path: Path) -> None:
    """The leak of an account told about its infected phone is left unlinked; a follow-up campaign
    on the same feed and channel (`untold`) tells it, to that account alone, and only once."""
    with session_scope(database_url) as session:
        feed_id = _one_feed(session, tmp_path)
        first = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"])
        assert first.untold == 1
        follow_up = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"], untold=True)
        assert (follow_up.accounts, follow_up.planned, follow_up.attached, follow_up.untold) == (1, 1, 0, 0)
        [(ref, told)] = _by_account(session, follow_up.campaign_id).items()
        assert ref == "DEVICE_AND_LEAK" and json.loads(told.context)["template"] == "leaked_credentials"
        device = _by_account(session, first.campaign_id)["DEVICE_AND_LEAK"]
        assert set(_linked_lines(session, told)).isdisjoint(_linked_lines(session, device))
        again = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"], untold=True)
        assert (again.accounts, again.planned) == (0, 0)


# --- an explicit template is unchanged ---------------------------------------------------------------


def test_an_explicit_template_tells_every_account_the_same_story(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        _accounts(session, tmp_path)
        feed_id = _sinkhole(session, tmp_path)
        with pytest.raises(InputError, match="is an infected_device feed; template data_leak"):
            create_campaign(session, feed_id=feed_id, template="data_leak", channels=["sms"])
        plan = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        assert plan.templates == {"infected_device": 5} and plan.untold == 0
        contexts = {ref: json.loads(n.context) for ref, n in _by_account(session, plan.campaign_id).items()}
        assert all("template" not in context for context in contexts.values())
    sms = _sms_as_dispatch_renders(database_url, plan.campaign_id)
    assert "Quý khách có thiết bị nhiễm mã độc FluBot" in sms["FLUBOT"]  # the infected-device words


def test_the_renderer_follows_the_notifications_template(database_url: str, tmp_path: Path) -> None:
    """`render_notification` (e-mail, previews) renders each account's own template too."""
    with session_scope(database_url) as session:
        feed_id = _one_feed(session, tmp_path)
        plan = create_campaign(session, feed_id=feed_id, template="auto", channels=["email"])
        campaign = session.get(Campaign, plan.campaign_id)
        runtime = Runtime(settings=make_settings(database_url), renderer=Renderer(TEMPLATES_DIR))
        mails = {}
        for notification in session.exec(select(Notification).where(Notification.campaign_id == plan.campaign_id)):
            account = session.get(Account, notification.account_id)
            mails[account.account_ref] = render_notification(runtime, notification, campaign, account)
    subjects = {ref: mail.subject.removeprefix("[Nhà mạng] Cảnh báo: ") for ref, mail in mails.items()}
    assert subjects["MIRAI"] == "thiết bị trên đường truyền của Quý khách có dấu hiệu nhiễm mã độc Mirai"
    assert subjects["FLUBOT"] == "máy tính hoặc điện thoại của Quý khách có dấu hiệu nhiễm mã độc FluBot"
    assert subjects["DEVICE_AND_LEAK"] == subjects["FLUBOT"]
    assert subjects["COMPROMISED"] == subjects["LEAK_PW"] == "mật khẩu tài khoản của Quý khách có dấu hiệu bị lộ"
    assert subjects["LEAK_NOPW"] == "thông tin cá nhân của Quý khách có dấu hiệu bị lộ lọt"
    # Malware and a botnet on one line: the infected-device story names both.
    assert subjects["TWO_DEVICES"].endswith("nhiễm mã độc FluBot và Mirai")
    assert "- Mã độc: FluBot và Mirai" in mails["TWO_DEVICES"].body


# --- advisories ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("category", "template"), [("vulnerability", "general_advisory"),
                                                    ("phishing", "scam_advisory")])
def test_auto_on_an_advisory_follows_the_requests_category(database_url: str, tmp_path: Path, category: str,
                                                           template: str) -> None:
    request = json.loads((AIS_DATA / "advisory_ftth.json").read_text(encoding="utf-8"))
    request["threat"]["category"] = category
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    with session_scope(database_url) as session:
        for ref in ("FT1", "FT2"):
            add_account(session, ref).service = "ftth"
        feed_id = import_feed(session, path, fmt="ais-json").id or 0
        plan = create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"])
        assert plan.templates == {template: 2}
        assert {json.loads(n.context)["template"] for n in _by_account(session, plan.campaign_id).values()} == {template}


# --- the catalog's `categories` --------------------------------------------------------------------------


def _catalog_copy(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    """The shipped catalog with (old, new) text replaced, written to `tmp_path`."""
    text = (TEMPLATES_DIR / CATALOG_FILE_NAME).read_text(encoding="utf-8")
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / CATALOG_FILE_NAME).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("old", "new", "message"), [
    ('categories = ["scam"]', 'categories = ["scams"]', "[scam_advisory] names unknown threat category scams"),
    ('categories = ["scam"]', 'categories = ["scam", "botnet"]',
     "threat category botnet is claimed by both [infected_device] and [scam_advisory]"),
    ('categories = ["scam"]', 'categories = "scam"', "[scam_advisory] categories must be a list"),
    ("[general_advisory]", "[auto]\nkinds = [\"advisory\"]\n\n[general_advisory]", "[auto] cannot be a template"),
])
def test_a_wrong_categories_key_is_a_config_error(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_catalog(_catalog_copy(tmp_path, (old, new)))
    assert message in str(caught.value)


def test_auto_refuses_a_template_claiming_a_category_of_another_kind(database_url: str, tmp_path: Path) -> None:
    """A leak template claiming PC malware would tell an infected PC that its data leaked."""
    catalog = load_catalog(_catalog_copy(
        tmp_path, ('categories = ["phone_malware", "pc_malware"]', 'categories = ["phone_malware"]'),
        ('categories = ["leaked_personal_data"]', 'categories = ["leaked_personal_data", "pc_malware"]')))
    with session_scope(database_url) as session:
        feed_id = _leak_list(session, tmp_path)
        with pytest.raises(ConfigError) as caught:
            create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"], catalog=catalog)
        assert str(caught.value) == (f"{tmp_path / CATALOG_FILE_NAME}: [data_leak] claims pc_malware, an "
                                     "infected_device category, but is for data_leak feeds: template auto would "
                                     "tell it to the wrong subscribers")
        assert session.exec(select(Campaign)).all() == []


def test_auto_is_refused_before_planning_when_a_category_has_no_template(database_url: str, tmp_path: Path) -> None:
    catalog = load_catalog(_catalog_copy(tmp_path, ('categories = ["phone_malware", "pc_malware"]', "categories = []")))
    with session_scope(database_url) as session:
        _accounts(session, tmp_path)
        feed_id = _sinkhole(session, tmp_path)
        with pytest.raises(InputError) as caught:
            create_campaign(session, feed_id=feed_id, template="auto", channels=["sms"], catalog=catalog)
        assert str(caught.value) == (f"feed {feed_id}: template auto needs a template for threat categories "
                                     f"pc_malware, phone_malware; no entry of {tmp_path / CATALOG_FILE_NAME} "
                                     "claims them")
        assert session.exec(select(Campaign)).all() == []


# --- the command -------------------------------------------------------------------------------------------


def test_campaign_create_defaults_to_auto_and_counts_accounts_per_template(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        feed_id = _one_feed(session, tmp_path)
    created = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--channels", "sms", "--json"])
    assert created.exit_code == 0, created.output
    document = json.loads(created.stdout)
    assert document["templates"] == {"data_leak": 1, "infected_device": 3, "leaked_credentials": 3, "malware": 2}
    assert (document["planned"], document["untold"]) == (9, 1)
    text = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--channels", "email", "--template",
                               "general_advisory"])
    assert text.exit_code == 0, text.output
    assert "accounts per template: general_advisory 9" in text.stderr
    auto_text = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--channels", "sms", "--again"])
    assert auto_text.exit_code == 0, auto_text.output
    assert "accounts per template: data_leak 1, infected_device 3, leaked_credentials 3, malware 2" in auto_text.stderr
    assert "1 account(s) also have leaked-data events" in auto_text.stderr
    assert "0912000008" not in auto_text.output and MAILBOX[1] not in auto_text.output
    with session_scope(cli_db) as session:
        assert [c.template for c in session.exec(select(Campaign).order_by(Campaign.id))] == \
            ["auto", "general_advisory", "auto"]


# --- every channel renders the account's own template ---------------------------------------------------


def test_a_billing_insert_of_an_auto_campaign_tells_the_accounts_own_story(database_url: str, tmp_path: Path) -> None:
    """The bill-print export renders each row with its notification's template, not `auto`."""
    from notifier.billing import BillingCycle, export_cycle
    from notifier.dispatch.loops import run_campaign
    from notifier.importing import import_subscribers
    from notifier.settings import BillingSettings

    settings = make_settings(database_url, billing=BillingSettings(output_dir=tmp_path / "billing"))
    subscribers = write_csv(tmp_path / "subscribers.csv",
                            ["account_id", "full_name", "msisdn", "address", "province", "billing_day"],
                            [["MIRAI", "Nguyễn Văn Ánh", "0912345671", "12 phố Huế", "Hà Nội", "5"],
                             ["FLUBOT", "Trần Thị Bích", "0912345672", "45 Lê Lợi", "Hồ Chí Minh", "5"]])
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"],
                         [["MIRAI", IPS["MIRAI"], "2026-11-19 08:00:00", ""],
                          ["FLUBOT", IPS["FLUBOT"], "2026-11-19 08:00:00", ""]])
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="UTC")
        import_assignments(session, sessions, fmt="sessions-csv", tz="UTC")
        feed_id = _sinkhole(session, tmp_path)
        plan = create_campaign(session, feed_id=feed_id, template="auto", channels=["billing"])
        assert plan.templates == {"infected_device": 1, "malware": 1}
    assert run_campaign(settings, plan.campaign_id)["state"] == "done"
    summary = export_cycle(settings, BillingCycle.parse("2026-12", 5))
    batch = json.loads(next((tmp_path / "billing").rglob("*.json")).read_text(encoding="utf-8"))
    inserts = {insert["account_id"]: " ".join(insert["insert_text"].split()) for insert in batch["inserts"]}
    assert getattr(summary, "failed", 0) == 0 and set(inserts) == {"MIRAI", "FLUBOT"}
    assert "thiết bị dùng đường truyền Internet của Quý khách có dấu hiệu nhiễm mã độc Mirai" in inserts["MIRAI"]
    assert "máy tính hoặc điện thoại dùng đường truyền của Quý khách có dấu hiệu nhiễm mã độc FluBot" \
        in inserts["FLUBOT"]
