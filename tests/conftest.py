"""Test-session settings shared by unit and integration tests."""

from __future__ import annotations

import os

# SLIDESTREAM_TEST_PORT_BASE=N moves the integration stack to ports N..N+4. It is removed from
# the environment here, before anything builds Settings: the strict Settings reject unknown
# SLIDESTREAM_* variables, and this one is the test harness's, not the application's.
TEST_PORT_BASE = os.environ.pop("SLIDESTREAM_TEST_PORT_BASE", None)
