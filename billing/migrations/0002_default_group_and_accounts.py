from decimal import Decimal

from django.db import migrations


def forwards(apps, schema_editor):
    Group = apps.get_model("billing", "Group")
    Account = apps.get_model("billing", "Account")
    User = apps.get_model("accounts", "User")
    Group.objects.get_or_create(
        name="default",
        defaults={"description": "Open to everyone.", "multiplier": Decimal(1), "position": 0},
    )
    for user_id in User.objects.values_list("pk", flat=True):
        Account.objects.get_or_create(user_id=user_id)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("accounts", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
