"""Gateway benchmark: requests per second and latency, against a bare Python forwarder.

Side by side in one run, on this machine, with wrk:
- tail: the floor (wrk straight to the fixed-answer upstream, tests/bench/upstream.py), a bare
  Python forwarder (tests/bench/forwarder.py: the same HTTP client, no gateway work) and the
  gateway with billing and logging on, against PostgreSQL, one process each under the same
  server, one hot key, at concurrency 1, 10 and 50; the gateway's figures as ratios of the
  forwarder's, against issue 19's targets and the figures it started from; the least billing
  gateway (tests/bench/forwarder.py) beside them, what billing at its simplest costs;
  the CPU each request takes in each process (server, PostgreSQL, upstream), which is where the
  requests/s go when the cores are all busy; with --baseline REV, the gateway of that revision
  measured in turn;
- load: 1,000 tokens across 100 accounts (wrk sends each request with the next key), with
  one and two worker processes, under uvicorn and under granian: the first pass after a fresh
  start (cold caches: every token read from the database, every lease taken) apart from the
  next (warm), and the forwarder under the same server and workers;
- protocols: the same question through each protocol the gateway bridges (Anthropic Messages,
  the Responses API) against chat completions, at concurrency 1;
- ttfb: streaming time to first byte, sequentially, both ways;
- memory: the gateway's memory over 100,000 requests.
Figures are printed; nothing is asserted.

    .venv/bin/python tests/bench/bench_gateway.py [--seconds 10] [--database postgres://…]
        [--server uvicorn|granian] [--sections tail,load,protocols,ttfb,memory]
        [--baseline REVISION]

With 2 cores, wrk, the upstream, PostgreSQL and the server (two workers in the load section)
share them: read the figures as this machine's, and the ratios as the comparable part. At the
default 10 s per measurement the whole run takes about 7 minutes.

Needs wrk (apt-get install wrk) and PostgreSQL; the database named by --database (default
switchboard_bench on 127.0.0.1) is created if missing and its tables are overwritten. Redis is
used if REDIS_URL is set (the load section's workers then share invalidations, as in
production); otherwise each worker runs alone.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GATEWAY_APP = "console.asgi:application"
FORWARDER_APP = "tests.bench.forwarder:application"
LEAST_BILLING_APP = "tests.bench.forwarder:least_billing"
SERVERS = ("uvicorn", "granian")
SECTIONS = ("tail", "load", "protocols", "ttfb", "memory")
LOAD_ACCOUNTS = 100
LOAD_TOKENS_EACH = 10
LOAD_CONNECTIONS = 50
BODY = (
    '{"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}'
)
STREAM_BODY = BODY[:-1] + ', "stream": true}'
# The same question in the bridged protocols: the channel sees the same chat completion.
PROTOCOLS = [
    ("chat completions", "chat/completions", BODY),
    ("messages", "messages", BODY),
    (
        "responses",
        "responses",
        '{"model": "gpt-4o-mini", "max_output_tokens": 16, "input": "Hello"}',
    ),
]
# Issue 19's targets for the gateway against the forwarder, by concurrency, and the figures
# measured before it (hey, one process each): (rps ratio at least, p99 ratio at most).
TARGETS = {1: (None, None), 10: (None, None), 50: (0.9, 2.0)}
STARTED_FROM = {
    1: "p50 0.6 ms vs the forwarder's 0.7",
    10: "0.88x the forwarder's rps",
    50: "0.64x rps, p99 74 vs 23 ms (3.2x)",
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def ensure_database(url):
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


PREPARE = """
from decimal import Decimal
from accounts.models import User
from billing.models import Account, Hold, Line, ModelPrice
from billing.services import balance_credit
from relay.models import Channel
from tokens.models import Token
from tokens.services import token_create

FUNDS = 1_000_000_000_000
default = Line.objects.get(name="default")


def funded(email):
    user, _ = User.objects.get_or_create(email=email)
    Token.objects.filter(user=user).delete()
    if Account.objects.get(user=user).balance < FUNDS:
        balance_credit(user=user, amount=FUNDS, kind="adjustment", reason="bench")
    return user


