"""How the project's Hypothesis tests run: the same examples in CI as on a laptop, nothing kept."""

import os
import tempfile

from hypothesis import HealthCheck, settings

# No example database (database=None below), and Hypothesis's other cache (constants it reads
# from the source files) goes to the temporary directory, not into the repository.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "switchboard-hypothesis")
)


def fuzz_settings(examples, *also_suppress):
    """Derandomized settings for `examples` examples, with no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            *also_suppress,
        ],
    )
