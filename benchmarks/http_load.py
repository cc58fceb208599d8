"""Section 2: the same Starlette app under uvicorn (httptools), unguarded and guarded, loaded
by wrk from another process over loopback. Requests/second, p99 and their ratios.

Both servers run at once (each its own process, idle while the other is loaded); the wrk
runs alternate between them, so drift hits both alike. The guarded server reads its token
from an SQLite file (the embedded default store) this process wrote before starting it.
wrk comes from Debian: installed with apt-get when missing and running as root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks.inprocess import CONNECTIONS, ORIGIN, TABLE_PATH, TABLE_QUERY, TOKEN_BODY
from benchmarks.report import Budget, Row, Threshold
from benchmarks.timing import median
from benchmarks.workloads import Request, create_tokens, inner_app, take, workloads
from token_guard.adapters.asgi import ASGIApp, TokenGuard
from token_guard.stores.sqlite import SQLiteStore

SECTION = "2. HTTP, uvicorn (httptools) loaded by wrk over loopback"
ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS_PER_RUN = 16
_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TG_RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
# The realistic mix: wrk reads pre-generated requests (target, Authorization, Origin,
# Referer; "" for an absent header) from a tab-separated file and cycles through them.
_MIX_LUA = """
local mix = {}
for line in io.lines("%s") do
  local target, auth, origin, referer = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
  mix[#mix + 1] = {target, auth, origin, referer}
end
local i = 0
request = function()
  i = i %% #mix + 1
  local r = mix[i]
  local h = {["Accept"] = "application/json", ["User-Agent"] = "wrk"}
  if r[2] ~= "" then h["Authorization"] = r[2] end
  if r[3] ~= "" then h["Origin"] = r[3] end
  if r[4] ~= "" then h["Referer"] = r[4] end
  return wrk.format("GET", r[1], h)
end
"""
MIX_REQUESTS = {"full": 100_000, "quick": 20_000, "smoke": 500}
_RESULT = re.compile(r"^TG_RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", re.MULTILINE)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str | None:
    """The path of wrk, installing Debian's package as root if needed; None if unavailable."""
    found = shutil.which("wrk")
    if found is not None or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> int:
        return subprocess.run(["apt-get", *args], check=False, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    if apt("install", "-y", "-qq", "wrk") != 0:
        apt("update", "-qq")
        apt("install", "-y", "-qq", "wrk")
    return shutil.which("wrk")


def serve(kind: str, port: int, db: str) -> None:
    """Run one server: the benchmark app, bare or behind TokenGuard over ``db``."""
    import uvicorn

    _pin(SERVER_CPU)
    app: ASGIApp = inner_app()
    if kind == "guarded":
        app = TokenGuard(app, store=SQLiteStore(db), connections=CONNECTIONS)
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", log_level="warning",
                access_log=False)


async def _create_tokens(db: str, mix: int) -> tuple[str, list[Request], list[Request], str]:
    """The benchmark token; the mixed workload's warm-up and ``mix`` requests; their
    refused share (all tokens are written to the SQLite file ``db``)."""
    store = SQLiteStore(db)
    try:
        token = (await store.create_token(TOKEN_BODY)).token
        workload = workloads()["mixed"]
        secrets = await create_tokens(store, workload.plans)
    finally:
        await store.close()
    requests = take(workload.requests(secrets), mix)
    refused = sum(r.status != 200 for r in requests) / len(requests)
    return token, workload.warmup(secrets), requests, f"{refused:.1%}"


def _mix_file(requests: list[Request], path: Path) -> None:
    lines = []
    for r in requests:
        fields = [r.target()] + [(r.header(h) or b"").decode("latin-1")
                                 for h in (b"authorization", b"origin", b"referer")]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n")


def _warm(base: str, requests: list[Request]) -> None:
    """Each token once, so the measured runs take the cached path."""
    for r in requests:
        headers = {k.decode(): v.decode("latin-1") for k, v in r.headers
                   if k in (b"authorization", b"origin", b"referer")}
        request = urllib.request.Request(base + r.target(), headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            if response.status != 200:
                raise RuntimeError(f"warm-up {r.target()} answered {response.status}")


def _start(kind: str, port: int, db: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http_load", "--serve", kind, str(port), db],
        cwd=ROOT, env=env,
    )


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(  # noqa: S310 (an http:// loopback URL built here)
        url, headers={"Authorization": f"Bearer {token}", "Origin": ORIGIN}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return int(response.status)


def _wait_up(url: str, token: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            status = _get(url, token)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server for {url} did not start") from None
            time.sleep(0.1)
            continue
        if status != 200:
            raise RuntimeError(f"{url} answered {status}, not 200")
        return


# Both servers (only one is loaded at a time) on one core, wrk on the other: on a 2-core
# machine, letting the scheduler mix them makes run-to-run swings larger than the guard.
SERVER_CPU = 0
CLIENT_CPU = 1


def _pin(cpu: int) -> None:
    available = os.sched_getaffinity(0)
    if cpu in available and len(available) > 1:
        os.sched_setaffinity(0, {cpu})


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(wrk: str, lua: str, url: str, token: str | None, seconds: int,
         refusals: bool = False) -> tuple[float, float, int]:
    """One wrk run: requests/second, p99 in ms and requests; raises if any request failed
    (with ``refusals``, only on socket errors: the mix has its 401s and 403s). ``token``
    None: the script sets the headers."""
    headers = [] if token is None else [
        "-H", f"Authorization: Bearer {token}", "-H", f"Origin: {ORIGIN}"]
    command = [wrk, "-t1", f"-c{CONNECTIONS_PER_RUN}", f"-d{seconds}s", "-s", lua,
               *headers, url]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True,
        preexec_fn=lambda: _pin(CLIENT_CPU),  # runs in the child only: pins wrk to its core
    ).stdout
    found = _RESULT.search(out)
    if found is None:
        raise RuntimeError(f"wrk printed no result line:\n{out}")
    requests, duration_us, p99_us, non_2xx, errors = map(int, found.groups())
    if (non_2xx and not refusals) or errors:
        raise RuntimeError(f"{url}: {non_2xx} non-2xx answers and {errors} socket errors")
    return requests / (duration_us / 1e6), p99_us / 1000, requests


def run(budget: Budget) -> tuple[list[Row], list[Threshold]]:
    """Load both servers alternately; rows, the throughput target and its guardrail."""
    names = ["unguarded: requests/s", "guarded: requests/s", "unguarded: p99",
             "guarded: p99", "ratio: guarded / unguarded throughput",
             "ratio: guarded / unguarded p99", "unguarded: server CPU per request",
             "guarded: server CPU per request", "ratio: server capacity guarded / unguarded"]
    wrk = ensure_wrk()
    if wrk is None:
        reason = "wrk is not installed (apt-get install wrk, as root)"
        return ([Row(SECTION, n, None, "", reason) for n in names],
                [Threshold("guarded / unguarded HTTP throughput", None, 0.97, False, "x"),
                 Threshold("HTTP throughput ratio >= 0.5", None, 0.5, False, "x")])
    mix_names = ["realistic mix, unguarded: requests/s", "realistic mix, guarded: requests/s",
                 "realistic mix: ratio guarded / unguarded throughput",
                 "realistic mix, unguarded: server CPU per request",
                 "realistic mix, guarded: server CPU per request",
                 "realistic mix: ratio server capacity guarded / unguarded"]
    with tempfile.TemporaryDirectory(prefix="tg-bench-http-") as tmp:
        db = str(Path(tmp) / "tokens.db")
        token, warm, mix, refused = asyncio.run(
            _create_tokens(db, MIX_REQUESTS[budget.mode]))
        lua = str(Path(tmp) / "result.lua")
        Path(lua).write_text(_LUA)
        mix_lua = Path(tmp) / "mix.lua"
        _mix_file(mix, Path(tmp) / "mix.tsv")
        mix_lua.write_text(_MIX_LUA % (Path(tmp) / "mix.tsv") + _LUA)
        ports = {"unguarded": free_port(), "guarded": free_port()}
        servers = {kind: _start(kind if kind == "guarded" else "bare", port, db)
                   for kind, port in ports.items()}
        try:
            urls = {k: f"http://127.0.0.1:{p}{TABLE_PATH}?{TABLE_QUERY.decode()}"
                    for k, p in ports.items()}
            for kind, url in urls.items():
                _wait_up(url, token, servers[kind])
                _warm(f"http://127.0.0.1:{ports[kind]}", warm)
                _wrk(wrk, lua, url, token, 1)  # warm-up: caches and pools
            bases = {k: f"http://127.0.0.1:{p}/" for k, p in ports.items()}
            one = _load(wrk, servers, urls, lambda kind: _wrk(
                wrk, lua, urls[kind], token, budget.http_seconds), budget.http_rounds)
            many = _load(wrk, servers, bases, lambda kind: _wrk(
                wrk, str(mix_lua), bases[kind], None, budget.http_seconds, refusals=True),
                budget.http_rounds)
        finally:
            for server in servers.values():
                server.terminate()
            for server in servers.values():
                server.wait(10)
    rps, p99, cpu, pairs = one
    through = median(pairs)
    detail = (f"wrk -t1 -c{CONNECTIONS_PER_RUN}, {budget.http_rounds} x {budget.http_seconds} s"
              " each, medians; server and wrk pinned to separate cores")
    rows = [
        Row(SECTION, names[0], median(rps["unguarded"]), "req/s", detail),
        Row(SECTION, names[1], median(rps["guarded"]), "req/s", "TokenGuard over SQLiteStore"),
        Row(SECTION, names[2], median(p99["unguarded"]), "ms"),
        Row(SECTION, names[3], median(p99["guarded"]), "ms"),
        Row(SECTION, names[4], through, "x", "median of per-round ratios"),
        Row(SECTION, names[5], median(p99["guarded"]) / median(p99["unguarded"]), "x"),
        # The server's own CPU time per request does not depend on how the scheduler
        # shared the two cores during the run, so it shows the guard's cost under the noise.
        Row(SECTION, names[6], median(cpu["unguarded"]), "µs", "user + system, from /proc"),
        Row(SECTION, names[7], median(cpu["guarded"]), "µs"),
        Row(SECTION, names[8], median(cpu["unguarded"]) / median(cpu["guarded"]), "x",
            "unguarded / guarded CPU per request: the throughput a CPU-bound server keeps"),
    ]
    m_rps, _, m_cpu, m_pairs = many
    capacity = median(m_cpu["unguarded"]) / median(m_cpu["guarded"])
    one_capacity = median(cpu["unguarded"]) / median(cpu["guarded"])
    rows += [
        Row(SECTION, mix_names[0], median(m_rps["unguarded"]), "req/s",
            f"{len(mix):,} pre-generated requests of the mixed workload (1,000 tokens), "
            "cycled by a wrk Lua script"),
        Row(SECTION, mix_names[1], median(m_rps["guarded"]), "req/s",
            f"{refused} of them refused (401/403) by design"),
        Row(SECTION, mix_names[2], median(m_pairs), "x", "median of per-round ratios"),
        Row(SECTION, mix_names[3], median(m_cpu["unguarded"]), "µs"),
        Row(SECTION, mix_names[4], median(m_cpu["guarded"]), "µs"),
        Row(SECTION, mix_names[5], capacity, "x"),
    ]
    return rows, [
        Threshold("guarded / unguarded HTTP throughput", through, 0.97, False, "x"),
        Threshold("HTTP server capacity guarded / unguarded, repeated request", one_capacity,
                  0.97, False, "x"),
        Threshold("HTTP server capacity guarded / unguarded, realistic mix", capacity, 0.95,
                  False, "x"),
        Threshold("HTTP throughput ratio >= 0.5", through, 0.5, False, "x"),
    ]


Samples = tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]],
                list[float]]


