import os

from hypothesis import settings

# CI has 2 cores and a time limit: keep property tests small by default, and the
# same on every run (derandomized) so that main stays green; the thorough profile
# (HYPOTHESIS_PROFILE=thorough) searches anew each time.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
