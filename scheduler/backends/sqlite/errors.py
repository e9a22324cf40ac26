"""SQLite and OS errors as Baton's: transient (:class:`~scheduler.errors.BackendUnavailable`)
when retrying may help (a lock held too long, an I/O error, a full disk), permanent when it
cannot (read-only, not a database, corrupt, a path that cannot be a file)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from scheduler.errors import (
    BackendError,
    BackendPermanentError,
    BackendReadOnlyError,
    BackendSchemaError,
    BackendUnavailable,
)

# OS errors of a path that will not take writes, and of a path that cannot be a database.
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_PATH_ERRNOS = frozenset(
    {errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG, errno.EEXIST}
)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock we need."""
    code = getattr(exc, "sqlite_errorname", "")
    return code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def sqlite_error(
    exc: sqlite3.Error, url: str, path: Path, op_timeout: float, prefix: str = ""
) -> BackendError:
    """``exc`` as the error to raise: read-only, not a (usable) database and corruption
    are permanent; a lock held too long, I/O errors and a full disk are transient."""
    message = prefix + _describe(exc, path, op_timeout)
    code = getattr(exc, "sqlite_errorname", "")
    if code.startswith("SQLITE_READONLY") and code != "SQLITE_READONLY_RECOVERY":
        return BackendReadOnlyError(url, message)
    if code.startswith("SQLITE_NOTADB"):
        return BackendSchemaError(url, message)
    if code.startswith("SQLITE_CORRUPT"):
        return BackendPermanentError(url, message)
    return BackendUnavailable(url, message)


def open_failure(
    exc: sqlite3.Error, url: str, path: Path, create: bool, op_timeout: float
) -> BackendError:
    """Why the file could not be opened, with the OS's reason when there is one, as the
    error to raise: permanent when the file or directory cannot be written or is no
    file (see :func:`os_error`), transient otherwise."""
    # SQLite says only "unable to open database file"; asking the OS names the cause.
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
        os.close(fd)
    except OSError as os_exc:
        return os_error(os_exc, url, f"cannot open database {path}: {os_reason(os_exc)}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return BackendReadOnlyError(
            url,
            f"cannot open database {path}: directory {path.parent} is not "
            "writable (WAL mode creates -wal and -shm files beside the database)",
        )
    return sqlite_error(exc, url, path, op_timeout, f"cannot open database {path}: ")


def os_error(exc: OSError, url: str, message: str) -> BackendError:
    """The error for an OS refusal: permanent when retrying cannot help (permissions, a
    read-only file system, a path that cannot be a file), transient otherwise (an I/O error,
    a full disk, too many open files)."""
    if exc.errno in _READ_ONLY_ERRNOS:
        return BackendReadOnlyError(url, message)
    if exc.errno in _PATH_ERRNOS:
        return BackendPermanentError(url, message)
    return BackendUnavailable(url, message)


def os_reason(exc: OSError) -> str:
    """The OS's words for ``exc`` ("Permission denied", "Not a directory", ...)."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno) or errno.errorcode.get(exc.errno, str(exc))
    return str(exc)


def _describe(exc: sqlite3.Error, path: Path, op_timeout: float) -> str:
    """A one-line explanation of a SQLite error, naming the usual causes."""
    code = getattr(exc, "sqlite_errorname", "")
    text = str(exc) or type(exc).__name__
    if is_busy(exc):
        return (
            f"database {path} stayed locked by another connection for more than "
            f"op_timeout ({op_timeout:g}s)"
        )
    if code.startswith("SQLITE_READONLY"):
        return f"database {path} is read-only: {text}"
    if code.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN")):
        return f"I/O error on database {path}: {text}"
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return f"{path} is not a usable Baton database: {text}"
    return f"database {path}: {text}"


__all__ = ["is_busy", "open_failure", "os_error", "os_reason", "sqlite_error"]
