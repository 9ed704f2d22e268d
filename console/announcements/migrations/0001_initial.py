"""Announcements move here from the console app, rows and ids as they are: the table is
renamed, and the content type moves with its permissions (publish_announcement among them),
the staff roles that hold them and the admin history. Reversible: backwards, everything goes
back to the console app."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def move_content_type(from_app, to_app):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.using(schema_editor.connection.alias).filter(
            app_label=from_app, model="announcement"
        ).update(app_label=to_app)

    return move


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("console", "0005_staff_roles"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "console_announcement" RENAME TO "announcements_announcement"',
                    'ALTER TABLE "announcements_announcement" RENAME TO "console_announcement"',
                )
            ],
            state_operations=[
                migrations.CreateModel(
                    name="Announcement",
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
                        ("title", models.CharField(max_length=200)),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("price", "Price adjustment"),
                                    ("maintenance", "Maintenance"),
                                    ("general", "General"),
                                ],
                                default="general",
                                max_length=12,
                            ),
                        ),
                        (
                            "body",
                            models.TextField(
                                help_text="Markdown. Scripts, event handlers and unsafe links are removed."
                            ),
                        ),
                        ("body_html", models.TextField(blank=True, editable=False)),
                        (
                            "pinned",
                            models.BooleanField(default=False, help_text="Shown above the others."),
                        ),
                        (
                            "published_at",
                            models.DateTimeField(
                                blank=True,
                                db_index=True,
                                help_text="Empty while a draft.",
                                null=True,
                            ),
                        ),
                        (
                            "starts_at",
                            models.DateTimeField(
                                blank=True, help_text="Maintenance: from.", null=True
                            ),
                        ),
                        (
                            "ends_at",
                            models.DateTimeField(
                                blank=True, help_text="Maintenance: until.", null=True
                            ),
                        ),
                        (
                            "email_subscribers",
                            models.BooleanField(
                                default=True,
                                help_text="Email the users subscribed to this kind when published.",
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-pinned", "-published_at", "-id"],
                        "permissions": [
                            (
                                "publish_announcement",
                                "Can publish an announcement (emails subscribers)",
                            )
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("starts_at__isnull", True),
                                    ("ends_at__isnull", True),
                                    ("ends_at__gt", models.F("starts_at")),
                                    _connector="OR",
                                ),
                                name="maintenance_ends_after_it_starts",
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(
            move_content_type("console", "announcements"),
            move_content_type("announcements", "console"),
        ),
    ]
