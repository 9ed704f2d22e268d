"""Gateway processes of their own, for the tests that kill one or run several side by side,
or run the Procfile's own command line.

Each is the project's ASGI application under uvicorn, as `make run` and the Procfile start it,
against the test database (the test must use `transactional_db`, so that what it writes is
visible to them) and Redis, with its output kept in a file the test can read.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings

from tests.conftest import free_port

ROOT = Path(settings.BASE_DIR)


def database_url():
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def database_environment():
    """The test database, for a process of its own: PostgreSQL's, or SQLite's file."""
    if settings.IS_POSTGRES:
        return {"DATABASE_URL": database_url()}
    return {"SQLITE_PATH": str(settings.DATABASES["default"]["NAME"])}


def procfile(name):
    """The command line of one of the Procfile's processes."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())[name]


class GatewayProcess:
    """With `procfile`, started by the Procfile's web command line as it is (one worker)."""

    def __init__(self, folder, name="gateway", *, procfile=False, **environment):
        self.folder = Path(folder)
        self.name = name
        self.procfile = procfile
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = self.folder / f"{name}.log"
        self.environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
            **database_environment(),
            "REDIS_URL": settings.REDIS_URL or "",
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "GATEWAY_JOURNAL_DIR": str(settings.GATEWAY_JOURNAL_DIR),
            "LOG_LEVEL": "INFO",
            **{key: str(value) for key, value in environment.items()},
        }
        self.process = None
        self.log_file = None

    def start(self, timeout=30):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_file = self.output.open("ab")
        self.process = subprocess.Popen(
            self._command(),
            cwd=ROOT,
            env=self._environment(),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def _command(self):
        if self.procfile:
            return ["sh", "-c", f"exec {procfile('web')}"]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "console.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--no-proxy-headers",
        ]

    def _environment(self):
        if not self.procfile:
            return self.environment
        return {
            **self.environment,
            # The Procfile says `python`: this run's.
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
        }

    def kill(self):
        """SIGKILL: no shutdown, no last flush, as the OOM killer or a crash would do it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.log_file.close()

    def stop(self, timeout=30):
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = "killed after a timeout"
        self.log_file.close()
        return code

    def log(self):
        return self.output.read_text(errors="replace") if self.output.exists() else ""
