"""The test run's settings: the production settings (console/settings.py), as the environment
makes them, with a secret of this run's own when none is given, since they refuse to run
without one when DEBUG is off; and without the periodic jobs that the embedded default runs in
the web process (a test that wants them turns them on). Processes the tests start inherit both."""

import os
import secrets

os.environ.setdefault("SECRET_KEY", f"test-run-{secrets.token_urlsafe(40)}")
os.environ.setdefault("PERIODIC_JOBS_IN_PROCESS", "0")

from console.settings import *  # noqa: F403
