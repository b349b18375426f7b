"""The security suite runs the real gateway: the e2e fixtures, re-exported unchanged."""

from tests.e2e.conftest import *  # noqa: F403
