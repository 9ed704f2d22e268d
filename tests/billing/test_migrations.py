"""Lines were called groups: the migrations that rename them (billing 0010 and 0011, and the
columns of tokens, logs and relay) keep every row, id and value, give the permissions their
new names so that staff roles keep them, and can be undone."""

import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.apps import apps as project_apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group as StaffGroup
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.models import Line, LineGrant, PriceAdjustment
from logs.models import RequestLog, UsageMinute
from relay.models import Channel
from tokens.models import Token

# Migrating a real schema back and forth: no test transaction around it.
pytestmark = pytest.mark.django_db(transaction=True)

# The migrations of the rename, each app's own part of it (billing's 0011 comes after 0010).
THE_RENAME = [
    ("billing", "0010_group_renamed_line"),
    ("tokens", "0002_token_group_renamed_line"),
    ("logs", "0007_group_renamed_line"),
    ("relay", "0002_channel_groups_renamed_lines"),
]
ROLE_PERMISSIONS = ["change_group", "view_groupgrant"]


def before_the_rename():
    """Each app at its migration before its part of the rename."""
    graph = MigrationExecutor(connection).loader.graph
    targets = []
    for app, name in THE_RENAME:
        parents = [p.key for p in graph.node_map[app, name].parents if p.key[0] == app]
        targets.append(parents[0])
    return targets


def migrate(targets):
    """Migrates to `targets`; the models of the project as it was there."""
    MigrationExecutor(connection).migrate(targets)
    ContentType.objects.clear_cache()  # the rows changed under the cache's feet
    return MigrationExecutor(connection).loader.project_state(targets).apps


def migrate_to_the_end():
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


def named(role):
    return {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.all()}


@pytest.fixture
def old():
    """The models of before the rename, the database migrated there; migrated to the end
    again afterwards."""
    try:
        yield migrate(before_the_rename())
    finally:
        migrate_to_the_end()  # also when a step failed: the tests after this one need it


@pytest.fixture
def before(old):
    return rows_before_the_rename(old.get_model)


def rows_before_the_rename(model):
    """A line and what names it, in the models of before the rename; their ids."""
    user = model("accounts", "User").objects.create(email="alice@example.com", password="!")
    line = model("billing", "Group").objects.create(
        name="training", multiplier=Decimal("0.5"), requires_grant=True, position=3
    )
    grant = model("billing", "GroupGrant").objects.create(group=line, user=user, note="batch")
    token = model("tokens", "Token").objects.create(
        user=user, name="batch", key_hash="a" * 64, key_prefix="sk-a", key_suffix="aaaa", group=line
    )
    log = model("logs", "RequestLog").objects.create(
        id=uuid.uuid4(),
        created_at=timezone.now(),
        user=user,
        token=token,
        group=line,
        endpoint="chat",
        model="gpt-x",
        status=200,
        prompt_tokens=1000,
        cost=1000,
        model_multiplier=Decimal(1),
        completion_multiplier=Decimal(4),
        group_multiplier=Decimal("0.5"),
    )
    rollup = model("logs", "UsageMinute").objects.create(
        bucket=timezone.now().replace(second=0, microsecond=0),
        user_id=user.pk,
        token_id=token.pk,
        group_id=line.pk,
        model="gpt-x",
        ok=True,
        requests=1,
        cost=1000,
    )
    channel = model("relay", "Channel").objects.create(name="training upstream")
    channel.groups.add(line)
    adjustment = model("billing", "PriceAdjustment").objects.create(
        group=line,
        field="group_multiplier",
        old_value=Decimal(1),
        new_value=Decimal("0.5"),
        reason="cheaper nights",
        batch="b1",
    )
    permissions = model("auth", "Permission").objects.filter(
        content_type__app_label="billing", codename__in=ROLE_PERMISSIONS
    )
    assert permissions.count() == len(ROLE_PERMISSIONS)
    role = model("auth", "Group").objects.create(name="Line staff")
    role.permissions.set(permissions)
    line_type = model("contenttypes", "ContentType").objects.get(app_label="billing", model="group")
    entry = LogEntry.objects.create(  # the admin's log: it follows the content type
        user_id=user.pk,
        content_type_id=line_type.pk,
        object_id=str(line.pk),
        object_repr=line.name,
        action_flag=2,
    )
    return SimpleNamespace(
        user=user.pk,
        line=line.pk,
        grant=grant.pk,
        token=token.pk,
        log=log.pk,
        rollup=rollup.pk,
        channel=channel.pk,
        adjustment=adjustment.pk,
        role=role.pk,
        line_type=line_type.pk,
        entry=entry.pk,
    )


