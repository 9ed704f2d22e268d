"""The request log loses its index on the time, which no page reads (a time range is an id
range) and every insert paid for.

On PostgreSQL the IP-per-day, platform and channel totals keep room on each page (fillfactor),
so that the writer's adding to a row is an update in place (HOT), with no new index entries:
none of their indexes holds a total. The usage rollups cannot: their covering indexes hold the
totals that pages read from them. Only pages written from now on keep the room; both steps
are quick."""

from django.db import migrations

UPDATED_IN_PLACE = ["logs_ipday", "logs_platformminute", "logs_channelminute"]
FILLFACTOR = 70


def _set_fillfactor(schema_editor, setting):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in UPDATED_IN_PLACE:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} {setting}")


def keep_room(apps, schema_editor):
    _set_fillfactor(schema_editor, f"SET (fillfactor = {FILLFACTOR})")


def fill_pages(apps, schema_editor):
    _set_fillfactor(schema_editor, "RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("logs", "0011_rollup_indexes_cover_every_page_read"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="requestlog",
            name="log_time",
        ),
        migrations.RunPython(keep_room, fill_pages, elidable=False),
    ]
