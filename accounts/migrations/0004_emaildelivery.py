"""Email deliveries move here from the console app, rows and ids as they are: the table is
renamed, and the content type moves with its permissions, the staff roles that hold them and
the admin history. Reversible: backwards, everything goes back to the console app."""

import django.utils.timezone
from django.db import migrations, models


def move_content_type(from_app, to_app):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.using(schema_editor.connection.alias).filter(
            app_label=from_app, model="emaildelivery"
        ).update(app_label=to_app)

    return move


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_last_login_ip"),
        ("console", "0005_staff_roles"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "console_emaildelivery" RENAME TO "accounts_emaildelivery"',
                    'ALTER TABLE "accounts_emaildelivery" RENAME TO "console_emaildelivery"',
                )
            ],
            state_operations=[
                migrations.CreateModel(
                    name="EmailDelivery",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("key", models.CharField(max_length=200)),
                        ("recipient", models.EmailField(max_length=254)),
                        ("template", models.CharField(max_length=100)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("sending", "Sending"),
                                    ("sent", "Sent"),
                                    ("failed", "Failed"),
                                    ("skipped", "Skipped (unsubscribed)"),
                                ],
                                default="pending",
                                max_length=10,
                            ),
                        ),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        ("last_error", models.CharField(blank=True, max_length=500)),
                        ("claimed_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "claimed_by",
                            models.CharField(
                                blank=True,
                                help_text="The task sending it, to resume after a crash.",
                                max_length=100,
                            ),
                        ),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={
                        "verbose_name_plural": "email deliveries",
                        "indexes": [
                            models.Index(
                                fields=["status", "created_at"], name="delivery_status_age"
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("key", "recipient"), name="one_delivery_per_recipient"
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(
            move_content_type("console", "accounts"), move_content_type("accounts", "console")
        ),
    ]
