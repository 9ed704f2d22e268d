"""What the metrics cost the gateway: counting a flush's request records, and a scrape.

The gateway counts its requests from their records once a second, in the flush thread
(console.lib.metrics.requests_served). That thread shares the interpreter's lock with the event
loop, so its time is time the loop may wait. This measures it per 10,000 records (a busy
second), in-process and in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one file write per
value), against the plain way (labels().inc() and observe() per record) as the baseline; and
how long a scrape takes with several processes' files. Figures are printed; nothing is asserted.

    .venv/bin/python tests/bench/bench_metrics.py [--records 10000] [--repeat 20]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Ours (the issue sets none): counting a busy second's 10,000 records takes at most 1% of it.
TARGET_MS = 10.0

MEASURE = """
import json, random, statistics, sys, time, uuid
from datetime import UTC, datetime
import django
django.setup()
from console.lib import metrics
from logs.writer import RequestRecord

records_per_flush, repeat = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
models = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "text-embedding-3-small"]
statuses = [200] * 95 + [429, 402, 400, 502, 500]


def record():
    stream = random.random() < 0.5
    return RequestRecord(
        id=uuid.uuid4(), created_at=datetime.now(UTC), user_id=random.randint(1, 100),
        token_id=1, line_id=1, channel_id=random.choice([1, 2, 3]), endpoint="chat",
        model=random.choice(models), stream=stream, client_ip="127.0.0.1",
        status=random.choice(statuses), error_code="", prompt_tokens=12, completion_tokens=5,
        usage_estimated=False, cost=5, model_multiplier=0, completion_multiplier=0,
        line_multiplier=0, call_price=0, per_call=False,
        latency_ms=random.randint(1, 5000), ttft_ms=random.randint(1, 900) if stream else None,
        retries=0,
    )


records = [record() for _ in range(records_per_flush)]


def plain(records):
    for r in records:
        model, channel = r.model, str(r.channel_id)
        metrics.REQUESTS.labels(model, channel, str(r.status)).inc()
        metrics.LATENCY.labels(model, channel, f"{r.status // 100}xx").observe(r.latency_ms / 1000)
        if r.ttft_ms is not None:
            metrics.FIRST_TOKEN.labels(model, channel).observe(r.ttft_ms / 1000)


def timed(function):
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function(records)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), max(runs)


hook, hook_max = timed(metrics.requests_served)
baseline, baseline_max = timed(plain)
endpoint = metrics.Endpoint(money_held=lambda: {})
scrapes = []
for _ in range(10):
    started = time.perf_counter()
    body, _type = endpoint.exposition()
    scrapes.append((time.perf_counter() - started) * 1000)
print(json.dumps({"hook": hook, "hook_max": hook_max, "baseline": baseline,
                  "baseline_max": baseline_max, "scrape": statistics.median(scrapes),
                  "bytes": len(body)}))
"""


def run(records, repeat, directory=None):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if directory:
        env["PROMETHEUS_MULTIPROC_DIR"] = directory
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(records), str(repeat)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="Records per flush.")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--processes", type=int, default=4, help="Files a scrape reads.")
    args = parser.parse_args()
    print(f"Counting {args.records:,} request records (one flush), median of {args.repeat}:")
    print(f"{'mode':<14}{'hook ms':>10}{'max':>8}{'target':>9}{'plain ms':>10}{'max':>8}")
    rows = [("in-process", run(args.records, args.repeat))]
    with tempfile.TemporaryDirectory() as directory:
        # Earlier processes' files, as a scrape of several workers reads them.
        for _ in range(args.processes - 1):
            run(args.records, 1, directory)
        started = time.perf_counter()
        rows.append(("multiprocess", run(args.records, args.repeat, directory)))
        took = time.perf_counter() - started
    for mode, figures in rows:
        print(
            f"{mode:<14}{figures['hook']:>10.2f}{figures['hook_max']:>8.2f}{TARGET_MS:>9.1f}"
            f"{figures['baseline']:>10.2f}{figures['baseline_max']:>8.2f}"
        )
    print()
    for mode, figures in rows:
        files = f" ({args.processes} processes' files)" if mode == "multiprocess" else ""
        print(
            f"A scrape, {mode}{files}: {figures['scrape']:.1f} ms, "
            f"{figures['bytes'] / 1024:.0f} KiB of text"
        )
    print(f"(the multiprocess run took {took:.1f} s with its start-up)")


if __name__ == "__main__":
    main()
