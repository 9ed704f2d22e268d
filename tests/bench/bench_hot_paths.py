"""Small costs on the gateway's path of every request (issue 19's profile): making a request
id, pricing tokens. Each is timed as it is now and as it was (the
baseline, rebuilt here), in microseconds per call, best of several runs. Figures are printed;
nothing is asserted.

    .venv/bin/python tests/bench/bench_hot_paths.py [--number 50000] [--repeat 7]
"""

import argparse
import os
import sys
import time
import timeit
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from billing import pricing  # noqa: E402
from logs import ids  # noqa: E402

PRICE = {"model_multiplier": Decimal("1.5"), "completion_multiplier": Decimal(4)}
LINE = Decimal("0.85")


def uuid7_before():
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


def token_cost():
    return pricing.token_cost(
        prompt_tokens=1_200, completion_tokens=300, line_multiplier=LINE, **PRICE
    )


def token_cost_before():
    remembered = pricing._ratio
    pricing._ratio = remembered.__wrapped__  # each multiplier's fraction worked out every time
    try:
        return token_cost()
    finally:
        pricing._ratio = remembered


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    assert token_cost_before() == token_cost()

    def per_call(function):
        runs = timeit.repeat(function, number=args.number, repeat=args.repeat)
        return min(runs) / args.number * 1e6

    print(f"{'µs per call':<14}{'now':>8}{'baseline':>10}")
    for name, now, before in (
        ("uuid7", ids.uuid7, uuid7_before),
        ("token_cost", token_cost, token_cost_before),
    ):
        print(f"{name:<14}{per_call(now):>8.2f}{per_call(before):>10.2f}")


if __name__ == "__main__":
    main()
