"""The one way the harness writes an output file: whole or not at all.

Every report, page, plot, merged summary, mutants table and repro bundle goes through
:func:`replacing` (or its shorthands :func:`data`, :func:`text`, :func:`json_file`): the content
is written to a temporary file in the target's own directory, flushed and fsync'ed, given the
mode a new file would get (or the old file's), and renamed over the target with ``os.replace``,
which is atomic on POSIX within a file system. A reader (``report --merge`` over a directory a
cell is still writing, a CI step, a person) therefore sees the previous file or the new one,
never a part. The directory is not fsync'ed after the rename: after a power loss the old
version may be back, but whole (what the guarantee is about), at half the cost of each write.

- A write that fails (ENOSPC, EACCES, EROFS, …) removes its temporary file, leaves the previous
  file as it was and raises :class:`WriteFailed`: one line naming the path and the OS error,
  which the command line prints as bad input (exit 2) after the verdict. Any other exception
  while the content is produced (a harness bug: exit 3) removes the temporary file too.
- Ctrl-C, SIGTERM or SIGHUP (a KeyboardInterrupt, harness.cli.signals) between the write and the
  rename also removes it. Only a process killed outright (SIGKILL, a second signal, power loss)
  can leave one behind: it is hidden (a dot name) and ends in ``.partial``, so no ``*.json`` glob
  reads it, and the next write into that directory removes the temporaries of writers that are
  no longer alive (:func:`sweep`; process ids of this machine).
- The bytes go out through ``os.write``, so a test can make the disk "full" by patching it.
- A symbolic link keeps pointing where it did: its target is replaced. A target that is not a
  regular file (``--json /dev/stdout``, a pipe) is written straight into, as a stream: there is
  no file to replace, and a device is never replaced by a file.

:func:`locked` serializes writers of shared files of one directory (the merged page of two
``check --shard`` processes sharing ``--out``); :func:`append_text` is the one exception to
replacing (a job summary such as ``$GITHUB_STEP_SUMMARY`` is appended to, in one ``write``).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from harness.core.errors import SpecError

SUFFIX = ".partial"  # a temporary file's ending: never *.json, *.xml, *.png
_TEMP = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+" + re.escape(SUFFIX) + "$")  # .NAME.PID.RANDOM.partial


class WriteFailed(SpecError):
    """An output file could not be written (the disk is full, the directory is read-only, …);
    the previous file at that path, if any, is intact and no temporary file is left."""

    def __init__(self, path: Path, error: OSError):
        self.path, self.error = Path(path), error
        why = f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error) or type(error).__name__
        super().__init__(f"cannot write {str(path)!r}: {why}; any previous file there is left as it was "
                         f"and no part of the new one: free space or choose a path you can write to")


class _Sink(io.RawIOBase):
    """A file descriptor written with ``os.write`` (seekable, for zip archives)."""

    def __init__(self, fd: int):
        self.fd = fd
        try:
            os.lseek(fd, 0, os.SEEK_CUR)
            self._seekable = True
        except OSError:  # a pipe, a terminal
            self._seekable = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def write(self, b) -> int:
        return os.write(self.fd, b)

    def seek(self, pos: int, whence: int = 0) -> int:
        return os.lseek(self.fd, pos, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self.fd)
            finally:
                super().close()


@cache
def _new_file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def sweep(directory: Path) -> list[Path]:
    """Remove the temporary files that writers killed outright left in ``directory`` (those
    whose process is gone); returns them."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                (Path(directory) / name).unlink()
                removed.append(Path(directory) / name)
            except OSError:
                pass
    return removed


@contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; on leaving the block it replaces
    ``path`` whole (module docstring). Its directories are created."""
    path = Path(path)
    try:
        kind = os.stat(path).st_mode
    except OSError:
        kind = None
    if kind is not None and not stat.S_ISREG(kind):
        with _streamed(path) as f:
            yield f
        return
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        sweep(directory)
        mode = path.stat().st_mode & 0o7777 if path.exists() else _new_file_mode()
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.{os.getpid()}.", suffix=SUFFIX)
    except OSError as e:
        raise WriteFailed(path, e) from None
    tmp = Path(name)
    try:
        with io.BufferedWriter(_Sink(fd), buffer_size=1 << 16) as f:
            yield f
            f.flush()
            os.fsync(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteFailed(path, e) from None
        raise


@contextmanager
def _streamed(path: Path) -> Iterator[BinaryIO]:
    """A device or a pipe, written into (nothing to replace)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise WriteFailed(path, e) from None
    try:
        with io.BufferedWriter(_Sink(fd)) as f:
            yield f
    except OSError as e:
        raise WriteFailed(path, e) from None


def data(path: str | Path, content: bytes) -> Path:
    with replacing(path) as f:
        f.write(content)
    return Path(path)


def text(path: str | Path, content: str) -> Path:
    return data(path, content.encode("utf-8"))


def json_file(path: str | Path, doc: Any, allow_nan: bool = True) -> Path:
    """``doc`` as the harness writes JSON: indented by one, a final newline."""
    return text(path, json.dumps(doc, indent=1, allow_nan=allow_nan) + "\n")


def append_text(path: str | Path, content: str) -> None:
    """Append ``content`` in one ``write`` (a job summary: what was there is never touched)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(content.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteFailed(path, e) from None


@contextmanager
def locked(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (a hidden lock file in it; ``flock``, released
    when the process ends, however it ends) while the block runs: writers of the same shared
    files there take turns, the last sees everything the others wrote."""
    import fcntl

    lock = Path(directory) / ".nerva-consistency.lock"
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise WriteFailed(lock, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks
            raise WriteFailed(lock, e) from None
        yield
    finally:
        os.close(fd)  # releases the lock
