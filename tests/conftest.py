"""Shared pytest configuration: fixture plugins for every test file."""

pytest_plugins = ["tests.influxd", "tests.kubefake.fixtures", "tests.daemon_harness"]
