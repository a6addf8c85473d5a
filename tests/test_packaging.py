"""`pip install .` (not only `-e`) gives a working `notifier` (issue 5, item 3).

The wheel is built from a copy of the checkout (the shared tree gets no build/ or egg-info, and no
stale build/lib can hide a missing file), installed offline into a fresh venv whose dependencies
come from this venv through a `.pth` line — such a line adds the directory without running the
`.pth` files in it, so the checkout's editable finder cannot leak in — and run from a directory
outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from notifier.db import alembic_config
from notifier.rendering import CHANNEL_FILES
from tests.factories import write_csv

CHECKOUT = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", "tests", "bench")
DATA_TREES = {"templates": "_templates", "config": "_config"}  # checkout folder → folder in the package
CODE_TREES = ("notifier", "channels")
COMMAND_TIMEOUT_SECONDS = 300

# Renders each planned campaign's context the way delivery does, in every language and channel.
RENDER_EVERYTHING = """
import json, sys
from sqlmodel import select
from notifier.db import session_scope
from notifier.dispatch.delivery import template_context
from notifier.models import Campaign, Notification
from notifier.rendering import CHANNEL_FILES
from notifier.dispatch.runtime import make_runtime
from notifier.settings import get_settings

runtime = make_runtime(get_settings())
renderer, templates_dir = runtime.renderer, runtime.settings.templates_dir
languages = sorted(p.name for p in templates_dir.iterdir() if p.is_dir() and not p.name.startswith("_"))
rendered = []
with session_scope(runtime.settings.database_url) as session:
    for campaign in session.exec(select(Campaign)):
        notification = session.exec(select(Notification).where(Notification.campaign_id == campaign.id)).first()
        context = template_context(notification, runtime)
        for language in languages:
            for channel in CHANNEL_FILES:
                message = renderer.render(campaign.template, channel, language=language, context=context)
                rendered.append([campaign.template, channel, language, len(message.body)])
json.dump({"templates": renderer.available_templates(), "languages": languages, "rendered": rendered}, sys.stdout)
"""

WHERE_IS_EVERYTHING = """
import json, sys
import channels, cli, notifier, notifier.settings as s
json.dump({"notifier": notifier.__file__, "cli": cli.__file__, "channels": channels.__file__,
           "templates_dir": str(s.TEMPLATES_DIR), "config_file": str(s.DEFAULT_CONFIG_FILE)}, sys.stdout)
"""


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(venv, its site-packages) with the wheel built from the checkout installed, offline."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(CHECKOUT, source, ignore=NOT_SOURCES, symlinks=True)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", str(root / "dist"), str(source)], cwd=root)
    wheel = next((root / "dist").glob("notifier-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=root)
    site_packages = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              cwd=root).stdout.strip())
    (site_packages / "dependencies-from-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv, site_packages


Outside = tuple[Path, dict[str, str]]


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    """A working directory outside the repository and an environment with nothing of the checkout."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("NOTIFIER_") and name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env |= {"PYTHONNOUSERSITE": "1", "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'notifier.db'}"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work, env


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: tuple[Path, Path], outside: Outside) -> None:
    venv, site_packages = installed
    work, env = outside
    where = json.loads(_run([str(venv / "bin" / "python"), "-c", WHERE_IS_EVERYTHING], cwd=work, env=env).stdout)
    for module in ("notifier", "cli", "channels"):
        assert Path(where[module]).is_relative_to(site_packages), where
    assert Path(where["templates_dir"]) == site_packages / "notifier" / "_templates"
    assert Path(where["config_file"]) == site_packages / "notifier" / "_config" / "default.toml"
    assert not (site_packages / "templates").exists() and not (site_packages / "config").exists()


def test_every_data_file_and_module_of_the_checkout_ships(installed: tuple[Path, Path]) -> None:
    _, site_packages = installed
    for folder, packaged in DATA_TREES.items():
        assert _files(site_packages / "notifier" / packaged) == _files(CHECKOUT / folder), folder
    assert (site_packages / "notifier" / "_templates" / "catalog.toml").is_file()
    for tree in CODE_TREES:  # pyproject lists packages by name: a new subpackage must be listed too
        shipped = _files(site_packages / tree)
        missing = [name for name in _files(CHECKOUT / tree) if name not in shipped]
        assert missing == [], f"{tree}: not in the wheel (add the package to pyproject.toml): {missing}"


def test_the_installed_command_migrates_plans_and_renders_from_elsewhere(
    installed: tuple[Path, Path], outside: Outside, tmp_path: Path
) -> None:
    venv, _ = installed
    work, env = outside
    command = str(venv / "bin" / "notifier")
    assert "campaign" in _run([command, "--help"], cwd=work, env=env).stdout

    _run([command, "db", "upgrade"], cwd=work, env=env)
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    with sqlite3.connect(tmp_path / "data" / "notifier.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    subscribers = write_csv(inputs / "subscribers.csv", ["account_id", "full_name", "msisdn", "email"],
                            [["HN1", "Nguyễn Văn Ánh", "0912345678", "anh@example.vn"]])
    sessions = write_csv(inputs / "sessions.csv", ["account_id", "ip", "start", "end"],
                         [["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""]])
    sinkhole = write_csv(inputs / "2026-11-20-event4_sinkhole-vn.csv",
                         ["timestamp", "src_ip", "src_port", "infection", "family", "tag"],
                         [["2026-11-19 21:14:05Z", "14.160.1.2", "51234", "mirai", "mirai", ""]])
    leak = write_csv(inputs / "leak.csv", ["msisdn", "leaked_at", "source", "data_classes"],
                     [["0912345678", "2026-11-18", "forum-dump-2026", "password;address"]])
    _run([command, "subscribers", "import", str(subscribers)], cwd=work, env=env)
    _run([command, "assignments", "import", str(sessions), "--format", "sessions-csv"], cwd=work, env=env)
    for path, fmt, template in ((sinkhole, "shadowserver", "infected_device"), (leak, "leak-csv", "data_leak")):
        feed = json.loads(_run([command, "feed", "import", str(path), "--format", fmt, "--json"],
                               cwd=work, env=env).stdout)
        plan = json.loads(_run([command, "campaign", "create", "--feed", str(feed["id"]), "--template", template,
                                "--channels", "sms,email", "--json"], cwd=work, env=env).stdout)
        assert plan["planned"] == 2, (template, plan)

    shown = json.loads(_run([str(venv / "bin" / "python"), "-c", RENDER_EVERYTHING], cwd=work, env=env).stdout)
    assert {"data_leak", "infected_device"} <= set(shown["templates"])
    assert shown["languages"] == sorted(p.name for p in (CHECKOUT / "templates").iterdir()
                                        if p.is_dir() and not p.name.startswith("_"))
    expected = {(t, c, lang) for t in ("data_leak", "infected_device") for c in CHANNEL_FILES for lang in shown["languages"]}
    assert {tuple(row[:3]) for row in shown["rendered"]} == expected
    assert all(length > 0 for *_, length in shown["rendered"])
