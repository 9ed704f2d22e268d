"""Migration operations that Django lacks."""

from django.db import migrations


class RenameConstrainedField(migrations.RenameField):
    """RenameField for a field that named constraints of its model list: they follow it.

    Django's RenameField renames the column but leaves the constraints of the migration state
    naming the old field, so that the next table remake (SQLite) or autodetector run fails.
    `constraints` maps the name of each such constraint to the constraint as it reads after the
    rename: its fields renamed, and its own name too where it said the old one.

    In the database the column is renamed as RenameField does it, and a constraint follows its
    column by itself; a renamed constraint is renamed in place on PostgreSQL (a catalog change,
    nothing rebuilt). SQLite cannot rename one: it gets the new name when its table is remade,
    which SQLite does anyway for a renamed foreign key, and otherwise here.
    """

    def __init__(self, model_name, old_name, new_name, constraints):
        super().__init__(model_name, old_name, new_name)
        self.constraints = constraints

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        return name, args, {**kwargs, "constraints": self.constraints}

    def state_forwards(self, app_label, state):
        super().state_forwards(app_label, state)
        for old_name, constraint in self.constraints.items():
            state.remove_constraint(app_label, self.model_name_lower, old_name)
            state.add_constraint(app_label, self.model_name_lower, constraint)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._rename_column(
            app_label, schema_editor, from_state, to_state, self.old_name, self.new_name
        )
        renames = [(old, new.name) for old, new in self.constraints.items()]
        self._rename_constraints(app_label, schema_editor, to_state, renames)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        renames = [(new.name, old) for old, new in self.constraints.items()]
        if schema_editor.connection.vendor == "postgresql":
            self._rename_constraints(app_label, schema_editor, to_state, renames)
        self._rename_column(
            app_label, schema_editor, from_state, to_state, self.new_name, self.old_name
        )
        if schema_editor.connection.vendor != "postgresql":
            self._rename_constraints(app_label, schema_editor, to_state, renames)

    def _rename_column(self, app_label, schema_editor, from_state, to_state, old_name, new_name):
        """RenameField's alter_field, but on the model as it is after (RenameField gives the one
        before): a table that SQLite remakes takes its constraints from it, and they must name
        the field as it is then."""
        to_model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, to_model):
            from_model = from_state.apps.get_model(app_label, self.model_name)
            schema_editor.alter_field(
                to_model,
                from_model._meta.get_field(old_name),
                to_model._meta.get_field(new_name),
            )

    def _rename_constraints(self, app_label, schema_editor, state, renames):
        """Gives the constraints of the model in `state` their names there, from `renames`'
        old names."""
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        connection, table = schema_editor.connection, model._meta.db_table
        for old, new in renames:
            if old == new:
                continue
            if connection.vendor == "postgresql":
                quote = schema_editor.quote_name
                schema_editor.execute(
                    f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"
                )
                continue
            with connection.cursor() as cursor:
                present = connection.introspection.get_constraints(cursor, table)
            if old in present:
                # SQLite remakes the table for any change of a constraint, with its new name.
                constraint = next(c for c in model._meta.constraints if c.name == new)
                schema_editor.add_constraint(model, constraint)

    def reduce(self, operation, app_label):
        # Never merged into another operation, which would forget the constraints.
        return False
