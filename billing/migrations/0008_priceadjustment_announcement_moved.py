"""Announcements moved from the console app to their own (console/announcements): the
foreign key now names announcements.Announcement. State only: the table it points to was
renamed, and the database's constraint follows a renamed table by itself."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("announcements", "0001_initial"),
        ("billing", "0007_staff_permissions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="priceadjustment",
                    name="announcement",
                    field=models.ForeignKey(
                        blank=True,
                        help_text="Where it was published.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="price_adjustments",
                        to="announcements.announcement",
                    ),
                ),
            ]
        ),
    ]
