"""Writing a file without writing through a link: every file the suite writes goes through
``write_atomically``.

A results folder may come from someone else, and one of its names may be a symbolic link to a
file of yours (``report.html -> ~/.bashrc``); writing to that name in place would overwrite the
link's target. So a file is written into a new temporary file in its folder (created with
``O_EXCL``, never following a link) and renamed over its name, which replaces the name itself,
never what it points to; and a destination that is a link is refused anyway, as are links
among the folders below the one the caller vouches for (``inside``: the results folder, which
may itself be a link, the user's choice). A killed or failed write leaves the old file whole
and no temporary file. Failures are ``OSError`` (``LinkRefused`` for a link), which each caller
turns into its own one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

Content = bytes | str | Callable[[BinaryIO], None]


class LinkRefused(OSError):
    """A destination, or a folder on its way, that is a symbolic link: nothing is written
    through it."""

    def __init__(self, path: Path, folder: Path | None = None):
        what = "it is" if folder is None else f"its folder {folder} is"
        super().__init__(errno.ELOOP, f"{what} a symbolic link, which is never written "
                         "through (remove the link, or write elsewhere)", str(path))


def write_atomically(path: Path, content: Content, *, inside: Path | None = None) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function that writes into a binary file)
    to ``path`` atomically, with the permissions the user's umask gives a new file.
    ``inside`` (default: ``path``'s folder) must exist and is opened as named, links followed;
    the folders between it and ``path`` are created if missing and must not be links, nor may
    ``path``.
    Raises ``OSError``: ``LinkRefused`` for a link, else the system's error."""
    path = Path(path)
    with open_folder(path.parent, inside) as folder:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(path.name, dir_fd=folder).st_mode):
                raise LinkRefused(path)
        temporary, fd = _new_file(path.name, folder)
        try:
            with os.fdopen(fd, "wb") as file:
                if callable(content):
                    content(file)
                else:
                    file.write(content.encode() if isinstance(content, str) else content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:  # a full disk or Ctrl-C: the old file stays, no temporary file
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
        with contextlib.suppress(OSError):  # the rename itself on disk; some systems refuse
            os.fsync(folder)
    return path


@contextlib.contextmanager
def open_folder(folder: Path, inside: Path | None = None) -> Iterator[int]:
    """A descriptor of ``folder``, reached from ``inside`` (default: ``folder`` itself; it must
    exist, links followed) one name at a time without following a link, each created if
    missing. Raises ``LinkRefused`` for a link on the way, ``ValueError`` when ``folder`` is
    not inside ``inside``."""
    folder = Path(folder)
    inside = folder if inside is None else Path(inside)
    names = folder.relative_to(inside).parts
    if ".." in names:
        raise ValueError(f"{folder} is not inside {inside}")
    fd = os.open(inside, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        reached = inside
        for name in names:
            reached = reached / name
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError:
                if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                    raise LinkRefused(folder, reached) from None
                raise
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _new_file(name: str, folder: int) -> tuple[str, int]:
    """A new temporary file beside ``name`` (``.NAME.RANDOM.tmp``): created, never opened if
    anything is already there, a link included."""
    while True:
        temporary = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                      | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder)
        except FileExistsError:
            continue
