"""Lines have one name: the model Group is Line, GroupGrant is LineGrant, their fields and
constraints say line, and so does the price adjustment of a line's multiplier.

Renames only, rows and ids as they are: on PostgreSQL tables, columns and constraints are
renamed in place (the join table of Channel.lines included: its line column is renamed here,
the table itself by the relay app's migration). Django drops and re-adds the foreign keys
that point at a renamed table or column (tokens, grants, price adjustments, the join table:
small tables, re-checked each time; the request log has no database foreign key). The stored field
value "group_multiplier" of price adjustments becomes "line_multiplier". The permissions
follow in 0011.
"""

from decimal import Decimal

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from console.lib.migrations import RenameConstrainedField

FIELD_VALUES = {"group_multiplier": "line_multiplier"}


def rename_field_values(renames):
    def rename(apps, schema_editor):
        PriceAdjustment = apps.get_model("billing", "PriceAdjustment")
        rows = PriceAdjustment.objects.using(schema_editor.connection.alias)
        for old, new in renames.items():
            rows.filter(field=old).update(field=new)

    return rename


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_token_quota_and_refund_steps"),
        # The staff roles name the permissions of billing.Group: on a fresh database they are
        # made before the rename (and with them every migration that names billing.group).
        ("console", "0005_staff_roles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameModel(old_name="Group", new_name="Line"),
        migrations.AlterModelOptions(name="line", options={"ordering": ["position", "name"]}),
        migrations.AlterField(
            model_name="line",
            name="multiplier",
            field=models.DecimalField(
                decimal_places=6,
                default=Decimal("1"),
                help_text="Line multiplier: every price on this line is multiplied by it.",
                max_digits=12,
                validators=[django.core.validators.MinValueValidator(Decimal("0"))],
            ),
        ),
        migrations.RenameModel(old_name="GroupGrant", new_name="LineGrant"),
        RenameConstrainedField(
            model_name="linegrant",
            old_name="group",
            new_name="line",
            constraints={
                "one_grant_per_user_and_group": models.UniqueConstraint(
                    fields=("line", "user"), name="one_grant_per_user_and_line"
                )
            },
        ),
        migrations.AlterField(
            model_name="linegrant",
            name="user",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="line_grants",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        RenameConstrainedField(
            model_name="priceadjustment",
            old_name="group",
            new_name="line",
            constraints={
                "adjustment_targets_a_model_or_a_group": models.CheckConstraint(
                    condition=models.Q(
                        models.Q(("model_price__isnull", False), ("line__isnull", True)),
                        models.Q(("model_price__isnull", True), ("line__isnull", False)),
                        _connector="OR",
                    ),
                    name="adjustment_targets_a_model_or_a_line",
                )
            },
        ),
        migrations.AlterField(
            model_name="priceadjustment",
            name="field",
            field=models.CharField(
                choices=[
                    ("model_multiplier", "Model multiplier"),
                    ("completion_multiplier", "Completion multiplier"),
                    ("call_price", "Price per call"),
                    ("line_multiplier", "Line multiplier"),
                ],
                max_length=24,
            ),
        ),
        migrations.RunPython(
            rename_field_values(FIELD_VALUES),
            rename_field_values({new: old for old, new in FIELD_VALUES.items()}),
        ),
    ]
