"""The console app's migrations: the staff roles, and the move of tickets, announcements and
email deliveries to apps of their own (support, announcements, accounts), which renames their
tables and moves their content types: rows, ids, permissions, staff roles and admin history
stay as they were, and the move can be undone."""

from decimal import Decimal
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import EmailDelivery, User
from billing.models import PriceAdjustment
from console.announcements.models import Announcement
from console.support.models import Ticket, TicketAttachment, TicketMessage

# Migrating a real schema back and forth: no test transaction around it.
pytestmark = pytest.mark.django_db(transaction=True)

# The migrations that make the move, each app's own part of it.
THE_MOVE = [
    ("support", "0001_initial"),
    ("announcements", "0001_initial"),
    ("accounts", "0004_emaildelivery"),
    ("billing", "0008_priceadjustment_announcement_moved"),
    ("console", "0006_models_moved_to_their_apps"),
]
ROLE_PERMISSIONS = ["publish_announcement", "view_ticket", "view_emaildelivery"]


def before_the_move():
    """Each app at its migration before its part of the move."""
    graph = MigrationExecutor(connection).loader.graph
    targets = []
    for app, name in THE_MOVE:
        parents = [p.key for p in graph.node_map[app, name].parents if p.key[0] == app]
        targets.append(parents[0] if parents else (app, None))
    return targets


def migrate(targets):
    """Migrates to `targets`; the models of the project as it was there."""
    MigrationExecutor(connection).migrate(targets)
    ContentType.objects.clear_cache()  # the rows moved under the cache's feet
    nodes = [target for target in targets if target[1] is not None]
    return MigrationExecutor(connection).loader.project_state(nodes).apps


def migrate_to_the_end():
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


def named(group):
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


@pytest.fixture
def before(transactional_db):
    """The database before the move, with a row of each moving model, a staff role holding
    their permissions and an admin log entry; migrated to the end again afterwards."""
    old = migrate(before_the_move())
    try:
        yield rows_before_the_move(old.get_model)
    finally:
        migrate_to_the_end()  # also when a step failed: the tests after this one need it


def rows_before_the_move(model):
    """A row of each model that moves, in the models of before the move; their ids."""
    user = model("accounts", "User").objects.create(email="alice@example.com", password="!")
    ticket = model("console", "Ticket").objects.create(
        number="T-MOVED001", user=user, subject="Not credited", category="recharge"
    )
    message = model("console", "TicketMessage").objects.create(
        ticket=ticket, author=user, body="Paid yesterday."
    )
    attachment = model("console", "TicketAttachment").objects.create(
        message=message,
        file="ticket-attachments/receipt.png",
        original_name="receipt.png",
        content_type="image/png",
        size=123,
    )
    announcement = model("console", "Announcement").objects.create(
        title="Price change: gpt-x", kind="price", body="Cheaper.", published_at=timezone.now()
    )
    price = model("billing", "ModelPrice").objects.create(model="gpt-x", vendor="OpenAI")
    adjustment = model("billing", "PriceAdjustment").objects.create(
        model_price=price,
        field="model_multiplier",
        old_value=Decimal(1),
        new_value=Decimal("0.5"),
        reason="upstream",
        batch="b1",
        announcement=announcement,
    )
    delivery = model("console", "EmailDelivery").objects.create(
        key=f"announcement:{announcement.pk}",
        recipient=user.email,
        template="announcement",
        status="sent",
    )
    permissions = model("auth", "Permission").objects.filter(
        content_type__app_label="console", codename__in=ROLE_PERMISSIONS
    )
    role = model("auth", "Group").objects.create(name="Moved role")
    role.permissions.set(permissions)
    ticket_type = model("contenttypes", "ContentType").objects.get(
        app_label="console", model="ticket"
    )
    entry = LogEntry.objects.create(  # the admin's log: the same before and after
        user_id=user.pk,
        content_type_id=ticket_type.pk,
        object_id=str(ticket.pk),
        object_repr=str(ticket.number),
        action_flag=2,
    )
    return SimpleNamespace(
        user=user.pk,
        ticket=ticket.pk,
        message=message.pk,
        attachment=attachment.pk,
        announcement=announcement.pk,
        adjustment=adjustment.pk,
        delivery=delivery.pk,
        role=role.pk,
        entry=entry.pk,
        ticket_type=ticket_type.pk,
    )


