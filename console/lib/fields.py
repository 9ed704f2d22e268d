"""Form fields that the apps' forms share."""

from datetime import UTC, datetime

from django import forms

# Nothing the site does happens outside these years. A date outside them is a typing mistake
# (0001-01-01, 9999-12-31), and would overflow the arithmetic that turns it into UTC, a log
# id or an interval.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2099, 12, 31, 23, 59, tzinfo=UTC)


class DateTimeInRangeField(forms.DateTimeField):
    """A date and time in the user's time zone, between EARLIEST and LATEST.

    A form can say what to do instead in its own words:
    `error_messages={"out_of_range": "…"}`.
    """

    default_error_messages = {
        "out_of_range": (
            f"Enter a date between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, "
            "such as 2026-03-31 14:00."
        ),
    }

    def to_python(self, value):
        result = super().to_python(value)
        if result is None:
            return None
        try:
            in_range = EARLIEST <= result.astimezone(UTC) <= LATEST
        except OverflowError:  # 9999-12-31 in a zone behind UTC, 0001-01-01 in one ahead
            in_range = False
        if not in_range:
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range")
        return result
