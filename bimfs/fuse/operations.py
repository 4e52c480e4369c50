"""The thin pyfuse3 adapter: translates kernel requests to ``Filesystem`` calls and back.

Only ``FUSEError`` leaves a handler: every other exception is mapped to an errno by
``errno_map.to_errno`` and logged once at a level that matches what the user sees.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from bimfs.api.errors import ApiError, NotFoundError
from bimfs.fuse.errno_map import to_errno
from bimfs.vfs.errors import FsError
from bimfs.vfs.filesystem import Filesystem
from bimfs.vfs.nodes import Attr

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

ATTR_TIMEOUT = 1.0
ENTRY_TIMEOUT = 1.0
_QUIET = {errno.ENOENT, errno.ENODATA, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTSUP}


def _report(op: str, exc: BaseException) -> int:
    err = to_errno(exc)
    if isinstance(exc, FsError):
        level = logging.DEBUG if err in _QUIET else logging.INFO
        log.log(level, "%s: %s", op, exc)
    elif isinstance(exc, NotFoundError):
        log.debug("%s: %s", op, exc)
    elif isinstance(exc, (ApiError, OSError)):
        log.warning("%s failed: %s", op, exc)
    else:
        log.error("%s failed unexpectedly", op, exc_info=exc)
    return err


def handler(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Map every exception except cancellation to a ``FUSEError``."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # trio.Cancelled is a BaseException and passes through
            raise pyfuse3.FUSEError(_report(fn.__name__, exc)) from None

    return wrapper


def entry(attr: Attr) -> pyfuse3.EntryAttributes:
    """Convert our attributes to pyfuse3's."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.ino
    out.generation = 0
    if attr.ttl is None:
        out.entry_timeout = ENTRY_TIMEOUT
        out.attr_timeout = ATTR_TIMEOUT
    else:
        out.entry_timeout = out.attr_timeout = attr.ttl
    out.st_mode = attr.mode
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_rdev = 0
    out.st_size = attr.size
    out.st_blksize = 1 << 20
    out.st_blocks = attr.blocks
    mtime_ns = int(attr.mtime * 1e9)
    out.st_atime_ns = mtime_ns if attr.atime is None else int(attr.atime * 1e9)
    out.st_mtime_ns = mtime_ns
    out.st_ctime_ns = int(attr.ctime * 1e9)
    return out


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class Operations(pyfuse3.Operations):
    """pyfuse3 operations over a ``Filesystem``."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs
        fs.tree.invalidate_inode = self._invalidate_inode
        fs.tree.invalidate_attributes = self._invalidate_attributes
        fs.tree.invalidate_entry = self._invalidate_entry
        # (inode, attributes only)
        self._inval_send, self._inval_recv = trio.open_memory_channel[tuple[int, bool]](10_000)

    # Kernel cache invalidation happens in a worker thread: calling it from inside a request
    # handler for the same inode could deadlock.
    def _invalidate_inode(self, ino: int) -> None:
        self._queue_invalidation(ino, attr_only=False)

    def _invalidate_attributes(self, ino: int) -> None:
        self._queue_invalidation(ino, attr_only=True)

    def _queue_invalidation(self, ino: int, *, attr_only: bool) -> None:
        try:
            self._inval_send.send_nowait((ino, attr_only))
        except trio.WouldBlock:
            log.debug("invalidation queue full; inode %d stays cached until its timeout", ino)

    def _invalidate_entry(self, parent: int, name: str) -> None:
        try:
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        except Exception as exc:  # not mounted yet (tests) or kernel without support
            log.debug("entry invalidation skipped: %s", exc)

    async def run_invalidator(self) -> None:
        """Background task: forget kernel attributes and pages of changed documents."""
        async for ino, attr_only in self._inval_recv:
            try:
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, attr_only)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOSYS):
                    log.debug("invalidating inode %d: %s", ino, exc)

    @handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        return entry(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            try:
                self.fs.forget(ino, nlookup)
            except Exception as exc:  # forget cannot report errors
                log.debug("forget %d: %s", ino, exc)

    @handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return entry(await self.fs.getattr(inode))

    @handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        size = attr.st_size if fields.update_size else None
        mtime = attr.st_mtime_ns / 1e9 if fields.update_mtime else None
        atime = attr.st_atime_ns / 1e9 if fields.update_atime else None
        return entry(await self.fs.setattr(inode, size, fh, mtime, atime))

    @handler
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.fs.opendir(inode)

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for after, name, attr in self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry(attr), after):
                break
            self.fs.entry_sent(attr.ino)  # a reference only once the kernel took the entry

    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @handler
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fh, keep_cache = await self.fs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=self.fs.direct_io(fh))

    @handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.fs.create(parent_inode, _name(name), flags)
        return pyfuse3.FileInfo(fh=fh, direct_io=self.fs.direct_io(fh)), entry(attr)

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.fs.read(fh, off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @handler
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    @handler
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.unlink(parent_inode, _name(name))

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.rmdir(parent_inode, _name(name))

    @handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return entry(await self.fs.mkdir(parent_inode, _name(name)))

    @handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.fs.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags
        )

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        raise FsError(errno.EPERM, "only regular files and directories can be created")

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise FsError(errno.EPERM, "symbolic links cannot be stored in Bimplus")

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise FsError(errno.EPERM, "hard links cannot be stored in Bimplus")

    @handler
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        info = await self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = info["bsize"]
        out.f_frsize = info["frsize"]
        out.f_blocks = info["blocks"]
        out.f_bfree = info["bfree"]
        out.f_bavail = info["bavail"]
        out.f_files = info["files"]
        out.f_ffree = info["ffree"]
        out.f_favail = info["ffree"]
        out.f_namemax = info["namemax"]
        return out

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(b"user."):
            # `ls -l` asks for the SELinux label and the ACL of every entry, the kernel for
            # security.capability before writes: this file system has no such namespaces.
            # ENOTSUP says so (ENODATA would say "supported, not set"), and `ls` then stops
            # asking for the rest of the device: two requests per entry fewer.
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        return await self.fs.getxattr(inode, _name(name))

    @handler
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in await self.fs.listxattr(inode)]

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.fs.setxattr(inode, _name(name), value)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.removexattr(inode, _name(name))
