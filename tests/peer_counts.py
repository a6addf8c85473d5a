"""Counting at the SMSC what each subscriber's handset shows: the exactly-once check of the
fault tests, in one place."""

from __future__ import annotations

from notifier.peers.smsc import SmscPeer


def assert_one_sms_each(smsc: SmscPeer, destinations: int) -> None:
    """Every destination's handset reassembled exactly one whole message, none twice; a fragment
    (the first parts of a long SMS that the SMSC took before it died) only where the whole message
    followed; no part answered twice."""
    per_destination = smsc.reassembled()
    assert len(per_destination) == destinations, (len(per_destination), destinations)
    assert set(per_destination.values()) == {1}, [d for d, n in per_destination.items() if n > 1]
    assert all(m["parts"] == len(m["message_ids"]) for m in smsc.messages())
    assert {m["destination"] for m in smsc.fragments()} <= set(per_destination)
