"""Gateway benchmark: requests per second and latency, through the gateway and without it.

Side by side in one run, on this machine:
- the floor: wrk straight to a fixed-answer upstream (tests/bench/upstream.py);
- the gateway with billing and logging on, against PostgreSQL, one uvicorn worker process,
  without its journal (GATEWAY_JOURNAL=0) and as it runs, with it: what durability costs;
at concurrency 1, 10 and 50. Then the same question through each protocol the gateway bridges
(Anthropic Messages, the Responses API) against chat completions at concurrency 1, streaming
time to first byte (sequential, both ways), and the gateway's memory over 100,000 requests.
Figures are printed; nothing is asserted.

    .venv/bin/python tests/bench/bench_gateway.py [--seconds 10] [--database postgres://…]

Needs wrk (apt-get install wrk) and PostgreSQL; the database named by --database (default
switchboard_bench on 127.0.0.1) is created if missing and its tables are overwritten.
"""

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
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=30):
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


def prepare(env, upstream_port):
    """Migrates the bench database and makes a funded user, a token, a price and a channel."""
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    script = f"""
from decimal import Decimal
from accounts.models import User
from billing.models import Account, Hold, LedgerEntry, Line, ModelPrice
from billing.services import balance_credit
from relay.models import Channel
from tokens.models import Token
from tokens.services import token_create
from logs.models import RequestLog
user, _ = User.objects.get_or_create(email="bench@example.com")
Token.objects.filter(user=user).delete()
Hold.objects.all().delete()
Account.objects.filter(user=user).update(held=0)
if Account.objects.get(user=user).balance < 1_000_000_000_000:
    balance_credit(user=user, amount=1_000_000_000_000, kind="adjustment", reason="bench")
ModelPrice.objects.update_or_create(model="gpt-4o-mini", defaults=dict(vendor="OpenAI",
    model_multiplier=Decimal("0.075"), completion_multiplier=Decimal(4), enabled=True))
Channel.objects.all().delete()
channel = Channel(name="bench", type="openai", base_url="http://127.0.0.1:{upstream_port}/v1",
                  model_names=["gpt-4o-mini"])
channel.set_key("sk-bench")
channel.save()
channel.lines.set(Line.objects.filter(name="default"))
print("ROWS", RequestLog.objects.count())
default = Line.objects.get(name="default")
token, key = token_create(user=user, name="bench", line=default, notify=False)
print("KEY", key)
"""
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return re.search(r"KEY (sk-\S+)", out).group(1)


