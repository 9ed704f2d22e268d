"""The read replica (DATABASE_REPLICA_URL): the console's pages that only show read request logs
and usage rollups from it; writes, other apps, POSTs and everything outside a page (the
gateway, the journal replay, tasks) read and write the primary.

The test suite runs without DATABASE_REPLICA_URL. The test on two PostgreSQL databases makes
its replica itself: a copy of the test database (CREATE DATABASE … TEMPLATE), as a standby
holds the primary's schema and rows, registered as the "replica" alias that the setting adds;
rows are then put in one copy or the other to see which one a page reads."""

import asyncio
import os
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connections, router
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from console.lib.routers import REPLICA, replica_reads
from logs.models import RequestLog, UsageDay
from logs.writer import RECORD_FIELDS, write_batch
from tests.logs.test_pages import make_record
from tokens.models import Token

ROUTER = "console.lib.routers.ReplicaRouter"


@pytest.fixture
def routed(settings):
    settings.DATABASE_ROUTERS = [ROUTER]


def databases_read(request):
    """A page that says where its reads of a log, a rollup and a token would go."""
    models = (RequestLog, UsageDay, Token)
    return HttpResponse(" ".join(model.objects.all().db for model in models))


def test_a_page_that_shows_reads_logs_and_rollups_from_the_replica(routed):
    page = replica_reads(databases_read)
    assert page(RequestFactory().get("/")).content == b"replica replica default"
    assert page(RequestFactory().head("/")).content == b"replica replica default"


def test_an_async_page_that_shows_reads_them_from_the_replica_too(routed):
    async def view(request):
        return databases_read(request)

    response = asyncio.run(replica_reads(view)(RequestFactory().get("/")))
    assert response.content == b"replica replica default"


def test_a_post_and_code_outside_pages_read_the_primary(routed):
    page = replica_reads(databases_read)
    assert page(RequestFactory().post("/")).content == b"default default default"
    assert page(RequestFactory().get("/")).content == b"replica replica default"
    # After a page, and outside any (the gateway, the journal replay, tasks): the primary.
    assert RequestLog.objects.all().db == "default"


def test_writes_and_migrations_go_to_the_primary(routed):
    def writes(request):
        return HttpResponse(router.db_for_write(RequestLog))

    assert replica_reads(writes)(RequestFactory().get("/")).content == b"default"
    assert router.allow_migrate("default", "logs")
    assert not router.allow_migrate(REPLICA, "logs")


def settings_with(**environment):
    """The database aliases and routers that console.settings makes from `environment`."""
    code = (
        "from django.conf import settings; "
        "print(sorted(settings.DATABASES), settings.DATABASE_ROUTERS, "
        "settings.DATABASES.get('replica', {}).get('NAME'))"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "DATABASE_REPLICA_URL"}
    }
    env.update(DJANGO_SETTINGS_MODULE="console.settings", SECRET_KEY="s" * 50, **environment)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_a_replica_url_adds_the_replica_and_its_router():
    assert settings_with(
        DATABASE_URL="postgres://app@primary.internal:5432/switchboard",
        DATABASE_REPLICA_URL="postgres://app@standby.internal:5432/switchboard_standby",
    ) == (f"['default', 'replica'] ['{ROUTER}'] switchboard_standby")


def test_without_a_replica_url_nothing_changes():
    assert settings_with() == "['default'] [] None"


@pytest.fixture(scope="module")
def replica_database(django_db_setup, django_db_blocker):
    """A copy of the test database, registered as the "replica" alias; dropped afterwards."""
    primary = connections["default"].settings_dict
    name = f"{primary['NAME']}_replica"
    server = {
        "host": primary["HOST"],
        "port": primary["PORT"] or None,
        "user": primary["USER"],
        "password": primary["PASSWORD"],
        "dbname": "postgres",
    }
    with django_db_blocker.unblock():
        connections.close_all()  # a template database must have no one connected
        with psycopg.connect(**server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{primary["NAME"]}"')
    connections.settings[REPLICA] = {**primary, "NAME": name, "CONN_MAX_AGE": 0}
    yield name
    connections[REPLICA].close()
    del connections[REPLICA]
    del connections.settings[REPLICA]
    with psycopg.connect(**server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", REPLICA])
def test_the_console_shows_what_the_replica_has_and_the_gateway_writes_the_primary(
    replica_database, routed, alice, alice_client
):
    on_primary = make_record(alice, model="model-on-the-primary")
    write_batch([on_primary])  # the gateway's writer: rows and rollups
    on_replica = make_record(alice, model="model-on-the-replica")
    row = RequestLog(**{name: getattr(on_replica, name) for name in RECORD_FIELDS})
    RequestLog.objects.using(REPLICA).bulk_create([row])
    UsageDay.objects.using(REPLICA).create(
        bucket=timezone.now().date(), user_id=alice.pk, model="model-on-the-replica", ok=True
    )
    assert RequestLog.objects.using("default").filter(pk=on_primary.id).exists()
    assert not RequestLog.objects.using(REPLICA).filter(pk=on_primary.id).exists()

    log_page = alice_client.get(reverse("logs:list"), {"period": "24h"}).content.decode()
    assert str(on_replica.id) in log_page
    assert str(on_primary.id) not in log_page
    breakdown = "logs:breakdown"
    assert alice_client.get(reverse(breakdown, args=[on_replica.id])).status_code == 200
    assert alice_client.get(reverse(breakdown, args=[on_primary.id])).status_code == 404
    dashboard = alice_client.get(reverse("console:dashboard")).content.decode()
    assert "model-on-the-replica" in dashboard
    assert "model-on-the-primary" not in dashboard

    # Outside a page, as the gateway, the journal replay and the tasks read: the primary.
    assert RequestLog.objects.filter(pk=on_primary.id).exists()
    assert not RequestLog.objects.filter(pk=on_replica.id).exists()
