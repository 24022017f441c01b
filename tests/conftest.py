"""Settings for every test."""

from hypothesis import settings

# Property tests check behaviour, not speed: on a loaded 2-core machine one example may take
# longer than hypothesis' default 200 ms, which must not fail a run.
settings.register_profile("omnistock", deadline=None)
settings.load_profile("omnistock")