def test_the_rename_keeps_every_row_id_and_value(before):
    migrate_to_the_end()
    line = Line.objects.get(pk=before.line)
    assert (line.name, line.multiplier, line.requires_grant, line.position) == (
        "training",
        Decimal("0.5"),
        True,
        3,
    )
    grant = LineGrant.objects.get(pk=before.grant)
    assert (grant.line_id, grant.user_id, grant.note) == (before.line, before.user, "batch")
    assert Token.objects.get(pk=before.token).line_id == before.line
    log = RequestLog.objects.get(pk=before.log)
    assert (log.line_id, log.line_multiplier, log.cost) == (before.line, Decimal("0.5"), 1000)
    assert UsageMinute.objects.get(pk=before.rollup).line_id == before.line
    assert list(Channel.objects.get(pk=before.channel).lines.all()) == [line]
    adjustment = PriceAdjustment.objects.get(pk=before.adjustment)
    assert (adjustment.line_id, adjustment.field) == (before.line, "line_multiplier")
    assert adjustment.get_field_display() == "Line multiplier"


def test_the_constraints_hold_under_their_new_names(before):
    migrate_to_the_end()
    with connection.cursor() as cursor:
        grants = connection.introspection.get_constraints(cursor, LineGrant._meta.db_table)
        adjustments = connection.introspection.get_constraints(
            cursor, PriceAdjustment._meta.db_table
        )
    assert grants["one_grant_per_user_and_line"]["columns"] == ["line_id", "user_id"]
    assert "adjustment_targets_a_model_or_a_line" in adjustments
    assert "one_grant_per_user_and_group" not in grants


def test_staff_roles_keep_their_permissions_under_the_new_names(before):
    migrate_to_the_end()
    assert named(StaffGroup.objects.get(pk=before.role)) == {
        "billing.change_line",
        "billing.view_linegrant",
    }
    billing = Permission.objects.filter(content_type__app_label="billing")
    assert billing.get(codename="change_line").name == "Can change line"
    assert billing.get(codename="view_linegrant").name == "Can view line grant"
    assert not billing.filter(codename__contains="group").exists()
    assert ContentType.objects.get_for_model(Line).pk == before.line_type
    entry = LogEntry.objects.get(pk=before.entry)
    assert entry.get_edited_object() == Line.objects.get(pk=before.line)


def test_post_migrate_adds_no_second_set_of_permissions(before):
    migrate_to_the_end()
    billing = Permission.objects.filter(content_type__app_label="billing")
    count = billing.count()
    create_permissions(project_apps.get_app_config("billing"), verbosity=0)
    assert billing.count() == count
    assert billing.filter(codename="change_line").count() == 1


def test_a_permission_made_meanwhile_under_the_new_name_takes_the_holders(old, before):
    """post_migrate of a run that stopped half way may have made view_line already."""
    ContentType_ = old.get_model("contenttypes", "ContentType")
    Permission_ = old.get_model("auth", "Permission")
    made = Permission_.objects.create(
        content_type=ContentType_.objects.create(app_label="billing", model="line"),
        codename="change_line",
        name="Can change line",
    )
    migrate_to_the_end()
    assert named(StaffGroup.objects.get(pk=before.role)) == {
        "billing.change_line",
        "billing.view_linegrant",
    }
    billing = Permission.objects.filter(content_type__app_label="billing")
    assert billing.get(codename="change_line").pk == made.pk
    assert not billing.filter(codename__contains="group").exists()


def test_the_rename_can_be_undone(before):
    migrate_to_the_end()
    old = migrate(before_the_rename())
    line = old.get_model("billing", "Group").objects.get(pk=before.line)
    assert line.name == "training"
    grant = old.get_model("billing", "GroupGrant").objects.get(pk=before.grant)
    assert grant.group_id == before.line
    assert old.get_model("tokens", "Token").objects.get(pk=before.token).group_id == before.line
    log = old.get_model("logs", "RequestLog").objects.get(pk=before.log)
    assert (log.group_id, log.group_multiplier) == (before.line, Decimal("0.5"))
    rollup = old.get_model("logs", "UsageMinute").objects.get(pk=before.rollup)
    assert rollup.group_id == before.line
    channel = old.get_model("relay", "Channel").objects.get(pk=before.channel)
    assert [g.pk for g in channel.groups.all()] == [before.line]
    adjustment = old.get_model("billing", "PriceAdjustment").objects.get(pk=before.adjustment)
    assert (adjustment.group_id, adjustment.field) == (before.line, "group_multiplier")
    role = old.get_model("auth", "Group").objects.get(pk=before.role)
    assert {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.all()} == {
        f"billing.{codename}" for codename in ROLE_PERMISSIONS
    }
    names = old.get_model("auth", "Permission").objects.filter(
        content_type__app_label="billing", codename__in=ROLE_PERMISSIONS
    )
    assert sorted(names.values_list("name", flat=True)) == [
        "Can change group (line)",
        "Can view group grant",
    ]
