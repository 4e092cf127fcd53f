# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The package's one atomic file writer, and the cleaner of what a killed
writer leaves.

A file is written to ``.{name}.{pid}.{token}.partial`` in its folder,
flushed and ``fsync``-ed, then renamed onto its name (``os.replace``, atomic
on POSIX): readers see the old file or the new one, never a part. Only a
process killed during the write leaves the hidden partial file behind;
:func:`remove_partial_files` deletes such leftovers.
"""
import contextlib
import os
import os.path as osp
import re
import time
import uuid
from typing import IO, Callable, List, Optional

PARTIAL_SUFFIX = '.partial'
# .{name}.{pid}.{token}.partial, as atomic_write names them
_PARTIAL_RE = re.compile(r'^\..+\.\d+\.[0-9a-f]{8}' +
                         re.escape(PARTIAL_SUFFIX) + '$')


def is_partial_file(name: str) -> bool:
    """Whether the file name ``name`` is a temporary file of
    :func:`atomic_write`."""
    return bool(_PARTIAL_RE.match(name))


def _fsync_dir(dirname: str) -> None:
    """Make a rename in ``dirname`` durable (where the OS allows it)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str,
                 write_fn: Callable[[IO[bytes]], object],
                 mode: Optional[int] = None) -> None:
    """Write ``path`` atomically.

    Args:
        path (str): The file to write; its folder is created if missing.
        write_fn (Callable): Writes the content to the binary file it is
            given.
        mode (int, optional): Permissions of the file (e.g. ``0o644``);
            None gives those ``open`` would (0o666 less the umask).
    """
    dirname = osp.dirname(osp.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = osp.join(
        dirname, f'.{osp.basename(path)}.{os.getpid()}.'
        f'{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}')
    try:
        with open(tmp, 'xb') as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)


def remove_partial_files(folder: str,
                         max_age_s: Optional[float] = None) -> List[str]:
    """Delete the partial files of killed :func:`atomic_write` calls.

    Args:
        folder (str): The folder to clean (a missing one is fine).
        max_age_s (float, optional): Only files older than this, in
            seconds (a younger one may belong to a live writer); None
            deletes all.

    Returns:
        list[str]: The names of the deleted files.
    """
    if not osp.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        if not is_partial_file(name):
            continue
        path = osp.join(folder, name)
        try:
            if (max_age_s is None
                    or time.time() - os.stat(path).st_mtime > max_age_s):
                os.remove(path)
                removed.append(name)
        except FileNotFoundError:
            pass
    return removed
