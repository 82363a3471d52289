"""The one exception type for errors a user can cause."""


class RaysweepError(Exception):
    """A user-caused error: bad configuration, a missing file or folder, missing weights,
    an impossible resource request.

    The message is one line that names the offending field (as a dotted key) or file and says
    how to fix it. The CLI prints it without a traceback and exits with status 2.
    """
