"""The permissions of lines and line grants say line: view_group is view_line, "Can view group
(line)" is "Can view line", and so on. Renamed in place, so the staff roles and users that hold
them keep them, and post_migrate does not make a second set under the new names. Reversible.

`migrate` renames the content types with their models (contenttypes' RenameContentType); a
runner that does not (MigrationExecutor alone, as the tests use it) has it done here. Where a
permission of the new name exists already, made after a partial migration, the holders of the
old one move to it and the old one goes.
"""

from django.db import migrations

# (model, verbose name) before → after: a permission is named "Can <action> <verbose name>".
RENAMED = [
    (("group", "group (line)"), ("line", "line")),
    (("groupgrant", "group grant"), ("linegrant", "line grant")),
]
ACTIONS = ("add", "change", "delete", "view")


def rename_permissions(renamed):
    def rename(apps, schema_editor):
        db = schema_editor.connection.alias
        content_types = apps.get_model("contenttypes", "ContentType").objects.db_manager(db)
        permissions = apps.get_model("auth", "Permission").objects.db_manager(db)
        for (old_model, _old_verbose), (new_model, new_verbose) in renamed:
            old_type = content_types.filter(app_label="billing", model=old_model).first()
            new_type = content_types.filter(app_label="billing", model=new_model).first()
            if new_type is None:
                if old_type is None:
                    continue  # a fresh database: post_migrate makes them under the new names
                old_type.model = new_model
                old_type.save(update_fields=["model"])
                old_type, new_type = None, old_type
            for action in ACTIONS:
                found = permissions.filter(
                    content_type=new_type, codename=f"{action}_{new_model}"
                ).first()
                for permission in permissions.filter(
                    content_type__in=[t for t in (old_type, new_type) if t is not None],
                    codename=f"{action}_{old_model}",
                ):
                    if found is None:
                        permission.content_type = new_type
                        permission.codename = f"{action}_{new_model}"
                        permission.name = f"Can {action} {new_verbose}"
                        permission.save()
                        found = permission
                    else:
                        found.group_set.add(*permission.group_set.all())
                        found.user_set.add(*permission.user_set.all())
                        permission.delete()
        content_types.clear_cache()

    return rename


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("billing", "0010_group_renamed_line"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(
            rename_permissions(RENAMED),
            rename_permissions([(new, old) for old, new in RENAMED]),
        ),
    ]
