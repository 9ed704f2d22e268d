"""Staff roles as groups: Support, Finance and Operations (see "Staff roles" in README.md).

Permissions are normally created after `migrate` (post_migrate), so this migration creates
them first. Running it again adds nothing twice, and leaves permissions staff gave since."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "Support": [
        "accounts.view_user",
        "account.view_emailaddress",
        "billing.view_account",
        "billing.view_ledgerentry",
        "billing.view_rechargeorder",
        "billing.view_orderaction",
        "billing.view_paymentevent",
        "billing.view_group",
        "billing.view_groupgrant",
        "billing.view_modelprice",
        "tokens.view_token",
        "logs.view_requestlog",
        "console.view_ticket",
        "console.change_ticket",
        "console.view_announcement",
    ],
    "Finance": [
        "accounts.view_user",
        "billing.view_account",
        "billing.adjust_balance",
        "billing.view_ledgerentry",
        "billing.view_rechargeorder",
        "billing.credit_order",
        "billing.refund_order",
        "billing.fail_order",
        "billing.export_orders",
        "billing.view_orderaction",
        "billing.view_paymentevent",
        "billing.view_redemptionbatch",
        "billing.issue_codes",
        "billing.void_codes",
        "billing.view_bonustier",
        "billing.view_unsettledusage",
        "console.view_ticket",
    ],
    "Operations": [
        "relay.view_channel",
        "relay.add_channel",
        "relay.change_channel",
        "billing.view_modelprice",
        "billing.add_modelprice",
        "billing.change_modelprice",
        "billing.view_group",
        "billing.add_group",
        "billing.change_group",
        "billing.view_groupgrant",
        "billing.add_groupgrant",
        "billing.change_groupgrant",
        "billing.delete_groupgrant",
        "billing.set_prices",
        "billing.view_priceadjustment",
        "billing.publish_prices",
        "billing.view_unsettledusage",
        "console.view_announcement",
        "console.add_announcement",
        "console.change_announcement",
        "console.publish_announcement",
        "console.view_emaildelivery",
        "logs.view_requestlog",
        "logs.view_platform",
    ],
}


def create_roles(apps, schema_editor):
    using = schema_editor.connection.alias
    for app_config in apps.get_app_configs():
        # Migration state has no models module; create_permissions skips an app without one.
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                Permission.objects.using(using).get(
                    content_type__app_label=app_label, codename=codename
                )
            )


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("account", "0009_emailaddress_unique_primary_email"),
        ("accounts", "0003_last_login_ip"),
        ("billing", "0007_staff_permissions"),
        ("console", "0004_staff_permissions"),
        ("logs", "0005_staff_permissions"),
        ("relay", "0001_initial"),
        ("tokens", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