def _load(wrk: str, servers: dict[str, subprocess.Popen[bytes]], urls: dict[str, str],
          one_run: Callable[[str], tuple[float, float, int]], rounds: int) -> Samples:
    """Alternate ``one_run`` between the servers; requests/s, p99, CPU µs per request, and
    the per-round throughput ratios."""
    rps: dict[str, list[float]] = {k: [] for k in urls}
    p99: dict[str, list[float]] = {k: [] for k in urls}
    cpu: dict[str, list[float]] = {k: [] for k in urls}
    pairs: list[float] = []
    for r in range(rounds):
        for kind in list(urls) if r % 2 == 0 else list(reversed(urls)):
            before = _cpu_seconds(servers[kind].pid)
            rate, tail, done = one_run(kind)
            cpu[kind].append((_cpu_seconds(servers[kind].pid) - before) / done * 1e6)
            rps[kind].append(rate)
            p99[kind].append(tail)
        # Each round's two runs are back to back: their ratio cancels slow drift.
        pairs.append(rps["guarded"][-1] / rps["unguarded"][-1])
    return rps, p99, cpu, pairs


def main() -> None:
    """``--serve bare|guarded PORT DB``: run one server (the benchmark starts these)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "DB"), required=True)
    kind, port, db = parser.parse_args().serve
    serve(kind, int(port), db)


if __name__ == "__main__":
    main()
