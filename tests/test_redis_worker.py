"""Production shape: PostgreSQL, the Redis broker, and a separate `notifier worker` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from notifier.dispatch.loops import run_campaign
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from tests.conftest import make_settings
from tests.factories import settings_env
from tests.test_crash_recovery import ACCOUNTS, _campaign

REPO = Path(__file__).resolve().parent.parent


def test_campaign_through_redis_and_a_worker_process(postgres_url: str, redis_url: str, redis_namespace: str,
                                                     tmp_path: Path) -> None:
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc, SmtpSink() as smtp:
        settings = make_settings(postgres_url, smsc=smsc, smtp=smtp, broker_url=redis_url,
                                 broker_namespace=redis_namespace)
        campaign_id = _campaign(tmp_path, postgres_url)
        worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--threads", "4"],
                                  env={**os.environ, **settings_env(settings)}, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            status = run_campaign(settings, campaign_id)  # queues through Redis and follows
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
        assert status["by_channel"] == {"sms": {"delivered": ACCOUNTS}, "email": {"delivered": ACCOUNTS}}
        assert len({m["destination"] for m in smsc.messages()}) == ACCOUNTS
        assert len(smtp.messages()) == ACCOUNTS


def test_worker_refuses_to_start_without_a_broker(sqlite_url: str) -> None:
    env = {**os.environ, "NOTIFIER_DATABASE_URL": sqlite_url}
    env.pop("NOTIFIER_BROKER_URL", None)
    result = subprocess.run([sys.executable, "-m", "cli", "worker"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: notifier worker needs a broker")
    assert len(result.stderr.strip().splitlines()) == 1