def test_the_move_keeps_every_row_and_id(before):
    migrate_to_the_end()
    ticket = Ticket.objects.get(pk=before.ticket)
    assert (ticket.number, ticket.user_id, ticket.subject) == (
        "T-MOVED001",
        before.user,
        "Not credited",
    )
    message = TicketMessage.objects.get(pk=before.message)
    assert (message.ticket_id, message.body) == (before.ticket, "Paid yesterday.")
    attachment = TicketAttachment.objects.get(pk=before.attachment)
    assert (attachment.message_id, attachment.file.name) == (
        before.message,
        "ticket-attachments/receipt.png",
    )
    announcement = Announcement.objects.get(pk=before.announcement)
    assert announcement.title == "Price change: gpt-x"
    assert PriceAdjustment.objects.get(pk=before.adjustment).announcement == announcement
    delivery = EmailDelivery.objects.get(pk=before.delivery)
    assert (delivery.recipient, delivery.status) == ("alice@example.com", "sent")


def test_new_rows_take_ids_after_the_moved_ones(before):
    migrate_to_the_end()
    user = User.objects.get(pk=before.user)
    ticket = Ticket.objects.create(number="T-NEW00001", user=user, subject="x", category="other")
    assert ticket.pk > before.ticket
    announcement = Announcement.objects.create(title="Next", body="x")
    assert announcement.pk > before.announcement
    delivery = EmailDelivery.objects.create(key="k", recipient="bob@example.com", template="t")
    assert delivery.pk > before.delivery


def test_permissions_staff_roles_and_admin_history_follow_the_models(before):
    migrate_to_the_end()
    assert named(Group.objects.get(pk=before.role)) == {
        "announcements.publish_announcement",
        "support.view_ticket",
        "accounts.view_emaildelivery",
    }
    entry = LogEntry.objects.get(pk=before.entry)
    assert entry.content_type_id == before.ticket_type
    assert entry.get_edited_object() == Ticket.objects.get(pk=before.ticket)
    assert not ContentType.objects.filter(app_label="console").exists()


def test_the_move_can_be_undone(before):
    migrate_to_the_end()
    old = migrate(before_the_move())
    ticket = old.get_model("console", "Ticket").objects.get(pk=before.ticket)
    assert ticket.number == "T-MOVED001"
    assert (
        old.get_model("console", "TicketAttachment")
        .objects.filter(pk=before.attachment, message_id=before.message)
        .exists()
    )
    adjustment = old.get_model("billing", "PriceAdjustment").objects.get(pk=before.adjustment)
    assert adjustment.announcement_id == before.announcement
    assert old.get_model("console", "EmailDelivery").objects.filter(pk=before.delivery).exists()
    role = old.get_model("auth", "Group").objects.get(pk=before.role)
    assert {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.all()} == {
        f"console.{codename}" for codename in ROLE_PERMISSIONS
    }


def test_the_roles_migration_runs_twice_without_change(before):
    # Where it runs: in the project as it was then (it names the permissions of that time).
    roles = import_module("console.migrations.0005_staff_roles")
    state = MigrationExecutor(connection).loader.project_state(("console", "0005_staff_roles"))
    # What the migration reads of its schema editor: the connection.
    schema_editor = SimpleNamespace(connection=connection)
    roles.create_roles(state.apps, schema_editor)  # the roles exist, whatever ran before
    before_again = {g.name: named(g) for g in Group.objects.all()}
    roles.create_roles(state.apps, schema_editor)
    assert {g.name: named(g) for g in Group.objects.all()} == before_again
