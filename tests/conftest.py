"""Shared pytest configuration: fixture plugins for every test file."""

from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = ["tests.influxd", "tests.kubefake.fixtures", "tests.daemon_harness"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the logging set-up of in-process `main()` calls: it binds structlog to
    the test's captured stderr, which is closed once the test ends."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)
