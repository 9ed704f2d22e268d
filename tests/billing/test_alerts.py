"""Low-balance alerts: an email once when a balance falls below the user's threshold."""

from django.core import mail

from accounts.models import NotificationSettings
from billing import services as billing


def test_low_balance_alerts_once_per_fall(alice, django_capture_on_commit_callbacks):
    NotificationSettings.objects.create(
        user=alice, low_balance_emails=True, low_balance_threshold=5_000_000
    )
    with django_capture_on_commit_callbacks(execute=True):
        billing.balance_credit(user=alice, amount=10_000_000, kind="adjustment")
        billing.balance_charge(user=alice, amount=4_000_000, kind="usage")  # $6: above
        billing.balance_charge(user=alice, amount=2_000_000, kind="usage")  # $4: falls below
        billing.balance_charge(user=alice, amount=1_000_000, kind="usage")  # $3: still below
    assert [m.subject for m in mail.outbox] == ["Your Switchboard balance is below $5.00"]
    assert "it is $3.00 now" in mail.outbox[0].body  # the balance when the email went out
    with django_capture_on_commit_callbacks(execute=True):
        billing.balance_credit(user=alice, amount=10_000_000, kind="adjustment")  # back above
        billing.balance_charge(user=alice, amount=9_000_000, kind="usage")  # below again
    assert len(mail.outbox) == 2


def _alerts_after(steps, alice, capture):
    """Runs (credit or charge, micro-dollars) steps; the number of alerts sent after each."""
    sent = []
    for kind, amount in steps:
        with capture(execute=True):
            if kind == "credit":
                billing.balance_credit(user=alice, amount=amount, kind="adjustment")
            elif kind == "charge":
                billing.balance_charge(user=alice, amount=amount, kind="usage")
            else:  # the user changes their settings: (field, value)
                NotificationSettings.objects.filter(user=alice).update(**dict([amount]))
        sent.append(len(mail.outbox))
    return sent


def test_an_alert_armed_while_below_goes_out_at_the_next_charge(
    alice, django_capture_on_commit_callbacks
):
    # A charge that does not cross the threshold still alerts when the balance was below it
    # before the alert was wanted (or before the threshold was raised above the balance).
    NotificationSettings.objects.create(user=alice, low_balance_threshold=5_000_000)
    steps = [
        ("credit", 3_000_000),
        ("charge", 1_000_000),  # $2: below, but alerts are off
        ("settings", ("low_balance_emails", True)),
        ("charge", 1_000_000),  # $1: the alert goes out now
        ("charge", 500_000),  # once
        ("settings", ("low_balance_alerted", False)),  # a new threshold starts afresh
        ("settings", ("low_balance_threshold", 500_000)),
        ("charge", 100_000),  # $0.40: below the new threshold
    ]
    assert _alerts_after(steps, alice, django_capture_on_commit_callbacks) == [
        0, 0, 0, 1, 1, 1, 1, 2,
    ]  # fmt: skip


def test_only_a_recharge_to_the_threshold_rearms_the_alert(
    alice, django_capture_on_commit_callbacks
):
    NotificationSettings.objects.create(
        user=alice, low_balance_emails=True, low_balance_threshold=5_000_000
    )
    steps = [
        ("credit", 5_000_000),  # exactly the threshold: not below
        ("charge", 1),  # a micro-dollar below: alerted
        ("credit", 500_000),  # back above: re-armed
        ("charge", 500_000),  # $4.999999 again: alerted again
        ("credit", 1),  # exactly $5: not below any more, re-armed
        ("charge", 1),  # alerted again
        ("charge", 1_000_000),  # still below: nothing
        ("credit", 900_000),  # $4.899999: still below, not re-armed
        ("charge", 1),  # nothing
    ]
    assert _alerts_after(steps, alice, django_capture_on_commit_callbacks) == [
        0, 1, 1, 2, 2, 3, 3, 3, 3,
    ]  # fmt: skip


def test_a_charge_far_above_the_threshold_does_not_look_at_the_alert(alice):
    # The gateway charges every account on each of its flushes: the alert as read with the
    # account says that nothing can come of looking at it again.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    NotificationSettings.objects.create(
        user=alice, low_balance_emails=True, low_balance_threshold=5_000_000
    )
    billing.balance_credit(user=alice, amount=100_000_000, kind="adjustment")
    with CaptureQueriesContext(connection) as queries:
        billing.balance_charge(user=alice, amount=1_000_000, kind="usage")
    asked = [q["sql"] for q in queries if "notificationsettings" in q["sql"].lower()]
    assert len(asked) == 1  # the account's own read, under its lock
