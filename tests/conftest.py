"""Shared fixtures and hypothesis profiles.

``HYPOTHESIS_PROFILE=thorough`` (``make test-thorough``) runs many more examples; the
default ``ci`` profile keeps ``make test`` quick.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
