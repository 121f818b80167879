"""The errors a file load raises: a file that cannot be read as events, or that is mostly rejects."""

from __future__ import annotations


class EventsFileError(ValueError):
    """An events file is missing, of an unsupported type, malformed, or lacks mapped columns."""


class MostlyRejectedError(EventsFileError):
    """Most rows of a file were rejected: a wrong mapping or file, refused as a whole.

    ``counts``: rejects by reason (exact duplicates excluded); ``n_read``: rows read.
    """

    def __init__(self, message: str, counts: dict[str, int], n_read: int) -> None:
        super().__init__(message)
        self.counts, self.n_read = counts, n_read