Hold.objects.all().delete()
Account.objects.filter(user__email__startswith="bench").update(held=0)
ModelPrice.objects.update_or_create(model="gpt-4o-mini", defaults=dict(vendor="OpenAI",
    model_multiplier=Decimal("0.075"), completion_multiplier=Decimal(4), enabled=True))
Channel.objects.all().delete()
channel = Channel(name="bench", type="openai", base_url="http://127.0.0.1:{port}/v1",
                  model_names=["gpt-4o-mini"])
channel.set_key("sk-bench")
channel.save()
channel.lines.set([default])
user = funded("bench@example.com")
print("KEY", token_create(user=user, name="bench", line=default, notify=False)[1])
if {load}:
    for account in range({accounts}):
        user = funded(f"bench-{{account:03d}}@example.com")
        for number in range({tokens_each}):
            # One token in five spends from a quota of its own as well as the balance.
            limited = number % 5 == 4
            token, key = token_create(user=user, name=f"load {{number}}", line=default,
                notify=False, unlimited_quota=not limited,
                quota_limit=FUNDS // 10 if limited else None)
            print("LOAD", key)
"""


def prepare(env, upstream_port, load):
    """Migrates the bench database; makes a funded user with the hot key, a price and a
    channel; with `load`, 100 more funded users with 10 tokens each. Returns (hot key, the
    load keys)."""
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    script = PREPARE.format(
        port=upstream_port, load=load, accounts=LOAD_ACCOUNTS, tokens_each=LOAD_TOKENS_EACH
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return re.search(r"KEY (sk-\S+)", out).group(1), re.findall(r"LOAD (sk-\S+)", out)


def lua_script(path, body, key=None, keys_file=None):
    """A wrk script that POSTs `body` with `key`, or with the keys of `keys_file` in turn
    (each wrk thread from a place of its own in the list)."""
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    if keys_file is None:
        path.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        )
        return path
    path.write_text(
        f"""
local keys = {{}}
for line in io.lines("{keys_file}") do keys[#keys + 1] = line end
local body = "{escaped}"
local threads = 0
local at = 0
function setup(thread)
  thread:set("first", threads * 7919)
  threads = threads + 1
end
function init(args)
  at = first or 0
end
function request()
  at = at + 1
  return wrk.format("POST", nil, {{
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. keys[at % #keys + 1],
  }}, body)
end
"""
    )
    return path


def wrk(url, script, connections, seconds):
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    latency = {}
    for percent in ("50", "99"):
        match = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(match.group(1)), match.group(2)
        latency[percent] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return {
        "rps": rps,
        "p50": latency["50"],
        "p99": latency["99"],
        "total": total,
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


async def first_bytes(url, key, count):
    """Time to the first byte of a streamed answer, sequentially, in milliseconds."""
    times = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=STREAM_BODY, headers=headers) as response:
                await response.content.readany()
                times.append((time.perf_counter() - started) * 1000)
                await response.read()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def _mean(results, figure):
    return sum(r[figure] for r in results) / len(results)


def _figures(result, width):
    return f"{result['rps']:>{width}.0f} {result['p50']:>7.2f} {result['p99']:>7.2f}"


def _errors(*results):
    count = sum(r["errors"] for r in results)
    sockets = "; ".join(r["socket_errors"] for r in results if r["socket_errors"])
    return f"{count}" + (f" (sockets: {sockets})" if sockets else "")


def cpu_seconds(pids):
    """CPU time (user and system) of these processes and their children, by name, and of each
    PostgreSQL process, whichever database it serves, by its pid."""
    totals = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            processes = [process, *process.children(recursive=True)]
            totals[name] = sum(sum(p.cpu_times()[:2]) for p in processes)
        except psutil.NoSuchProcess:
            totals[name] = 0.0
    postgres = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        if (process.info["name"] or "").startswith("postgres") and process.info["cpu_times"]:
            postgres[process.pid] = sum(process.info["cpu_times"][:2])
    return totals, postgres


def measured(server, script, connections, seconds, upstream_pid):
    """wrk's figures against `server` (a Server), with the CPU each process (it, the upstream,
    PostgreSQL) spent per request, in microseconds."""
    pids = {"server": server.process.pid, "upstream": upstream_pid}
    before, postgres_before = cpu_seconds(pids)
    result = wrk(server.url(), script, connections, seconds)
    after, postgres_after = cpu_seconds(pids)
    # A PostgreSQL process that ended meanwhile is not counted; one that started counts whole.
    after["PostgreSQL"] = sum(
        spent - postgres_before.get(pid, 0.0) for pid, spent in postgres_after.items()
    )
    before["PostgreSQL"] = 0.0
    result["cpu"] = {
        name: (after[name] - before[name]) / max(result["total"], 1) * 1e6 for name in after
    }
    return result


def rss_mb(pid):
    """The memory of a server: its process and its worker processes."""
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 1024 / 1024


def server_command(server, app, port, workers):
    if server == "uvicorn":
        return [
            PYTHON,
            "-m",
            "uvicorn",
            app,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ]
    return [
        PYTHON,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
        app,
    ]


class Server:
    """The gateway or the forwarder under `server` with `workers` processes, on a port of its
    own; the gateway with a journal folder of its own, whose lock files tell when every worker
    has started."""

    def __init__(self, server, app, workers, env, root=ROOT):
        self.port = free_port()
        self.journal = Path(tempfile.mkdtemp(prefix="bench-journal-"))
        self.workers = workers
        self.app = app
        env = {**env, "GATEWAY_JOURNAL_DIR": str(self.journal)}
        self.process = subprocess.Popen(
            server_command(server, app, self.port, workers), cwd=root, env=env
        )

    def url(self, path="chat/completions"):
        return f"http://127.0.0.1:{self.port}/v1/{path}"

    def wait(self, timeout=90):
        wait_for_port(self.port, timeout)
        if self.app != GATEWAY_APP:
            return
        deadline = time.monotonic() + timeout
        while len(list(self.journal.glob("*.lock"))) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's workers did not all start")
            time.sleep(0.1)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)
        shutil.rmtree(self.journal, ignore_errors=True)


def source_at(revision, scratch):
    """The project's files as of a git revision, in a folder of `scratch`: a baseline's."""
    folder = scratch / f"at-{revision}"
    folder.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def tail(args, env, upstream_port, upstream_pid, key, scratch):
    """Target 1: the gateway against the forwarder, one process each, one hot key; with
    --baseline, the gateway of that revision beside them, on the same database."""
    floor_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    forwarder = Server(args.server, FORWARDER_APP, 1, env)
    least = Server(args.server, LEAST_BILLING_APP, 1, env)
    gateway = Server(args.server, GATEWAY_APP, 1, env)
    baseline = None
    if args.baseline:
        root = source_at(args.baseline, scratch)
        baseline = Server(args.server, GATEWAY_APP, 1, env, root=root)
    script = lua_script(scratch / "hot.lua", BODY, key=key)
    try:
        forwarder.wait()
        least.wait()
        gateway.wait()
        for url in (gateway.url(), forwarder.url(), least.url(), floor_url):
            wrk(url, script, 10, 3)  # warm up: connections, caches, leases
        if baseline:
            baseline.wait()
            wrk(baseline.url(), script, 10, 3)
        print(
            f"\nTarget 1: the gateway against a bare Python forwarder, one {args.server} process "
            f"each, PostgreSQL, billing and logging on, one hot key; non-streamed chat, "
            f"{args.seconds} s each"
        )
        print(
            f"{'c':>3} | {'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} | "
            f"{'fwd rps':>8} {'p50 ms':>7} {'p99 ms':>7} | "
            f"{'gw rps':>7} {'p50 ms':>7} {'p99 ms':>7} | "
            f"{'rps gw/fwd':>10} {'target':>7} | {'p99 gw/fwd':>10} {'target':>7} | "
            "errors | issue 19 started from"
        )
        runs = {}
        for connections in (1, 10, 50):
            floor = wrk(floor_url, script, connections, args.seconds)
            through = measured(gateway, script, connections, args.seconds, upstream_pid)
            bare = measured(forwarder, script, connections, args.seconds, upstream_pid)
            billing = measured(least, script, connections, args.seconds, upstream_pid)
            then = baseline and measured(baseline, script, connections, args.seconds, upstream_pid)
            runs[connections] = (bare, through, then, billing)
            at_least, at_most = TARGETS[connections]
            print(
                f"{connections:>3} | {_figures(floor, 9)} | {_figures(bare, 8)} | "
                f"{_figures(through, 7)} | {through['rps'] / bare['rps']:>9.2f}x "
                f"{'>= ' + str(at_least) if at_least else 'keep':>7} | "
                f"{through['p99'] / bare['p99']:>9.2f}x "
                f"{'<= ' + str(at_most) if at_most else 'keep':>7} | "
                f"{_errors(through, bare):>6} | {STARTED_FROM[connections]}"
            )
        _least_billing_table(runs)
        _cpu_table(runs)
        if baseline:
            _baseline_table(args.baseline, runs)
    finally:
        forwarder.stop()
        least.stop()
        gateway.stop()
        if baseline:
            baseline.stop()


def _least_billing_table(runs):
    """What billing at its simplest costs: the least gateway that bills (the forwarder with the
    key hashed, the model and usage read, a price and a record in memory) against the forwarder,
    measured in the same run; and the gateway against it."""
    print(
        "\nThe least billing gateway (tests/bench/forwarder.py: least_billing; no database, "
        "held money, journal or metrics)"
    )
    print(
        f"{'c':>3} | {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} | {'rps /fwd':>8} {'p99 /fwd':>8} | "
        f"{'gateway rps /least':>18}"
    )
    for connections, (bare, through, _then, billing) in runs.items():
        print(
            f"{connections:>3} | {_figures(billing, 7)} | {billing['rps'] / bare['rps']:>7.2f}x "
            f"{billing['p99'] / bare['p99']:>7.2f}x | {through['rps'] / billing['rps']:>17.2f}x"
        )


def _cpu_table(runs):
    """Where the requests/s go on a machine whose cores are all busy: the CPU each request
    takes, per process, gateway beside forwarder. wrk's own share is not counted."""
    print(
        "\nCPU per request, microseconds (user + system; PostgreSQL: all its processes), "
        "forwarder -> gateway"
    )
    names = ("server", "PostgreSQL", "upstream")
    print(f"{'c':>3} | " + " | ".join(f"{name:>20}" for name in names) + f" | {'sum':>20}")
    for connections, (bare, through, _then, _billing) in runs.items():
        bare, through = bare["cpu"], through["cpu"]
        cells = [f"{bare[name]:>8.0f} -> {through[name]:>8.0f}" for name in names]
        total = f"{sum(bare[n] for n in names):>8.0f} -> {sum(through[n] for n in names):>8.0f}"
        print(f"{connections:>3} | " + " | ".join(cells) + f" | {total}")


def _baseline_table(revision, runs):
    """The gateway now against itself at an earlier revision, measured in the same run."""
    print(f"\nThe gateway at {revision} (measured in turn with the above) -> now")
    print(
        f"{'c':>3} | {'rps':>17} | {'p50 ms':>15} | {'p99 ms':>15} | "
        f"{'server CPU us/req':>17} | {'PostgreSQL us/req':>17}"
    )
    for connections, (_bare, now, then, _billing) in runs.items():
        print(
            f"{connections:>3} | {then['rps']:>7.0f} -> {now['rps']:>6.0f} | "
            f"{then['p50']:>6.2f} -> {now['p50']:>5.2f} | "
            f"{then['p99']:>6.2f} -> {now['p99']:>5.2f} | "
            f"{then['cpu']['server']:>7.0f} -> {now['cpu']['server']:>6.0f} | "
            f"{then['cpu']['PostgreSQL']:>7.0f} -> {now['cpu']['PostgreSQL']:>6.0f}"
        )


def load(args, env, load_keys, scratch):
    """Target 2: 1,000 tokens across 100 accounts, cold and warm, one and two workers, each
    server; the forwarder beside each."""
    keys_file = scratch / "keys.txt"
    keys = list(load_keys)
    random.Random(19).shuffle(keys)  # accounts interleaved, as many clients would be
    keys_file.write_text("\n".join(keys) + "\n")
    script = lua_script(scratch / "load.lua", BODY, keys_file=keys_file)
    print(
        f"\nTarget 2: {len(keys):,} tokens across {LOAD_ACCOUNTS} accounts, each request with "
        f"the next key, concurrency {LOAD_CONNECTIONS}, {args.seconds} s each. Cold: the first "
        "pass after a fresh start (every token read from the database, every lease taken); "
        "warm: the pass after it. wrk, the upstream, PostgreSQL and the workers share 2 cores."
    )
    print(
        f"{'server':>8} {'workers':>7} | {'cold rps':>8} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'warm rps':>8} {'p50 ms':>7} {'p99 ms':>7} | {'fwd rps':>8} {'p99 ms':>7} | "
        f"{'warm gw/fwd':>11} | errors"
    )
    warm = {}
    for server in args.servers:
        for workers in (1, 2):
            forwarder = Server(server, FORWARDER_APP, workers, env)
            gateway = Server(server, GATEWAY_APP, workers, env)
            try:
                forwarder.wait()
                gateway.wait()
                cold = wrk(gateway.url(), script, LOAD_CONNECTIONS, args.seconds)
                hot = wrk(gateway.url(), script, LOAD_CONNECTIONS, args.seconds)
                bare = wrk(forwarder.url(), script, LOAD_CONNECTIONS, args.seconds)
            finally:
                forwarder.stop()
                gateway.stop()
            warm[server, workers] = hot
            print(
                f"{server:>8} {workers:>7} | {_figures(cold, 8)} | {_figures(hot, 8)} | "
                f"{bare['rps']:>8.0f} {bare['p99']:>7.2f} | {hot['rps'] / bare['rps']:>10.2f}x | "
                f"{_errors(cold, hot, bare)}"
            )
    for server in args.servers:
        one, two = warm[server, 1], warm[server, 2]
        print(
            f"  {server}: two workers do {two['rps'] / one['rps']:.2f}x one worker's requests/s "
            f"(warm; p99 {one['p99']:.1f} -> {two['p99']:.1f} ms)"
        )
    if len(args.servers) == 2:
        for workers in (1, 2):
            granian, uvicorn = warm["granian", workers], warm["uvicorn", workers]
            print(
                f"  {workers} worker(s): granian does {granian['rps'] / uvicorn['rps']:.2f}x "
                f"uvicorn's requests/s, p99 {granian['p99']:.1f} vs {uvicorn['p99']:.1f} ms"
            )


def protocols(args, gateway, key, scratch):
    rounds = 2
    print(
        f"\nThe same question through each protocol, concurrency 1, {rounds} alternating "
        f"rounds of {args.seconds} s (p50 and p99 are the rounds' means)"
    )
    print(f"{'protocol':>17} | {'rps':>6} {'p50 ms':>7} {'p99 ms':>7} | added p50 | errors")
    runs = {name: [] for name, _path, _body in PROTOCOLS}
    for _round in range(rounds):
        for name, path, body in PROTOCOLS:
            script = lua_script(scratch / f"{path.replace('/', '-')}.lua", body, key=key)
            runs[name].append(wrk(gateway.url(path), script, 1, args.seconds))
    base_p50 = _mean(runs["chat completions"], "p50")
    for name, results in runs.items():
        p50 = _mean(results, "p50")
        print(
            f"{name:>17} | {_mean(results, 'rps'):>6.0f} {p50:>7.3f} "
            f"{_mean(results, 'p99'):>7.2f} | {p50 - base_p50:>+7.3f}ms | {_errors(*results)}"
        )


def ttfb(gateway, upstream_port, key):
    floor_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    floor_ttfb = asyncio.run(first_bytes(floor_url, key, 300))
    gateway_ttfb = asyncio.run(first_bytes(gateway.url(), key, 300))
    print("\nStreamed chat, time to first byte, 300 sequential requests")
    print(f"  floor   p50 {floor_ttfb[0]:.2f} ms  p99 {floor_ttfb[1]:.2f} ms")
    print(
        f"  gateway p50 {gateway_ttfb[0]:.2f} ms  p99 {gateway_ttfb[1]:.2f} ms"
        f"  (added p50 {gateway_ttfb[0] - floor_ttfb[0]:.2f} ms)"
    )


def memory(args, gateway, key, scratch):
    script = lua_script(scratch / "hot.lua", BODY, key=key)
    print(f"\nGateway memory over {args.memory_requests:,} requests (concurrency 10)")
    done = 0
    print(f"  {done:>8,} requests: {rss_mb(gateway.process.pid):6.1f} MB")
    while done < args.memory_requests:
        done += wrk(gateway.url(), script, 10, 10)["total"]
        print(f"  {done:>8,} requests: {rss_mb(gateway.process.pid):6.1f} MB")


CHECK = """
from django.db.models import Sum
from billing.models import Account, LedgerEntry
bad = []
accounts = Account.objects.filter(user__email__startswith="bench")
for a in accounts:
    s = LedgerEntry.objects.filter(account=a).aggregate(s=Sum("amount"))["s"]
    if s != a.balance or a.held != 0:
        bad.append(f"{a.user_id}: balance {a.balance}, ledger sum {s}, held {a.held}")
print(f"\\nAfter the run, {len(accounts)} accounts: balance = ledger sum and nothing held:",
      "consistent" if not bad else "INCONSISTENT " + "; ".join(bad))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument(
        "--database",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchboard_bench"
        ),
    )
    parser.add_argument(
        "--server", choices=SERVERS, default="uvicorn", help="for every section but load"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="the load section's, comma-separated"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument(
        "--baseline",
        metavar="REVISION",
        help="the tail section also measures the gateway as of this git revision, in turn",
    )
    args = parser.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    sections = set(args.sections.split(","))
    unknown = (sections - set(SECTIONS)) | (set(args.servers) - set(SERVERS))
    if unknown:
        sys.exit(f"unknown: {', '.join(sorted(unknown))}")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    ensure_database(args.database)
    upstream_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "DEBUG": "0",
        "SECRET_KEY": "bench-secret-key-not-for-production-" + "x" * 20,
        "SITE_URL": "http://127.0.0.1:8000",
        "LOG_LEVEL": "WARNING",
        "FORWARD_TO": f"http://127.0.0.1:{upstream_port}",
        # Measured apart: the periodic jobs (one a minute) are not the gateway's work.
        "PERIODIC_JOBS_IN_PROCESS": "0",
    }
    key, load_keys = prepare(env, upstream_port, "load" in sections)
    upstream = subprocess.Popen(
        [PYTHON, "-m", "tests.bench.upstream", "--port", str(upstream_port)], cwd=ROOT, env=env
    )
    gateway = None
    try:
        wait_for_port(upstream_port)
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            if "tail" in sections:
                tail(args, env, upstream_port, upstream.pid, key, scratch)
            if "load" in sections:
                load(args, env, load_keys, scratch)
            if sections & {"protocols", "ttfb", "memory"}:
                gateway = Server(args.server, GATEWAY_APP, 1, env)
                gateway.wait()
                wrk(gateway.url(), lua_script(scratch / "hot.lua", BODY, key=key), 10, 3)
                print(f"\nOne {args.server} gateway process, the hot key")
            if "protocols" in sections:
                protocols(args, gateway, key, scratch)
            if "ttfb" in sections:
                ttfb(gateway, upstream_port, key)
            if "memory" in sections:
                memory(args, gateway, key, scratch)
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.terminate()
        upstream.wait(timeout=30)
    subprocess.run([PYTHON, "manage.py", "shell", "-c", CHECK], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
