"""What the tool loads as code is private, and checked before it is loaded.

On a cluster the results live on shared project space, usually set up for sharing
(a group-owned directory, `umask 002`). What the tool or submitit later unpickles or
executes must then be writable by its owner only, or any member of the group could
run code as the user who launched the study. The modes, whatever the umask:

    path                                         mode (share_results_with_group: true)
    results/.scheduler/ and everything in it     0700 dirs, 0600 files (0750, 0640)
    the submitit folders: results/<study>/submitit/ or <submitit_root>/<study>/,
      and a local cell's <cell>/submitit/        0700, pickles 0600 (0750, 0640)
    results/<study>/cells/<cell>/                never group- or other-writable;
                                                 readable as the umask makes it
    .../<cell>/checkpoint.pt                     0600 (0640)
    every other file the tool writes (tables,    as the umask makes it, less the
      figures, metrics, summaries, the report)   group and other write bits

Launchers and training tasks run with the write bits for group and others added to the
umask (`never_group_writable`), so nothing they make is writable by anyone else; the
private directories are made 0700 on top of that.

Before a result pickle is unpickled, a checkpoint loaded or a queued request submitted,
`check_private` makes sure the file and its directory belong to the user and are not
writable by group or others, and refuses in one line otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

GROUP_OR_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


class NotPrivate(RuntimeError):
    """A file the tool would load is not the user's alone; the message says why and the fix."""


def never_group_writable() -> None:
    """Add group and other write to this process's umask (inherited by what it starts)."""
    os.umask(os.umask(0) | GROUP_OR_OTHER_WRITE)


def dir_mode(shared: bool) -> int:
    return 0o750 if shared else 0o700


def file_mode(shared: bool) -> int:
    return 0o640 if shared else 0o600


def private_dir(path: Path, shared: bool = False) -> Path:
    """Make the directory (and its missing parents) and set it owner-only, or group-readable."""
    path.mkdir(parents=True, exist_ok=True)
    info = path.stat()
    if stat.S_IMODE(info.st_mode) != dir_mode(shared) and info.st_uid == os.getuid():
        path.chmod(dir_mode(shared))
    return path


def not_writable_by_others(path: Path) -> None:
    """Strip group and other write from a directory of ours that others may read."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & GROUP_OR_OTHER_WRITE and info.st_uid == os.getuid():
        path.chmod(mode & ~GROUP_OR_OTHER_WRITE)


def restrict_file(path: Path, shared: bool = False) -> None:
    path.chmod(file_mode(shared))


def problem(path: Path) -> str | None:
    """Why the path may not be trusted: someone else's, or writable by group or others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        return (f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); check it, then remove it "
                f"or `chown {os.getuid()} {path}`")
    if mode & GROUP_OR_OTHER_WRITE:
        who = " and ".join(name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others"))
                           if mode & bit)
        return f"{path} is writable by {who} (mode {mode:04o}); check it, then `chmod go-w {path}`"
    return None


def check_private(path: Path) -> None:
    """Raise NotPrivate, in one line, unless the file and its directory are the user's alone to write."""
    for candidate in (path.parent, path):
        if (why := problem(candidate)) is not None:
            raise NotPrivate(f"refusing to load {path}: {why}")
