"""Errors of the archive (database and recording files)."""

from __future__ import annotations

from callrec.errors import CallrecError


class ArchiveError(CallrecError):
    http_status = 500
    default_message = "archive error"


class ArchiveUnavailable(ArchiveError):
    http_status = 503
    default_message = "the database is unreachable"


class ArchiveDiskFull(ArchiveError):
    http_status = 507
    default_message = "the archive filesystem is full"


class JournalInUse(ArchiveError):
    """Another process holds the journal folder this service was given."""

    http_status = 409
    default_message = "the journal is in use by another callrec process"


class RecordingNotStored(ArchiveError):
    """The recording source (Asterisk's spool) holds no recording of that name."""

    http_status = 404
    default_message = "no such stored recording"


class CallPurged(ArchiveError):
    """Retention or an erasure deleted the call: a recording of it arriving late goes too."""

    http_status = 410
    default_message = "the call was deleted (retention or erasure)"


class CorruptRecording(ArchiveError):
    http_status = 422
    default_message = "the recording is not a readable WAV file"
