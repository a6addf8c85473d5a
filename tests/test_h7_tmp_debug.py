# TEMPORARY (helper H7 debugging; deleted before the report)
import json
import tests.test_dispatch_faults as f
import sqlalchemy as sa
from notifier.db import session_scope

_orig = f._assert_each_once

def _dump(database_url, smsc, smtp, accounts):
    with session_scope(database_url) as s:
        rows = s.execute(sa.text("select id, channel, state, destination, parts, claimed_at, sent_at, updated_at from notification where state <> 'delivered'")).all()
        for r in rows:
            print("ROW", r)
            for e in s.execute(sa.text("select at, from_state, to_state, source, provider_status, detail from delivery_event where notification_id = :i order by id"), {"i": r[0]}).all():
                print("  EV", e)
            for p in s.execute(sa.text("select id, part_no, provider_message_id, state, updated_at from message_part where notification_id = :i"), {"i": r[0]}).all():
                print("  PART", p)
            for rc in s.execute(sa.text("select id, provider_message_id, alternative_ids, status, received_at, applied_at, outcome, notification_id from inbound_receipt where destination = :d"), {"d": r[3]}).all():
                print("  RCPT", rc)
            for sub in smsc.submits():
                if sub["destination_addr"] == (r[3] or "").lstrip("+"):
                    print("  SUBMIT", sub["at"], sub["message_id"], sub["session_id"][:8])
    _orig(database_url, smsc, smtp, accounts)

f._assert_each_once = _dump
from tests.test_dispatch_faults import test_kill_9_one_of_two_workers as test_k  # noqa
