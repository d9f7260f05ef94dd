"""Shared fixtures and hypothesis profiles.

``HYPOTHESIS_PROFILE=thorough`` (``make test-thorough``) runs many more examples; the
default ``ci`` profile keeps ``make test`` quick and derandomized, so that a clean clone
and CI draw the same examples every time (a failure is then a real regression, never
an unlucky draw); the ``thorough`` profile draws fresh random examples.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
