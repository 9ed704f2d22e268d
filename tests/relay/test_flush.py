"""A log row the database refuses must not stop a gateway process's logging and billing."""

from console.asgi import gateway
from logs.models import RequestLog
from tests.conftest import balance_of, ledger_sum
from tests.logs.test_pages import make_record
from tests.relay.conftest import wait_until


def test_a_refused_row_is_left_out_and_billing_goes_on(api, funded, token_and_key, caplog):
    token, _key = token_and_key
    # A row no database takes (a lone surrogate), as a future bug might produce one, in the
    # same batch as real requests.
    poisoned = make_record(funded, token, model="gpt-4o-mini\ud800")
    gateway.records.append(poisoned)
    for _ in range(3):
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    wait_until(lambda: RequestLog.objects.count() == 3, message="the good rows written")
    wait_until(lambda: ledger_sum(funded) < 10_000_000, message="the usage charged")
    assert not RequestLog.objects.filter(id=poisoned.id).exists()
    assert f"Left out request log row {poisoned.id}" in caplog.text
    assert "Gateway flush failed" not in caplog.text
    assert balance_of(funded) == ledger_sum(funded)
