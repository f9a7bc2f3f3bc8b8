"""Files netspec writes: atomically (temporary file, fsync, rename) with the permissions a plain
write would give (0666 less the umask), a probe that a folder is writable before work starts,
and the clean-up of temporary files that interrupted writes left behind.

Temporary files are ``.<name>.<pid>.<random>.tmp`` beside the target, so a clean-up can tell a
live writer's file from a dead one's.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

from .errors import SnapshotError


def _temp_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary files: hidden, with the writer's process id so
    start-up clean-up (``remove_orphans``) can tell a live writer's file from a dead one's."""
    return f".{path.name}.{os.getpid()}."


def _write_and_sync(f, payload: bytes, path: Path) -> None:
    """Write ``payload`` (meant for ``path``) to the open temporary file ``f``, flushed to
    disk. One function, so tests can make it fail as a full disk would."""
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())


def _umask() -> int:
    """The process's umask: from /proc (Linux), else set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the whole new one,
    with the permissions a plain write would give it (0666 less the umask).

    Any failure (no such folder, no permission, a full disk) is a SnapshotError naming
    ``path``, and leaves no temporary file behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask)
        # before the rename, so the file never appears with other permissions
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            _write_and_sync(f, payload, path)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise SnapshotError(f"could not write this file: {e.strerror or e}", file=str(path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def check_writable_folder(prefix: str | Path) -> Path:
    """Create the folder of the files ``prefix`` names, and write and remove a probe file there
    (named like the atomic writer's temporary files, so an interrupted probe is cleaned up too).
    Returns the folder; OSError when it cannot be written."""
    prefix = Path(prefix)
    folder = prefix.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=_temp_prefix(Path(f"{prefix.name}_iter_probe")),
                                 suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(probe)
    return folder


def remove_orphans(prefix: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes of ``prefix``'s snapshots
    left in its folder (``.<prefix name>_iter_*.tmp``), except those of processes still
    running (another run writing right now). Returns the files removed."""
    prefix = Path(prefix)
    folder = prefix.parent if str(prefix.parent) else Path(".")
    removed = []
    for tmp in folder.glob(f".{glob.escape(prefix.name)}_iter_*.tmp"):
        parts = tmp.name.split(".")
        pid = parts[-3] if len(parts) >= 4 else ""
        if pid.isdigit() and (int(pid) == os.getpid() or _running(int(pid))):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue                # another run's clean-up removed it first
        except PermissionError:
            continue                # another user's file in a shared folder: left to its owner
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
