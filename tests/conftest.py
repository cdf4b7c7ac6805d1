import os

from hypothesis import settings

# CI has 2 cores and a time limit: keep property tests small by default.
settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
