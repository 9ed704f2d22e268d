"""A token's line: the column group_id is line_id, renamed in place."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_group_renamed_line"),
        ("tokens", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="token", old_name="group", new_name="line"),
    ]
