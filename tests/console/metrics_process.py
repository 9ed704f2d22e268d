"""A worker process in metrics' multiprocess mode, for tests/console/test_metrics.py.

    python -m tests.console.metrics_process count REQUESTS WAITING [stop|stay]
    python -m tests.console.metrics_process start
    python -m tests.console.metrics_process scrape

`count` starts as a web worker does, counts REQUESTS served requests of gpt-4o-mini on channel
7 and sets its backlog to WAITING records, as a gateway's flush does; then it stops as a web
worker does (`stop`), or prints "ready" and stays until killed (`stay`). `start` only starts as
a web worker does. `scrape` prints what a scrape answers. PROMETHEUS_MULTIPROC_DIR comes from
the environment.
"""

import sys
import time
import uuid
from datetime import UTC, datetime

import django


def record(model="gpt-4o-mini", *, channel_id=7, status=200, latency_ms=40, ttft_ms=None):
    """A request as the gateway records it (also the records of test_metrics.py)."""
    from logs.writer import RequestRecord  # after django.setup(), in a process of its own

    return RequestRecord(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        user_id=1,
        token_id=1,
        line_id=1,
        channel_id=channel_id,
        endpoint="chat",
        model=model,
        stream=ttft_ms is not None,
        client_ip="127.0.0.1",
        status=status,
        error_code="",
        prompt_tokens=12,
        completion_tokens=5,
        usage_estimated=False,
        cost=5,
        model_multiplier=0,
        completion_multiplier=0,
        line_multiplier=0,
        call_price=0,
        per_call=False,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        retries=0,
    )


def served(count):
    return [record() for _ in range(count)]


def main(command, *args):
    django.setup()
    from console.lib import metrics

    if command == "count":
        requests, waiting, then = int(args[0]), int(args[1]), args[2]
        metrics.process_started()
        metrics.requests_served(served(requests))
        metrics.gateway_backlog(waiting=waiting, set_aside=0)
        if then == "stop":
            metrics.process_stopped()
            return
        print("ready", flush=True)
        time.sleep(600)
    elif command == "start":
        metrics.process_started()
    elif command == "scrape":
        body, _content_type = metrics.Endpoint(money_held=lambda: {}).exposition()
        sys.stdout.write(body.decode())


if __name__ == "__main__":
    main(*sys.argv[1:])
