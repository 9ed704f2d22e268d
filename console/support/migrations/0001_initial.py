"""Support tickets move here from the console app, rows and ids as they are: its tables are
renamed, and its content types move with their permissions, the staff roles that hold them
and the admin history. Reversible: backwards, everything goes back to the console app."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

MODELS = ["ticket", "ticketmessage", "ticketattachment"]


def move_content_types(from_app, to_app):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.using(schema_editor.connection.alias).filter(
            app_label=from_app, model__in=MODELS
        ).update(app_label=to_app)

    return move


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("billing", "0001_initial"),
        ("console", "0005_staff_roles"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tokens", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'ALTER TABLE "console_{model}" RENAME TO "support_{model}"',
                    f'ALTER TABLE "support_{model}" RENAME TO "console_{model}"',
                )
                for model in MODELS
            ],
            state_operations=[
                migrations.CreateModel(
                    name="Ticket",
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
                        ("number", models.CharField(max_length=16, unique=True)),
                        ("subject", models.CharField(max_length=200)),
                        (
                            "category",
                            models.CharField(
                                choices=[
                                    ("recharge", "Recharge not credited"),
                                    ("charges", "Abnormal charges"),
                                    ("api_errors", "API errors"),
                                    ("line_access", "Line access (training or enterprise)"),
                                    ("discounts", "Discounts and invoices"),
                                    ("account", "Account"),
                                    ("other", "Other"),
                                ],
                                max_length=12,
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("open", "Open"),
                                    ("waiting_staff", "Waiting for staff"),
                                    ("waiting_user", "Waiting for you"),
                                    ("resolved", "Resolved"),
                                    ("closed", "Closed"),
                                ],
                                default="open",
                                max_length=14,
                            ),
                        ),
                        (
                            "request_id",
                            models.UUIDField(
                                blank=True, help_text="A request log id, if any.", null=True
                            ),
                        ),
                        (
                            "details",
                            models.JSONField(
                                blank=True, default=dict, help_text="What the form asked."
                            ),
                        ),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "waiting_since",
                            models.DateTimeField(
                                blank=True,
                                help_text="When the user last wrote and staff have not answered.",
                                null=True,
                            ),
                        ),
                        ("closed_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "assigned_to",
                            models.ForeignKey(
                                blank=True,
                                limit_choices_to={"is_staff": True},
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "order",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="tickets",
                                to="billing.rechargeorder",
                            ),
                        ),
                        (
                            "token",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="tickets",
                                to="tokens.token",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="tickets",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-updated_at", "-id"],
                        "indexes": [
                            models.Index(fields=["user", "-updated_at"], name="ticket_user_recent"),
                            models.Index(fields=["status", "waiting_since"], name="ticket_waiting"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="TicketMessage",
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
                        ("from_staff", models.BooleanField(default=False)),
                        (
                            "internal",
                            models.BooleanField(
                                default=False, help_text="A staff note the user never sees."
                            ),
                        ),
                        ("body", models.TextField()),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "author",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "ticket",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="messages",
                                to="support.ticket",
                            ),
                        ),
                    ],
                    options={"ordering": ["created_at", "id"]},
                ),
                migrations.CreateModel(
                    name="TicketAttachment",
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
                        ("file", models.FileField(upload_to="ticket-attachments/")),
                        ("original_name", models.CharField(max_length=200)),
                        ("content_type", models.CharField(max_length=50)),
                        ("size", models.PositiveIntegerField()),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "message",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="attachments",
                                to="support.ticketmessage",
                            ),
                        ),
                    ],
                ),
            ],
        ),
        migrations.RunPython(
            move_content_types("console", "support"), move_content_types("support", "console")
        ),
    ]
