"""Identity resolution: which account held an address at a time; contacts in clear and hashed."""

from __future__ import annotations

from datetime import timedelta

from notifier.db import session_scope
from notifier.identifiers import email_sha256, ip_key, mapped_prefix_len, msisdn_sha256, network_keys
from notifier.identity.matching import accounts_for_contact, accounts_for_ip
from notifier.models import OPEN_END, IpAssignment
from tests.factories import UTC_NOON, add_account


def _assign(session, account_id: int, network: str, hours: tuple[int, int | None]) -> None:  # type: ignore[no-untyped-def]
    start, end = network_keys(network) if "/" in network else (ip_key(network), ip_key(network))
    session.add(IpAssignment(
        account_id=account_id, network=network, range_start=start, range_end=end,
        prefix_len=mapped_prefix_len(network) if "/" in network else 128,
        started_at=UTC_NOON + timedelta(hours=hours[0]),
        ended_at=None if hours[1] is None else UTC_NOON + timedelta(hours=hours[1]),
        covers_until=OPEN_END if hours[1] is None else UTC_NOON + timedelta(hours=hours[1])))


def test_an_address_belongs_to_whoever_held_it_at_that_time(database_url: str) -> None:
    """Without clock skew the interval is exactly [start, end); the skew rules are in test_matching_rules."""
    with session_scope(database_url) as session:
        first, second = add_account(session, "HN1").id, add_account(session, "HN2", msisdn=None).id
        _assign(session, first, "14.160.1.2", (0, 5))      # 12:00–17:00
        _assign(session, second, "14.160.1.2", (5, None))  # 17:00– (the address moved on)
        session.flush()
        at = lambda h: UTC_NOON + timedelta(hours=h)  # noqa: E731
        exact = lambda ip, when: accounts_for_ip(session, ip, when, skew_seconds=0)  # noqa: E731
        assert exact("14.160.1.2", at(-1)) == []
        assert exact("14.160.1.2", at(0)) == [first]       # start is inclusive
        assert exact("14.160.1.2", at(4.99)) == [first]
        assert exact("14.160.1.2", at(5)) == [second]      # end is exclusive
        assert exact("14.160.1.3", at(1)) == []
        # With the configured skew (60 s) 36 s before the hand-over both held it.
        assert accounts_for_ip(session, "14.160.1.2", at(4.99)) == [first, second]


def test_static_prefixes_and_ipv6_delegations_match_every_address_inside(database_url: str) -> None:
    with session_scope(database_url) as session:
        office, home = add_account(session, "HN1").id, add_account(session, "HN2", msisdn=None).id
        _assign(session, office, "113.160.8.0/29", (-100, None))
        _assign(session, home, "2402:800:6310:5600::/56", (-100, None))
        _assign(session, home, "113.160.8.5", (-1, 1))  # overlapping single-address session: ambiguous
        session.flush()
        assert accounts_for_ip(session, "113.160.8.1", UTC_NOON - timedelta(hours=5)) == [office]
        assert accounts_for_ip(session, "113.160.8.5", UTC_NOON) == [office, home]
        assert accounts_for_ip(session, "113.160.8.8", UTC_NOON) == []  # just outside the /29
        assert accounts_for_ip(session, "2402:800:6310:56ff:1234::1", UTC_NOON) == [home]
        assert accounts_for_ip(session, "2402:800:6310:5700::1", UTC_NOON) == []


def test_contacts_match_in_clear_and_hashed(database_url: str) -> None:
    with session_scope(database_url) as session:
        account = add_account(session, "HN1", msisdn="+84912345678", email="anh@example.vn")
        from notifier.models import ContactPoint
        from sqlmodel import select

        for contact in session.exec(select(ContactPoint)):
            contact.value_sha256 = (msisdn_sha256 if contact.kind == "msisdn" else email_sha256)(contact.value)
        session.flush()
        assert accounts_for_contact(session, "msisdn", "+84912345678") == [account.id]
        assert accounts_for_contact(session, "msisdn_sha256", msisdn_sha256("+84912345678")) == [account.id]
        assert accounts_for_contact(session, "email_sha256", email_sha256("anh@example.vn")) == [account.id]
        assert accounts_for_contact(session, "email", "other@example.vn") == []
