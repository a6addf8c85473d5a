"""The send path: from outbox rows to the provider and back.

- `outbox`: notification states and the one compare-and-set that moves them;
- `loops`: `campaign run` (queue, maintain, follow) and `notifier worker`;
- `actors`: the broker and the dramatiq actor (ids only);
- `runtime`: a process's open channels, renderer and rate limiters;
- `delivery`: render, pace, claim, send and record one notification;
- `routes`: the outage watch per route (SMSC, mail relay);
- `ratelimit`: pacing per route;
- `receipts`: delivery receipts stored, then applied to message parts and notifications;
- `recovery`: maintenance after crashes (orphaned sends, unknown rows, re-queues).
"""
