"""The one exception type that the command line turns into a one-line error."""


class ActpatError(Exception):
    """An error the user can fix (bad config, missing input, unusable model...)."""
