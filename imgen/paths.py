"""Check the paths a command reads or writes before it does any work: bad ones become one ImgenError naming the
path and the fix. Nothing is created or removed here; the command writes only after every check passed."""
from __future__ import annotations

import os
from pathlib import Path

from imgen.errors import ImgenError


def _check_creatable(path: Path, flag: str) -> None:
    """`path` (absent) can be made: its nearest existing ancestor is a directory we may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ImgenError(f"cannot create {flag} {str(path)!r}: {str(parent)!r} is a file, not a directory; "
                         "choose a path that is not inside a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImgenError(f"cannot create {flag} {str(path)!r}: no permission to write in {str(parent)!r}; "
                         "choose a writable location")


def output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A directory the command will create or write into (an existing one is fine)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ImgenError(f"{flag} {str(path)!r} is not writable; choose a writable directory")
    elif path.exists():
        raise ImgenError(f"{flag} {str(path)!r} is a file, not a directory; give a new or existing directory "
                         "(the file is left untouched)")
    else:
        _check_creatable(path, flag)
    return path


def output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A file the command will write (its missing parent directories are created; an existing file is replaced)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ImgenError(f"{flag} {str(path)!r} is a directory, not a file; give a file path that is not a directory")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ImgenError(f"{flag} {str(path)!r} is not writable; choose another file")
    else:
        _check_creatable(path, flag)
    return path


def input_file(path: str | os.PathLike, flag: str, what: str = "file") -> Path:
    """A file the command will read."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ImgenError(f"{flag} {str(path)!r} is a directory; give the {what} itself")
    if not path.exists():
        raise ImgenError(f"{flag} {str(path)!r} not found; check the path to the {what}")
    if not os.access(path, os.R_OK):
        raise ImgenError(f"{flag} {str(path)!r} is not readable; check its permissions")
    return path
