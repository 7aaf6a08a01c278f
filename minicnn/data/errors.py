"""Errors raised by :mod:`minicnn.data`.

Every error is a :class:`DataError`, itself a :class:`ValueError`, so a caller can catch
all data problems with one ``except DataError`` (the command line does, and prints the
message without a traceback). Messages name the file or data set, say what was expected
and what was found.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file or data set is missing, malformed, or not what it claims to be."""


class ChecksumError(DataError):
    """A file's SHA-256 differs from the published one."""


class DatasetNotFoundError(DataError):
    """A data set's files are in none of the places searched and could not be downloaded."""


class UnknownDatasetError(DataError, KeyError):
    """A data-set name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(DataError):
    """Every mirror of a file failed (network error, short read, bad checksum, bad content)."""