def wrk(url, key, connections, seconds, script_dir, body=BODY):
    script = Path(script_dir) / "post.lua"
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{escaped}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
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


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_gateway(port, env):
    return subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "console.asgi:application",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )


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
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    ensure_database(args.database)
    upstream_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "DEBUG": "0",
        "SECRET_KEY": "bench-secret-key-not-for-production-" + "x" * 20,
        "SITE_URL": f"http://127.0.0.1:{gateway_port}",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)  # one worker: no invalidation bus needed
    key = prepare(env, upstream_port)
    journal_dir = tempfile.mkdtemp(prefix="bench-journal-")
    upstream = subprocess.Popen(
        [PYTHON, "-m", "tests.bench.upstream", "--port", str(upstream_port)], cwd=ROOT, env=env
    )
    # The gateway as it runs (every answer journaled before it completes), and beside it the
    # same without the journal: what durability costs, measured in the same run.
    gateway = start_gateway(gateway_port, {**env, "GATEWAY_JOURNAL_DIR": journal_dir})
    bare_port = free_port()
    bare = start_gateway(bare_port, {**env, "GATEWAY_JOURNAL": "0"})
    try:
        for port in (upstream_port, gateway_port, bare_port):
            wait_for_port(port)
        floor_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        with tempfile.TemporaryDirectory() as scratch:
            for url in (gateway_url, bare_url, floor_url):
                wrk(url, key, 10, 3, scratch)  # warm up: connections, caches, leases
            print(f"\nNon-streamed chat completions, {args.seconds} s each, wrk on 127.0.0.1")
            print(
                f"{'concurrency':>11} | {'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} | "
                f"{'no journal':>10} {'p50 ms':>7} {'p99 ms':>7} | "
                f"{'gateway rps':>11} {'p50 ms':>7} {'p99 ms':>7} | {'journal':>7} | "
                f"{'added p50':>9} | errors"
            )
            for connections in (1, 10, 50):
                floor = wrk(floor_url, key, connections, args.seconds, scratch)
                through = wrk(gateway_url, key, connections, args.seconds, scratch)
                without = wrk(bare_url, key, connections, args.seconds, scratch)
                print(
                    f"{connections:>11} | {_figures(floor, 9)} | {_figures(without, 10)} | "
                    f"{_figures(through, 11)} | {through['rps'] / without['rps']:>6.2f}x | "
                    f"{through['p50'] - floor['p50']:>7.2f}ms | "
                    f"{through['errors'] + without['errors']}"
                )
            bare.terminate()
            bare.wait(timeout=30)

            rounds = 3
            print(
                f"\nThe same question through each protocol, concurrency 1, {rounds} alternating "
                f"rounds of {args.seconds} s (p50 and p99 are the rounds' means)"
            )
            print(f"{'protocol':>17} | {'rps':>6} {'p50 ms':>7} {'p99 ms':>7} | added p50 | errors")
            runs = {name: [] for name, _path, _body in PROTOCOLS}
            for _round in range(rounds):
                for name, path, body in PROTOCOLS:
                    url = f"http://127.0.0.1:{gateway_port}/v1/{path}"
                    runs[name].append(wrk(url, key, 1, args.seconds, scratch, body=body))
            base_p50 = _mean(runs["chat completions"], "p50")
            for name, results in runs.items():
                p50 = _mean(results, "p50")
                print(
                    f"{name:>17} | {_mean(results, 'rps'):>6.0f} {p50:>7.3f} "
                    f"{_mean(results, 'p99'):>7.2f} | {p50 - base_p50:>+7.3f}ms | "
                    f"{sum(r['errors'] for r in results)}"
                )

            floor_ttfb = asyncio.run(first_bytes(floor_url, key, 300))
            gateway_ttfb = asyncio.run(first_bytes(gateway_url, key, 300))
            print("\nStreamed chat, time to first byte, 300 sequential requests")
            print(f"  floor   p50 {floor_ttfb[0]:.2f} ms  p99 {floor_ttfb[1]:.2f} ms")
            print(
                f"  gateway p50 {gateway_ttfb[0]:.2f} ms  p99 {gateway_ttfb[1]:.2f} ms"
                f"  (added p50 {gateway_ttfb[0] - floor_ttfb[0]:.2f} ms)"
            )

            print(f"\nGateway memory over {args.memory_requests:,} requests (concurrency 10)")
            done = 0
            print(f"  {done:>8,} requests: {rss_mb(gateway.pid):6.1f} MB")
            while done < args.memory_requests:
                done += wrk(gateway_url, key, 10, 10, scratch)["total"]
                print(f"  {done:>8,} requests: {rss_mb(gateway.pid):6.1f} MB")
        time.sleep(2)  # the last flush
    finally:
        for process in (gateway, bare, upstream):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(journal_dir, ignore_errors=True)
    check = """
from django.db.models import Sum
from billing.models import Account, LedgerEntry
a = Account.objects.get(user__email="bench@example.com")
s = LedgerEntry.objects.filter(account=a).aggregate(s=Sum("amount"))["s"]
print(f"\\nAfter the run: balance {a.balance}, ledger sum {s}, held {a.held}:",
      "consistent" if s == a.balance and a.held == 0 else "INCONSISTENT")
"""
    subprocess.run([PYTHON, "manage.py", "shell", "-c", check], cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
