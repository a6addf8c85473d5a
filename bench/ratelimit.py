"""Rate-limit benchmark: N worker processes share one route's rate through Redis and send one-part
SMS to the loopback SMSC as fast as the limiter lets them (the limiter `notifier worker` builds:
`dispatch.sms_per_second` = the limit, less `dispatch.rate_margin`). Prints, per limit, the achieved parts/s
and the worst sliding 1-second window, both at the SMSC (its JSON-lines log) and at the limiter
(the grant times Redis scheduled). Asserts nothing; tests/test_rate_limits.py runs it short.

    .venv/bin/python bench/ratelimit.py [--limits 50,200] [--seconds 60] [--workers 2] [--threads 8]
        [--redis-url redis://127.0.0.1:6379/11] [--json]

Bounded: at most 120 s per limit, 8 workers; everything listens on 127.0.0.1; the Redis key is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_left
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_SECONDS, MAX_WORKERS = 120.0, 8
BATCH = 20  # messages per send_many, like a claimed batch
START_DELAY_SECONDS = 3.0  # workers bind to the SMSC, then all start at the same instant


def worst_window(times: list[float], width: float = 1.0) -> int:
    """The most events in any half-open window [t, t + width) of the sorted `times`."""
    times = sorted(times)
    return max((bisect_left(times, start + width) - i for i, start in enumerate(times)), default=0)


def run_worker(args: argparse.Namespace) -> None:
    """One sending process: T threads sending batches of one-part SMS, until the end."""
    from channels.base import OutgoingMessage, SendResult
    from notifier.dispatch.ratelimit import Paced
    from channels.smpp import SmppChannel
    from notifier.dispatch.runtime import build_limiter
    from notifier.settings import DispatchSettings, Settings, SmppSettings

    grants: list[float] = []
    settings = Settings(broker_url=args.redis_url, broker_namespace=args.namespace,
                        dispatch=DispatchSettings(sms_per_second=args.limit))
    limiter = build_limiter("sms", settings, on_grant=lambda at, _n: grants.append(at))
    channel = SmppChannel(SmppSettings(port=args.smsc_port, system_id=f"bench-{os.getpid()}",
                                       registered_delivery=0, window=50))
    channel.start()
    end = args.start_at + args.seconds
    sent, errors = [0], [0]

    def loop(thread_no: int) -> None:
        """Batches through `send_many`, paced per message (`Paced`), as the send path does."""
        number = 0
        while time.time() < end:
            batch = []
            for _ in range(BATCH):
                number += 1
                batch.append(OutgoingMessage(notification_id=number, destination=f"+849{os.getpid() % 1000:03d}"
                                             f"{thread_no:02d}{number % 1000:03d}", body="rate test"))
            outcomes = channel.send_many(Paced(limiter, batch, [1] * len(batch)))
            sent[0] += sum(isinstance(outcome, SendResult) for outcome in outcomes)
            errors[0] += sum(not isinstance(outcome, SendResult) for outcome in outcomes)

    time.sleep(max(0.0, args.start_at - time.time()))
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    args.grants.write_text(json.dumps(grants))
    print(json.dumps({"sent": sent[0], "errors": errors[0]}), flush=True)


def measure(limit: float, *, seconds: float, workers: int, threads: int, redis_url: str,
            directory: Path) -> dict[str, object]:
    """Run `workers` processes against a fresh SMSC and Redis key; return the figures."""
    import redis

    from notifier.peers.smsc import SmscPeer

    namespace = f"notifier-bench-{uuid.uuid4().hex[:8]}"
    start_at = time.time() + START_DELAY_SECONDS
    grant_files = [directory / f"grants-{limit:g}-{n}.json" for n in range(workers)]
    with SmscPeer(directory / f"smsc-{limit:g}.jsonl") as smsc:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--smsc-port", str(smsc.port),
                   "--redis-url", redis_url, "--namespace", namespace, "--start-at", repr(start_at),
                   "--seconds", str(seconds), "--threads", str(threads), "--limits", f"{limit:g}"]
        children = [subprocess.Popen([*command, "--grants", str(path)], cwd=ROOT, stdout=subprocess.PIPE)
                    for path in grant_files]
        try:
            outputs = [json.loads(child.communicate(timeout=seconds + 60)[0] or b"{}") for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        submits = [datetime.fromisoformat(s["at"]).timestamp() for s in smsc.submits() if s["message_id"]]
    redis.Redis.from_url(redis_url).delete(f"{namespace}:rate:sms")
    grants = [at for path in grant_files if path.exists() for at in json.loads(path.read_text())]
    in_run = [at for at in submits if start_at <= at < start_at + seconds]
    return {
        "limit": limit, "seconds": seconds, "workers": workers, "threads": threads,
        "sent": sum(int(o.get("sent", 0)) for o in outputs), "errors": sum(int(o.get("errors", 0)) for o in outputs),
        "achieved_per_second": round(len(in_run) / seconds, 2),
        "worst_window_smsc": worst_window(submits), "worst_window_grants": worst_window(grants),
        "submits": len(submits), "grants": len(grants),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="50,200", help="parts/s limits to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="sending threads per worker")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--json", action="store_true", help="print one JSON list of results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smsc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--grants", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = min(args.seconds, MAX_SECONDS)
    if args.worker:
        args.limit = float(args.limits)
        run_worker(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for limit in (float(text) for text in args.limits.split(",")):
            result = measure(limit, seconds=args.seconds, workers=min(args.workers, MAX_WORKERS),
                             threads=args.threads, redis_url=args.redis_url, directory=Path(tmp))
            results.append(result)
            if not args.json:
                print(f"limit {limit:g} parts/s, {result['workers']} workers × {result['threads']} threads, "
                      f"{args.seconds:g} s: achieved {result['achieved_per_second']}/s "
                      f"({100 * float(result['achieved_per_second']) / limit:.1f}%), worst 1-s window "
                      f"{result['worst_window_smsc']} at the SMSC, {result['worst_window_grants']} granted; "
                      f"{result['errors']} errors", flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
