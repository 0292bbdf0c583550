"""Outputs written under a temporary name beside their final path and renamed into place only once complete, so that
a path that exists holds a whole output (a file or a directory), whatever stopped the process that wrote it. A stage
whose outputs exist is therefore done, and a re-run can skip it.

The temporary name is `.<name>.partial-<pid>` in the target's folder: hidden, on the same file system (so the rename
is atomic), and owned by a known process, so `remove_stale` can tell the leftovers of a process that is gone from
the work of one still running."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_PARTIAL = ".partial-"


def staging_path(target: Path, owner: int | None = None) -> Path:
    """The temporary name of `target` for process `owner` (default: this process)."""
    target = Path(target)
    return target.with_name(f".{target.name}{_PARTIAL}{os.getpid() if owner is None else owner}")


@contextmanager
def staging(target: Path, *, directory: bool = False) -> Iterator[Path]:
    """A fresh temporary path beside `target` to write the output to (an empty directory with `directory`; nothing
    yet for a file); `commit` renames it into place. Stale leftovers of `target` are removed first, and whatever is
    left of the temporary path when the block ends (it raised, or chose not to commit) is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = staging_path(target)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    finally:
        _remove(tmp)


def commit(tmp: Path, target: Path, *, replace: bool = True) -> None:
    """Renames the finished `tmp` to `target`. A file replaces what is there in one step. A directory takes the place
    of nothing or of an empty directory in one step; a non-empty one is moved aside and removed after (with
    `replace`), or left alone with FileExistsError (without: another writer finished first)."""
    tmp, target = Path(tmp), Path(target)
    if not tmp.is_dir():
        if not replace and target.exists():
            raise FileExistsError(errno.EEXIST, "already exists", str(target))
        os.replace(tmp, target)
        return
    try:
        os.rename(tmp, target)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        if not replace:
            raise FileExistsError(e.errno, "already exists", str(target)) from None
    old = staging_path(target).with_name(f"{staging_path(target).name}-old")
    os.rename(target, old)
    os.rename(tmp, target)
    _remove(old)


def write_text(target: Path, text: str) -> None:
    """`text` written to `target` (UTF-8) under its temporary name, then renamed into place."""
    with staging(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
        commit(tmp, target)


def remove_stale(target: Path) -> list[Path]:
    """Removes the temporary names of `target` left by processes that are no longer running (or by this one: it is
    about to write `target` again); returns them. Those of other running processes are theirs, and stay."""
    target = Path(target)
    prefix = f".{target.name}{_PARTIAL}"
    try:
        siblings = list(target.parent.iterdir())
    except FileNotFoundError:
        return []
    removed = []
    for path in siblings:
        if path.name.startswith(prefix) and not _running_elsewhere(path.name[len(prefix):]):
            _remove(path)
            removed.append(path)
    return removed


def _running_elsewhere(owner: str) -> bool:
    digits = owner.split("-", 1)[0]
    if not digits.isdigit() or int(digits) in (0, os.getpid()):
        return False
    try:
        os.kill(int(digits), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
