"""`notifier demo`: the whole path on a bare machine, against loopback SMSC and SMTP peers.

Generates the demo data set, imports it, starts an SMPP server and an SMTP server on 127.0.0.1,
runs an infected-device campaign and a leaked-data campaign to completion and returns a summary.
It uses the configured database, so `notifier history` works on the result afterwards; running
it again re-imports the same files (nothing changes) and runs two new campaigns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from notifier.campaigns import create_campaign
from notifier.db import session_scope, upgrade
from notifier.demo_data import DemoFiles, generate
from notifier.dispatch.loops import run_campaign
from notifier.importing import file_sha256, find_feed_by_digest, import_assignments, import_feed, import_subscribers
from notifier.dispatch.states import ACCEPTED_STATES, DELIVERED, SUPPRESSED
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.settings import Settings

DEMO_DIR = Path("var/demo")
DEMO_RECEIPT_WAIT_SECONDS = 10.0
FAILING_NUMBER_SUFFIX = "99"  # the demo SMSC reports these as undelivered, as a real one would some


def run_demo(settings: Settings, *, subscribers: int, seed: int, log: Callable[[str], None] = print,
             directory: Path = DEMO_DIR) -> dict[str, dict[str, object]]:
    """Run the demo end to end; returns per-feed and per-campaign, per-channel counts."""
    upgrade(settings.database_url)
    files = generate(directory, subscribers=subscribers, seed=seed)
    log(f"demo data in {directory}/ ({subscribers} subscribers)")
    feeds = _import_all(settings, files, log)
    with SmscPeer(directory / "smsc-submits.jsonl", fail_suffix=FAILING_NUMBER_SUFFIX) as smsc, \
            SmtpSink(store_path=directory / "mail-received.jsonl") as smtp:
        log(f"SMSC peer on 127.0.0.1:{smsc.port}, SMTP peer on 127.0.0.1:{smtp.port}")
        live = _with_peers(settings, smsc.port, smtp.port)
        campaigns = {}
        for template, (feed_id, _) in feeds.items():
            with session_scope(live.database_url) as session:
                plan = create_campaign(session, feed_id=feed_id, template=template, channels=["sms", "email"],
                                       again=True)  # each demo run is a new campaign
            log(f"campaign {plan.campaign_id} ({template}): {plan.planned} planned, {plan.suppressed} suppressed")
            status = run_campaign(live, plan.campaign_id)
            campaigns[f"{plan.campaign_id} {template}"] = channel_summary(status)
    return {"feeds": {f"{fid} {template}": counts for template, (fid, counts) in feeds.items()},
            "campaigns": campaigns}


def _import_all(settings: Settings, files: DemoFiles, log: Callable[[str], None]) -> dict[str, tuple[int, dict[str, object]]]:
    with session_scope(settings.database_url) as session:
        subs = import_subscribers(session, files.subscribers, tz=settings.timezone)
        sessions = import_assignments(session, files.sessions, fmt="sessions-csv", tz=settings.timezone)
    log(f"subscribers: {subs.accepted} accepted, {subs.rejected} rejected; "
        f"sessions: {sessions.accepted} accepted, {sessions.rejected} rejected")
    feeds: dict[str, tuple[int, dict[str, object]]] = {}
    for template, path, fmt in (("infected_device", files.shadowserver, "shadowserver"),
                                ("data_leak", files.leaks, "leak-csv")):
        with session_scope(settings.database_url) as session:
            earlier = find_feed_by_digest(session, file_sha256(path))
            if earlier is None:
                result = import_feed(session, path, fmt=fmt, source="demo")
                feed_id, counts = result.id or 0, {"accepted": result.accepted, "rejected": result.rejected,
                                                   **result.counts}
                for error in result.errors:
                    log(f"  {path.name} line {error['line']}: {error['reason']}")
            else:  # a second demo run: the same file is the same feed
                log(f"{path.name} was imported before as feed {earlier.id}: reusing it")
                feed_id, counts = earlier.id or 0, {"accepted": earlier.accepted, "rejected": earlier.rejected,
                                                    "matched": earlier.matched, "unmatched": earlier.unmatched,
                                                    "ambiguous": earlier.ambiguous}
        feeds[template] = (feed_id, {"file": path.name, **counts})
    return feeds


def _with_peers(settings: Settings, smpp_port: int, smtp_port: int) -> Settings:
    return settings.model_copy(update={
        "smpp": settings.smpp.model_copy(update={"host": "127.0.0.1", "port": smpp_port}),
        "smtp": settings.smtp.model_copy(update={"host": "127.0.0.1", "port": smtp_port}),
        "dispatch": settings.dispatch.model_copy(update={"receipt_wait_seconds": DEMO_RECEIPT_WAIT_SECONDS}),
    })


def channel_summary(status: dict[str, object]) -> dict[str, dict[str, int]]:
    """Per channel: planned (not suppressed), sent (accepted by the provider), delivered, and the rest."""
    summary: dict[str, dict[str, int]] = {}
    for channel, counts in status["by_channel"].items():  # type: ignore[attr-defined]
        total = sum(counts.values())
        summary[channel] = {
            "planned": total - counts.get(SUPPRESSED, 0),
            "sent": sum(counts.get(state, 0) for state in ACCEPTED_STATES),
            "delivered": counts.get(DELIVERED, 0),
            "suppressed": counts.get(SUPPRESSED, 0),
            "not_delivered": sum(v for k, v in counts.items() if k in ("undelivered", "expired", "failed")),
        }
    return summary
