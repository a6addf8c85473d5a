"""`notifier demo` on a bare directory: the whole path against its own loopback peers, twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _demo(cwd: Path) -> dict:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    result = subprocess.run([sys.executable, "-m", "cli", "demo", "--subscribers", "80", "--json"],
                            cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_demo_runs_end_to_end_and_again(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert (tmp_path / "var" / "notifier.db").exists()
    for campaign in first["campaigns"].values():
        for channel in ("sms", "email"):
            counts = campaign[channel]
            assert counts["delivered"] > 0
            assert counts["planned"] == counts["sent"]  # everything planned left
    feeds = list(first["feeds"].values())
    assert [feed["rejected"] for feed in feeds] == [4, 3]  # the bad rows the demo plants in each feed
    assert all(feed["matched"] > 0 and feed["unmatched"] > 0 for feed in feeds)

    second = _demo(tmp_path)
    assert len(second["campaigns"]) == 2 and set(second["campaigns"]).isdisjoint(first["campaigns"])
    assert [c["sms"]["delivered"] for c in second["campaigns"].values()] == \
        [c["sms"]["delivered"] for c in first["campaigns"].values()]
