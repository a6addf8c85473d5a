"""The send path: from outbox rows to the provider and back.

- `states`: the names of a notification's states, and the groups of them the code asks about;
- `outbox`: the one compare-and-set that moves a notification between states;
- `loops`: `campaign run` (queue, maintain, follow) and `notifier worker`;
- `actors`: the broker and the dramatiq actor (ids only);
- `runtime`: a process's open channels, renderer and rate limiters;
- `delivery`: render, pace, claim, send and record one notification;
- `routes`: the outage watch per route (SMSC, mail relay);
- `ratelimit`: pacing per route;
- `receipts`: delivery receipts stored, then applied to message parts and notifications;
- `recovery`: maintenance after crashes (orphaned sends, unknown rows, re-queues).
"""
