from django.db import migrations, models


class Migration(migrations.Migration):
    """The log keeps the channel's id as a plain number: the same column, no relation to the
    gateway's app (there never was a database constraint on it)."""

    dependencies = [("logs", "0005_staff_permissions")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="requestlog", name="channel"),
                migrations.AddField(
                    model_name="requestlog",
                    name="channel_id",
                    field=models.BigIntegerField(blank=True, null=True),
                ),
            ],
            database_operations=[],
        )
    ]
