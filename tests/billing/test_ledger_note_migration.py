"""Entries staff made before notes existed keep their reason to staff, and read a plain note in
the user's balance history (billing 0013)."""

import pytest
from django.utils import timezone

from billing.models import LedgerEntry
from tests.billing.test_migrations import migrate, migrate_to_the_end

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def before_notes():
    try:
        yield migrate([("billing", "0012_cache_and_audio_prices")])
    finally:
        migrate_to_the_end()


def test_past_staff_entries_read_a_plain_note_and_keep_their_reason(before_notes):
    User = before_notes.get_model("accounts", "User")
    Account = before_notes.get_model("billing", "Account")
    Entry = before_notes.get_model("billing", "LedgerEntry")
    staff = User.objects.create(email="staff@example.com", is_staff=True)
    customer = User.objects.create(email="customer@example.com")
    account = Account.objects.create(user=customer, balance=3_000_000)
    now = timezone.now()
    rows = {
        "added": (4_000_000, "adjustment", staff, "Goodwill for ticket T-1, approved by Ann"),
        "taken": (-1_000_000, "adjustment", staff, "Duplicate credit, see T-2"),
        "usage": (-500, "usage", None, ""),
    }
    ids = {
        name: Entry.objects.create(
            account=account, amount=amount, balance_after=0, kind=kind, staff_user=who,
            reason=reason, created_at=now,
        ).pk
        for name, (amount, kind, who, reason) in rows.items()
    }  # fmt: skip
    migrate_to_the_end()
    notes = {name: LedgerEntry.objects.get(pk=pk).note for name, pk in ids.items()}
    assert notes == {"added": "Added by support.", "taken": "Corrected by support.", "usage": ""}
    assert LedgerEntry.objects.get(pk=ids["added"]).reason == rows["added"][3]
