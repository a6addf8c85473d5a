"""radius-detail: an address never ends before it started, whatever order the records arrive in.

The store relies on it: a stored interval covers at least its own start, which is how an import
finds the rows it repeats through the cover index (`identity.assignments`, migration 0010).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from notifier.ingest.radius import parse_radius_detail
from notifier.ingest.records import SessionRecord
from tests.ingest.test_radius_detail import PREFIX, record, write


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_stop_timed_before_a_prefix_appeared_ends_that_prefix_where_it_began(tmp_path: Path) -> None:
    """The prefix appears at 08:05:00 (Interim-Update); the Stop is logged at 08:05:30 but a minute
    late (Acct-Delay-Time 60), so it happened at 08:04:30: the address ends then, the prefix ends
    where it began instead of half a minute before it."""
    path = write(tmp_path,
                 record("Fri Nov 20 08:00:00 2026", Acct_Status_Type="Start", User_Name="hn_1", Acct_Session_Id="A",
                        Framed_IP_Address="14.160.1.2"),
                 record("Fri Nov 20 08:05:00 2026", Acct_Status_Type="Interim-Update", User_Name="hn_1",
                        Acct_Session_Id="A", Framed_IP_Address="14.160.1.2", Delegated_IPv6_Prefix=PREFIX),
                 record("Fri Nov 20 08:05:30 2026", Acct_Status_Type="Stop", User_Name="hn_1", Acct_Session_Id="A",
                        Acct_Delay_Time="60"))
    records = list(parse_radius_detail(path, tz="Asia/Ho_Chi_Minh"))
    assert all(isinstance(item, SessionRecord) for item in records)
    assert [(r.ip, r.started_at, r.ended_at) for r in records] == [  # type: ignore[union-attr]
        ("14.160.1.2", utc(2026, 11, 20, 1), utc(2026, 11, 20, 1, 4, 30)),
        (PREFIX, utc(2026, 11, 20, 1, 5), utc(2026, 11, 20, 1, 5)),
    ]
