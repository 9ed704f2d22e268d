"""The line of a request log row and of the rollups: group_id is line_id, group_multiplier is
line_multiplier. Column renames in place: the log table is large, and nothing in it is
rewritten. The rollups' unique keys follow their column (their names do not change)."""

from django.db import migrations, models

from console.lib.migrations import RenameConstrainedField

KEY = ("bucket", "user_id", "token_id", "line_id", "model", "ok")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_group_renamed_line"),
        ("logs", "0006_channel_id_without_relation"),
    ]

    operations = [
        migrations.RenameField(model_name="requestlog", old_name="group", new_name="line"),
        migrations.RenameField(
            model_name="requestlog", old_name="group_multiplier", new_name="line_multiplier"
        ),
        *[
            RenameConstrainedField(
                model_name=f"usage{period}",
                old_name="group_id",
                new_name="line_id",
                constraints={
                    f"usage_{period}_key": models.UniqueConstraint(
                        fields=KEY, name=f"usage_{period}_key"
                    )
                },
            )
            for period in ("minute", "hour", "day")
        ],
    ]
