"""Database refusals on demand, for the tests of what the gateway does when PostgreSQL refuses
part of a flush: triggers that raise, and their removal."""

from django.db import connection

REFUSE_ROWS_OF = """
CREATE FUNCTION refuse_rows_of_one_user() RETURNS trigger AS $$
BEGIN
    IF NEW.user_id = {user_id} THEN
        RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_rows_of_one_user BEFORE INSERT ON logs_requestlog
    FOR EACH ROW EXECUTE FUNCTION refuse_rows_of_one_user();
"""
REFUSE_HOLD_REFRESH = """
CREATE FUNCTION refuse_hold_refresh() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'refused for the test';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_hold_refresh BEFORE UPDATE OF expires_at ON billing_hold
    FOR EACH ROW EXECUTE FUNCTION refuse_hold_refresh();
"""
ALLOW_AGAIN = """
DROP TRIGGER IF EXISTS refuse_rows_of_one_user ON logs_requestlog;
DROP FUNCTION IF EXISTS refuse_rows_of_one_user();
DROP TRIGGER IF EXISTS refuse_hold_refresh ON billing_hold;
DROP FUNCTION IF EXISTS refuse_hold_refresh();
"""


def _sql(statement):
    with connection.cursor() as cursor:
        cursor.execute(statement)


class Refusals:
    def rows_of(self, user):
        """Every log row of `user` is refused (a CHECK violation), those of others are not."""
        _sql(REFUSE_ROWS_OF.format(user_id=int(user.pk)))

    def hold_refresh(self):
        """Keeping holds alive (their expiry moved on) fails."""
        _sql(REFUSE_HOLD_REFRESH)

    def none(self):
        _sql(ALLOW_AGAIN)
