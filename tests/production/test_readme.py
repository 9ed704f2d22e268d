"""The README's production section says what the smoke test runs, so the two cannot drift."""

from tests.production.test_smoke import ROOT, readme_release_commands


def test_the_readme_shows_the_procfile_verbatim():
    procfile = (ROOT / "Procfile").read_text()
    assert f"```\n{procfile}```" in (ROOT / "README.md").read_text()


def test_the_readme_release_commands_are_the_ones_the_smoke_test_runs():
    assert readme_release_commands() == [
        "python manage.py migrate --noinput",
        "python manage.py collectstatic --noinput",
        "python manage.py check --deploy",
    ]
