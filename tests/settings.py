"""The test run's settings: the production settings (console/settings.py), as the environment
makes them, with a secret of this run's own when none is given, since they refuse to run
without one when DEBUG is off. Processes the tests start inherit it."""

import os
import secrets

os.environ.setdefault("SECRET_KEY", f"test-run-{secrets.token_urlsafe(40)}")

from console.settings import *  # noqa: F403
