"""scripts/services.sh, the part of the README's test command that brings PostgreSQL and
Redis up, judged by its dry run (``TOKEN_GUARD_SERVICES_DRY_RUN=1`` prints what it would
change). A machine without them is simulated without touching this one: a PATH without
their programs, and a network namespace of its own (``unshare -n``) where nothing listens."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import service_missing

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "services.sh"
BASICS = ("bash", "id", "ls", "sort", "tail", "grep", "seq", "sleep", "sed", "env")


def _bare_path(tmp_path: Path) -> str:
    """A PATH with the basic tools the script uses and none of PostgreSQL's or Redis's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in BASICS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def _dry_run(path: str, *, isolated_network: bool) -> str:
    bash = shutil.which("bash")
    assert bash is not None
    command = [bash, str(SCRIPT)]
    if isolated_network:
        unshare = shutil.which("unshare")
        if unshare is None or subprocess.run(
            [unshare, "-n", "true"], capture_output=True
        ).returncode != 0:
            service_missing("unshare -n (a network namespace) is not available here")
            return ""
        command = [unshare, "-n", *command]
    done = subprocess.run(
        command, env={**os.environ, "PATH": path, "TOKEN_GUARD_SERVICES_DRY_RUN": "1"},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _needs_services() -> None:
    for tool in ("pg_ctlcluster", "psql", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            service_missing(f"{tool} is not installed (the branches below need a machine "
                            "that has PostgreSQL and Redis)")


def test_a_machine_without_them_installs_configures_and_starts_both(tmp_path: Path) -> None:
    out = _dry_run(_bare_path(tmp_path), isolated_network=True)
    assert "apt-get update" in out
    assert "apt-get install -y -qq postgresql redis-server" in out
    assert "1i host all all 127.0.0.1/32 trust" in out and "1i host all all ::1/128 trust" in out
    assert "main restart" in out
    assert "redis-server --daemonize yes --bind 127.0.0.1" in out
    assert "CREATE DATABASE test" in out


def test_servers_answering_without_client_tools_get_only_the_clients(tmp_path: Path) -> None:
    _needs_services()
    out = _dry_run(_bare_path(tmp_path), isolated_network=False)
    assert "apt-get install -y -qq postgresql-client redis-tools" in out
    assert "trust" not in out and "starting" not in out


def test_installed_but_stopped_they_are_started_not_installed() -> None:
    _needs_services()
    out = _dry_run(os.environ["PATH"], isolated_network=True)
    assert "apt-get" not in out and "trust" not in out
    assert "== starting PostgreSQL" in out and "main start" in out
    assert "== starting Redis" in out


def test_installed_and_running_nothing_changes() -> None:
    _needs_services()
    out = _dry_run(os.environ["PATH"], isolated_network=False)
    assert "apt-get" not in out and "starting" not in out


@pytest.mark.parametrize("script", ["services.sh", "test.sh"])
def test_the_scripts_parse(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)]).returncode == 0
