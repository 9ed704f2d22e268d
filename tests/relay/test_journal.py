"""A journal left by a crash is replayed by whatever version of the gateway starts next: one
written before a field was renamed still replays with every value it holds."""

import ast
import json
from decimal import Decimal

import pytest
from django.conf import settings

from billing import services
from billing.models import LedgerEntry
from logs.models import RequestLog
from relay.journal import FIELDS, RENAMED, Journal, encode, replay_orphans
from tests.logs.test_pages import make_record
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)

# The record's fields as the version before lines had one name wrote them.
OLD = {"line_id": "group_id", "line_multiplier": "group_multiplier"}


def test_the_old_names_are_the_renamed_ones():
    assert {new: old for old, new in RENAMED.items()} == OLD


def test_a_journal_written_with_the_old_field_names_replays_with_its_line(alice, default_line):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, _key = token_create(user=alice, name="backend", line=default_line, notify=False)
    record = make_record(alice, token, cost=7, gm="1.5")
    journal = Journal(settings.GATEWAY_JOURNAL_DIR, "gateway-old").open()
    header = {"journal": 1, "owner": "gateway-old", "fields": [OLD.get(f, f) for f in FIELDS]}
    journal.path.write_bytes(json.dumps(header).encode() + b"\n" + encode(record))
    journal.close(settled=False)  # as if killed: the journal stays for a replay

    assert replay_orphans(settings.GATEWAY_JOURNAL_DIR) == 1
    row = RequestLog.objects.get(pk=record.id)
    assert (row.line_id, row.line_multiplier, row.cost) == (default_line.pk, Decimal("1.5"), 7)


def test_a_journal_written_before_the_usage_had_parts_replays_without_them(alice, default_line):
    services.balance_credit(user=alice, amount=10_000_000, kind=LedgerEntry.Kind.ADJUSTMENT)
    token, _key = token_create(user=alice, name="backend", line=default_line, notify=False)
    record = make_record(alice, token, cost=9)
    older = [f for f in FIELDS if not (f.startswith(("cache_", "audio_")) or f in
             {"reasoning_tokens", "image_tokens"})]  # fmt: skip
    line = repr([v for f, v in zip(FIELDS, ast.literal_eval(encode(record).decode()), strict=True)
                 if f in older]).encode() + b"\n"  # fmt: skip
    assert len(older) == len(FIELDS) - 12
    journal = Journal(settings.GATEWAY_JOURNAL_DIR, "gateway-older").open()
    header = {"journal": 1, "owner": "gateway-older", "fields": older}
    journal.path.write_bytes(json.dumps(header).encode() + b"\n" + line)
    journal.close(settled=False)

    assert replay_orphans(settings.GATEWAY_JOURNAL_DIR) == 1
    row = RequestLog.objects.get(pk=record.id)
    assert (row.cost, row.cache_read_tokens, row.cache_read_multiplier) == (9, 0, 0)
