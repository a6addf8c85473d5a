"""On PostgreSQL the receipt lookup keeps using the provider-id index once psycopg has prepared it.

psycopg prepares a statement after a few executions, and PostgreSQL may then switch to a generic
plan. When that happened while `message_part` was nearly empty, the plan read every SMS part for
each receipt batch (issue 6). The lookup sends the ids as one array parameter, so the generic plan
is an index probe per id whatever the table held when it was prepared: this test prepares it on an
empty table, fills the table, and reads the plan PostgreSQL actually runs for the prepared statement.
"""

from __future__ import annotations

import sqlalchemy as sa

from notifier.db import get_engine, session_scope
from notifier.dispatch.receipt_batch import _find_parts

PARTS = 50_000
EXECUTIONS_TO_PREPARE = 12  # above psycopg's prepare_threshold (5) and PostgreSQL's 5 custom plans


def _receipt(receipt_id: int, provider_id: str) -> dict[str, object]:
    return {"id": receipt_id, "channel": "sms", "provider_message_id": provider_id, "alternative_ids": None}


def test_prepared_receipt_lookup_probes_the_index(postgres_url: str) -> None:
    engine = get_engine(postgres_url)
    with session_scope(postgres_url) as session:
        for n in range(EXECUTIONS_TO_PREPARE):  # the table is empty: the worst moment to plan
            assert _find_parts(session, [_receipt(n, f"none-{n}")]) == {}
        connection = session.connection()
        # Parts of one notification chain: an account, a campaign, a notification, many parts.
        connection.execute(sa.text(
            "INSERT INTO account (account_ref, full_name, language, status, sms_opt_out, email_opt_out, "
            "voice_opt_out, created_at, updated_at) VALUES ('PLAN1', 'Kiểm Thử', 'vi', 'active', false, false, "
            "false, now(), now())"))
        connection.execute(sa.text(
            "INSERT INTO campaign (name, template, channels, state, created_at) "
            "VALUES ('plan', 'infected_device', 'sms', 'running', now())"))
        connection.execute(sa.text(
            "INSERT INTO notification (campaign_id, account_id, channel, step, state, context, attempts, "
            "created_at, updated_at) SELECT c.id, a.id, 'sms', 0, 'sent', '{}', 1, now(), now() "
            "FROM campaign c, account a"))
        connection.execute(sa.text(
            "INSERT INTO message_part (notification_id, part_no, channel, provider_message_id, state, updated_at) "
            "SELECT n.id, g, 'sms', 'msg-' || g, 'sent', now() FROM notification n, generate_series(1, :parts) g"),
            {"parts": PARTS})
        connection.execute(sa.text("ANALYZE message_part"))
        found = _find_parts(session, [_receipt(1, "msg-123"), _receipt(2, "msg-45678")])
        assert set(found) == {1, 2}
        prepared = connection.execute(sa.text(
            "SELECT name FROM pg_prepared_statements WHERE statement ILIKE '%FROM message_part%' "
            "AND statement ILIKE '%provider_message_id%'")).scalars().all()
        assert prepared, "psycopg did not prepare the receipt lookup: the test would prove nothing"
        raw = connection.connection.dbapi_connection
        with raw.cursor() as cursor:
            # EXPLAIN EXECUTE shows the plan the prepared statement runs with: generic or custom.
            cursor.execute(f"EXPLAIN EXECUTE {prepared[0]}('sms', ARRAY['msg-123','msg-45678'])", prepare=False)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index" in plan and "Seq Scan" not in plan, plan
    engine.dispose()
