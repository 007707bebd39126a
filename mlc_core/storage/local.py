"""An object store in a local folder: each key is a file below the root folder."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mlc_core.errors import (
    InvalidKey,
    ObjectChanged,
    ObjectNotFound,
    ObjectTooLarge,
    ObjectUnreadable,
    StorageError,
    StoreUnavailable,
)
from mlc_core.storage.base import Listing, ObjectInfo, batched, validate_key, validate_prefix

logger = logging.getLogger(__name__)

# put() writes here first and renames; listings skip such files and keys may not use the name.
TEMP_PREFIX = ".mlc-tmp-"


class LocalStore:
    """Objects as files below ``root``; the folder tree follows the '/' in the keys.

    Listings show regular files only: symbolic links are neither listed nor walked into, and a
    key whose path resolves outside the root through a symbolic link is refused. A local folder
    cannot hold both a key ``a`` and a key ``a/b`` (S3 can); writing the second fails clearly.
    Deleting an object leaves its (possibly empty) folders in place.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use ``root`` (made absolute, not resolved, not created: see :meth:`check`)."""
        self.root = Path(os.path.abspath(root))
        self.url = str(self.root)
        self.root_uri = f"file://{self.url.rstrip('/')}/"

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def uri(self, key: str) -> str:
        """Return ``file:///abs/folder/<key>`` (not percent-encoded).

        Raises:
            InvalidKey: the key breaks the key rules.
        """
        return self.root_uri + validate_key(key)

    def list_pages(
        self, prefix: str = "", page_size: int = 1000, *, start_after: str | None = None
    ) -> Listing:
        """The files whose key starts with ``prefix``, ``page_size`` at a time.

        Keys come in ascending order of their UTF-8 bytes, as S3 lists them. Folders are read
        lazily one at a time, so memory holds the names of the folders on the current path, never
        the whole listing. A missing root folder lists as empty. A folder that cannot be read
        is named in the listing's ``unreadable`` and the others are still listed. A symbolic
        link to a file is listed (reading it is refused, so it can be recorded); one to a
        folder is not walked into. With ``start_after``, only keys that sort after it are
        listed, and folders whose keys all sort before it are not read at all.

        Raises:
            InvalidKey: the prefix breaks the key rules (raised at the call).
            ValueError: ``page_size`` is smaller than 1 (raised at the call).
            StoreUnavailable: the root exists but is not a folder.
        """
        validate_prefix(prefix)
        after = validate_prefix(start_after or "")
        return Listing(lambda listing: batched(self._walk(prefix, listing, after), page_size))

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the files whose key starts with ``prefix``, in :meth:`list_pages` order."""
        for page in self.list_pages(prefix):
            yield from page

    def head(self, key: str) -> ObjectInfo:
        """Return the size, etag and modification time of one file without reading it.

        Raises:
            InvalidKey: the key breaks the key rules.
            ObjectNotFound: there is no regular file at the key.
            ObjectUnreadable: the file or a folder on its way is a link, or may not be read.
        """
        descriptor = self._open_for_reading(key)
        try:
            return _info(key, os.fstat(descriptor))
        finally:
            os.close(descriptor)

    def get(self, key: str, *, etag: str | None = None, max_bytes: int | None = None) -> bytes:
        """Return the bytes of one file (see :meth:`ObjectStore.get`).

        The file is opened without following any symbolic link on its way, so a link swapped
        in after the listing cannot lead a read out of the store; ``etag`` is compared with the
        opened file's own metadata.

        Raises:
            InvalidKey: the key breaks the key rules.
            ObjectNotFound: there is no regular file at the key.
            ObjectChanged: ``etag`` is given and the file is another version.
            ObjectTooLarge: the file is larger than ``max_bytes``.
            ObjectUnreadable: the file or a folder on its way is a link, or may not be read.
        """
        descriptor = self._open_for_reading(key, root_must_exist=True)
        try:
            status = os.fstat(descriptor)
            if etag is not None and _info(key, status).etag != etag:
                raise ObjectChanged(key, etag)
            if max_bytes is not None and status.st_size > max_bytes:
                raise ObjectTooLarge(key, status.st_size, max_bytes)
            with open(descriptor, "rb", closefd=False) as file:
                data = file.read() if max_bytes is None else file.read(max_bytes + 1)
        except OSError as error:
            raise self._read_error(error, key) from error
        finally:
            os.close(descriptor)
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(key, None, max_bytes)
        return data

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write one file atomically, creating its folders.

        The bytes go to a temporary file in the same folder, are flushed to disk, and the file is
        renamed over the key, so readers see the old or the new content, never a mix, and of
        concurrent writers of one key exactly one complete version survives.

        Raises:
            InvalidKey: the key breaks the key rules or leads out of the root.
            StorageError: the file cannot be written (a file where a folder must be, no space,
                no permission).
        """
        path = self._path(key)
        folder = os.path.dirname(path)
        temporary = os.path.join(folder, TEMP_PREFIX + secrets.token_hex(8))
        try:
            os.makedirs(folder, exist_ok=True)
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
            )
            try:
                with open(descriptor, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(descriptor)
                    status = os.fstat(descriptor)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            _fsync_folder(folder)
        except OSError as error:
            raise self._os_error(error, key, "write") from error
        return _info(key, status)

    def exists(self, key: str) -> bool:
        """Return whether a regular file exists at the key.

        Raises:
            InvalidKey: the key breaks the key rules or leads out of the root.
        """
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete one file; a missing key does nothing.

        Raises:
            InvalidKey: the key breaks the key rules or leads out of the root.
            StorageError: the file exists but cannot be deleted.
        """
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as error:
            raise self._os_error(error, key, "delete") from error

    def check(self) -> None:
        """Create the root folder if it is missing.

        Raises:
            StoreUnavailable: the root is a file, or the folder cannot be created.
        """
        try:
            os.makedirs(self.root, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._root_not_a_folder() from None
        except OSError as error:
            raise StoreUnavailable(
                f"the store folder {self.url} cannot be created ({error.strerror}); "
                "create it or point the store URL at a folder you can write"
            ) from error

    def _open_for_reading(self, key: str, *, root_must_exist: bool = False) -> int:
        """A descriptor of the regular file at ``key``, reached one folder at a time without
        following a symbolic link (a check of the path before opening it could be raced).

        ``root_must_exist``: a missing store folder is an outage (an unmounted share), not a
        missing object; a store never written to has no folder yet, which ``head`` and
        ``exists`` take as empty.
        """
        parts = self._checked_key(key).split("/")
        try:
            folder = os.open(self.url, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not root_must_exist:
                raise ObjectNotFound(key, self.url) from None
            raise StoreUnavailable(
                f"the store folder {self.url} does not exist; mount or create it, or point "
                "the store URL at it"
            ) from None
        except NotADirectoryError:
            raise self._root_not_a_folder() from None
        except OSError as error:
            raise self._read_error(error, key) from error
        try:
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                # O_NONBLOCK: a FIFO at the key cannot hang the open; fstat then refuses it.
                kind = os.O_NONBLOCK if last else os.O_DIRECTORY
                try:
                    opened = os.open(
                        part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | kind, dir_fd=folder
                    )
                except OSError as error:
                    raise self._open_error(error, key, folder, part) from error
                os.close(folder)
                folder = opened
        except BaseException:
            os.close(folder)
            raise
        if not stat.S_ISREG(os.fstat(folder).st_mode):
            os.close(folder)
            raise ObjectNotFound(key, self.url)
        return folder

    def _open_error(self, error: OSError, key: str, folder: int, part: str) -> StorageError:
        if isinstance(error, FileNotFoundError):
            return ObjectNotFound(key, self.url)
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                is_link = stat.S_ISLNK(os.lstat(part, dir_fd=folder).st_mode)
            except OSError:
                is_link = False
            if not is_link:
                return ObjectNotFound(key, self.url)  # a file where a folder would be
            return ObjectUnreadable(
                key,
                "symbolic link: the local store reads only regular files inside its folder, "
                "not a link nor what lies below one; copy the file into the store",
            )
        return self._read_error(error, key)

    def _read_error(self, error: OSError, key: str) -> StorageError:
        if isinstance(error, PermissionError):
            return ObjectUnreadable(
                key, f"permission denied: the user running mlc may not read it ({error.strerror})"
            )
        if error.errno == errno.EIO:
            return ObjectUnreadable(key, "I/O error: the file system failed to read it")
        return self._os_error(error, key, "read")

    def _checked_key(self, key: str) -> str:
        validate_key(key)
        if key.rpartition("/")[2].startswith(TEMP_PREFIX):
            raise InvalidKey(key, f"names starting with {TEMP_PREFIX!r} are reserved for put()")
        return key

    def _path(self, key: str) -> str:
        path = os.path.join(self.url, self._checked_key(key))
        # A symbolic link inside the root may point anywhere; refuse to read or write through one
        # that leaves the root.
        real_root = os.path.realpath(self.url)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise InvalidKey(key, f"it leads out of {self.url} through a symbolic link")
        return path

    def _walk(self, prefix: str, listing: Listing, start_after: str) -> Iterator[ObjectInfo]:
        folder, _, name_start = prefix.rpartition("/")
        start = os.path.join(self.url, folder)
        # A folder reached through a symbolic link is not walked, as in the rest of the listing.
        if folder and os.path.realpath(start) != os.path.join(os.path.realpath(self.url), folder):
            return
        try:
            top = self._entries(start, name_start)
        except (FileNotFoundError, NotADirectoryError):
            if os.path.lexists(self.url) and not os.path.isdir(self.url):
                raise self._root_not_a_folder() from None
            return
        except OSError as error:
            self._unreadable_folder(listing, folder, error)
            return
        stack = [(f"{folder}/" if folder else "", iter(top))]
        while stack:
            base, entries = stack[-1]
            for name in entries:
                key = base + name
                # A folder that sorts before the start key and is not on its path holds only
                # keys that sort before it too.
                folder_on_path = name.endswith("/") and start_after.startswith(key)
                if key <= start_after and not folder_on_path:
                    continue
                if name.endswith("/"):
                    try:
                        children = self._entries(os.path.join(self.url, key), "")
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # removed while we were listing
                    except OSError as error:
                        self._unreadable_folder(listing, key, error)
                        continue
                    stack.append((key, iter(children)))
                    break
                info = self._listed(key)
                if info is not None:
                    yield info
            else:
                stack.pop()

    def _unreadable_folder(self, listing: Listing, folder: str, error: OSError) -> None:
        where = folder.rstrip("/") or "(the store root)"
        problem = f"{where}: {error.strerror or error}"
        logger.warning("cannot list the folder %s in %s", problem, self.url)
        listing.unreadable.append(problem)

    def _entries(self, folder: str, name_start: str) -> list[str]:
        """Names in ``folder`` in S3 order; a subfolder's name ends with '/'."""
        names = []
        with os.scandir(folder) as scan:
            for entry in scan:
                name = entry.name
                if not name.startswith(name_start) or not _is_utf8(name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    names.append(name + "/")
                elif entry.is_symlink():
                    # Listed, so reading it is refused and recorded; never walked into, as it
                    # may leave the root or loop.
                    if not entry.is_dir():
                        names.append(name)
                elif entry.is_file(follow_symlinks=False) and not name.startswith(TEMP_PREFIX):
                    names.append(name)
        # Code point order is UTF-8 byte order; the '/' makes "a-b" sort before "a/x" as on S3.
        names.sort()
        return names

    def _listed(self, key: str) -> ObjectInfo | None:
        try:
            validate_key(key)
        except InvalidKey as error:
            logger.warning("not listing a file in %s: %s", self.url, error)
            return None
        try:
            status = os.stat(os.path.join(self.url, key), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None  # removed while we were listing
        if not (stat.S_ISREG(status.st_mode) or stat.S_ISLNK(status.st_mode)):
            return None
        return _info(key, status)

    def _root_not_a_folder(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the store root {self.url} is not a folder (or is below a file); "
            "point the store URL at a folder"
        )

    def _os_error(self, error: OSError, key: str, action: str) -> StorageError:
        if os.path.lexists(self.url) and not os.path.isdir(self.url):
            return self._root_not_a_folder()
        if action == "write" and isinstance(error, FileExistsError | NotADirectoryError):
            return StorageError(
                f"cannot write {key!r} in {self.url}: a part of its folder path is a file; "
                "in a local store a key cannot also be a folder of other keys"
            )
        if action == "write" and isinstance(error, IsADirectoryError):
            return StorageError(
                f"cannot write {key!r} in {self.url}: a folder of that name holds other keys; "
                "in a local store a key cannot also be a folder of other keys"
            )
        return StorageError(f"cannot {action} {key!r} in {self.url}: {error.strerror or error}")


def _info(key: str, status: os.stat_result) -> ObjectInfo:
    # The etag comes from metadata so listing never reads content. The inode number changes on
    # every put (a new file is renamed in), which catches two same-size writes within one tick
    # of the file system clock.
    etag = f"{status.st_mtime_ns:x}-{status.st_size:x}-{status.st_ino:x}"
    seconds, nanoseconds = divmod(status.st_mtime_ns, 1_000_000_000)
    modified = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanoseconds // 1000)
    return ObjectInfo(key=key, size=status.st_size, etag=etag, modified=modified)


def _is_utf8(name: str) -> bool:
    # os.scandir decodes undecodable bytes to lone surrogates; such names cannot be keys.
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("not listing %r: its name is not valid UTF-8", name)
        return False
    return True


def _fsync_folder(folder: str) -> None:
    # The rename is durable only once the folder's entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
