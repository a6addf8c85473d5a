"""The outbox's vocabulary: the states a notification row moves through, and the groups of them
the rest of the code asks about. A module of names only, so the schema (`notifier.models`, whose
partial index holds the in-flight states) and the outbox (`notifier.dispatch.outbox`, which moves
rows between them) spell each state once, here."""

from __future__ import annotations

PLANNED = "planned"
SCHEDULED = "scheduled"
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
SUPPRESSED = "suppressed"
CANCELLED = "cancelled"
FAILED = "failed"
UNDELIVERED = "undelivered"
EXPIRED = "expired"
UNKNOWN = "unknown"

ALL_STATES = (
    PLANNED, SCHEDULED, QUEUED, SENDING, SENT, DELIVERED,
    SUPPRESSED, CANCELLED, FAILED, UNDELIVERED, EXPIRED, UNKNOWN,
)
# Rows that still need work from us before the campaign is done.
PENDING_STATES = frozenset({PLANNED, SCHEDULED, QUEUED, SENDING, UNKNOWN})
# Rows the provider accepted: they count as sent in reports.
ACCEPTED_STATES = frozenset({SENT, DELIVERED, UNDELIVERED, EXPIRED})
FINAL_STATES = frozenset({DELIVERED, SUPPRESSED, CANCELLED, FAILED, UNDELIVERED, EXPIRED})
# What maintenance looks for in every campaign (`queued` not handed over, `sending` whose sender
# died, `unknown` due for a resend): the rows `ix_notification_in_flight` holds on PostgreSQL.
IN_FLIGHT_STATES = (QUEUED, SENDING, UNKNOWN)
