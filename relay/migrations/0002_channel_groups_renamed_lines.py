"""A channel's lines: the join table relay_channel_groups is relay_channel_lines, renamed in
place (its line column was renamed with the model, in billing's 0010)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_group_renamed_line"),
        ("relay", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="channel", old_name="groups", new_name="lines"),
    ]
