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
