"""Blueprint archives: read the zip a user uploads, safely, and write the canonical zip we serve.

A blueprint is uploaded as a zip of the blueprint directory: ``manifest.yml`` at the root, plus the
Lua files of a Lua device (enapter-http-api.md §8). Two producers matter in practice:

- the Enapter Python SDK (``_zip_directory``) zips ``path.rglob("*")`` with paths relative to the
  directory, so the archive also holds directory entries such as ``lib/``;
- a file manager's "compress folder", which puts everything under one top-level folder
  (``my-bp/manifest.yml``) and, on macOS, adds ``__MACOSX/`` and ``.DS_Store`` junk.

`read_archive` accepts both and returns the files keyed by normalised POSIX paths relative to the
blueprint root. An upload is untrusted input, so it never trusts a zip header: every member is read
with a bounded read, and every limit in `ArchiveLimits` holds whatever the headers claim. Everything
wrong with an archive is collected into one `ArchiveError` whose messages are meant for users (the
``validation_errors`` of ``POST /v3/blueprints/validate``).

`read_files` applies the same safety to zips that are not blueprints (the device profiles archive).
`write_archive` produces the archives the gateway serves back (deterministic bytes), and
`content_digest` identifies a blueprint by its files, whatever zip they came in.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MANIFEST_NAME = "manifest.yml"


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Resource limits applied while reading an uploaded archive (all sizes in bytes)."""

    archive_bytes: int = 10 * 1024**2
    """Size of the zip itself."""
    entries: int = 1000
    """Entries in the central directory, directories and junk included."""
    file_bytes: int = 10 * 1024**2
    """Uncompressed size of any one file."""
    total_bytes: int = 50 * 1024**2
    """Uncompressed size of all files together."""
    manifest_bytes: int = 256 * 1024
    """Uncompressed size of ``manifest.yml``."""


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True, slots=True)
class BlueprintFiles:
    """The files of a blueprint: normalised POSIX paths relative to the blueprint root → contents.

    Directories are not listed; ``manifest.yml`` always is (for values made by `read_archive`).
    """

    files: Mapping[str, bytes]

    @property
    def manifest(self) -> bytes:
        """The contents of ``manifest.yml``."""
        return self.files[MANIFEST_NAME]


class ArchiveError(Exception):
    """An uploaded archive is not an acceptable blueprint; `problems` says why, one message each."""

    problems: tuple[str, ...]

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise ValueError("an ArchiveError needs at least one problem")
        # Keeping the problems as the exception's args makes it pickle and repr faithfully.
        super().__init__(*problems)
        self.problems = problems

    def __str__(self) -> str:
        return "; ".join(self.problems)


# Store and deflate are what zip tools write by default and all that Go's archive/zip reads; refusing
# the rest keeps the bzip2 and LZMA decoders (and their bomb ratios) away from untrusted input.
_SUPPORTED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_METHOD_NAMES = {9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES"}

_CENTRAL_SIGNATURE = b"PK\x01\x02"  # APPNOTE.TXT §4.3.12

# General purpose bit flags (APPNOTE.TXT §4.4.4).
_FLAG_ENCRYPTED = 0x0001
_FLAG_PATCHED = 0x0020
_FLAG_STRONG_ENCRYPTION = 0x0040

# What zipfile raises on hostile input, found by fuzzing mutated archives (see the unit tests). Opening:
# BadZipFile, NotImplementedError (a "version needed" above 6.3) and UnicodeDecodeError (a ValueError: a
# name flagged UTF-8 that is not). Reading a member adds ValueError (a negative seek from a hostile
# offset), OverflowError (a zip64 offset past 2**63), EOFError (data cut short) and zlib.error (bad
# deflate data). Opening guards against the member errors too, as zipfile versions move checks around.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    ValueError,
    OverflowError,
    EOFError,
    NotImplementedError,
)
_MEMBER_ERRORS = (*_ZIP_ERRORS, zlib.error)

_DRIVE = re.compile(r"[A-Za-z]:")
# Operating-system droppings from "compress folder": macOS resource forks and Finder / Explorer caches.
_JUNK_TOP = "__MACOSX"
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db"})

# Archives we write carry a fixed timestamp (the earliest a zip can hold) so equal files give equal bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = stat.S_IFREG | 0o644
_UNIX = 3  # "version made by" host system (APPNOTE.TXT §4.4.2): the mode sits in external_attr >> 16

_DIGEST_PREFIX = b"enapter-gateway blueprint files v1\x00"


@dataclass(slots=True)
class _Entry:
    """A central-directory entry that names a regular file of the blueprint."""

    info: zipfile.ZipInfo
    shown: str
    parts: tuple[str, ...]
    readable: bool


def read_archive(data: bytes, limits: ArchiveLimits = DEFAULT_LIMITS) -> BlueprintFiles:
    """Unpack an uploaded blueprint archive, enforcing `limits`.

    Directory entries and OS junk are dropped; when there is no root ``manifest.yml`` and every file
    sits under one top-level folder, that folder is stripped. Raises `ArchiveError` with every problem
    found (as many as can be found: a few, such as "not a zip archive", end the inspection).
    """
    return BlueprintFiles(_unpack(data, limits, blueprint=True))


def read_files(data: bytes, limits: ArchiveLimits = DEFAULT_LIMITS) -> Mapping[str, bytes]:
    """Unpack any uploaded zip (the device profiles archive) with all the safety checks of
    `read_archive` but none of the blueprint rules: no manifest is required and no folder is stripped.

    Returns normalised paths → contents (read-only, sorted); raises `ArchiveError`.
    """
    return _unpack(data, limits, blueprint=False)


def _unpack(data: bytes, limits: ArchiveLimits, *, blueprint: bool) -> Mapping[str, bytes]:
    """The files of an archive, or ArchiveError; `blueprint` applies the top-folder and manifest rules."""
    if len(data) > limits.archive_bytes:
        raise ArchiveError(f"archive is larger than {_size(limits.archive_bytes)}")
    # zipfile builds a ZipInfo for every central-directory entry before we can count them: 10 MiB of
    # tiny entries is 200,000 of them, seconds of CPU and ~100 MiB. Each entry starts with this
    # signature (zipfile checks it), so its occurrences bound the count from above, cheaply.
    if data.count(_CENTRAL_SIGNATURE) > limits.entries:
        raise ArchiveError(f"archive has more than {limits.entries} entries")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError:
        # zipfile decodes every name while opening, so the entry cannot be named here.
        raise ArchiveError("an entry name is marked as UTF-8 but is not valid UTF-8") from None
    except _ZIP_ERRORS:
        raise ArchiveError("not a zip archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.entries:
            raise ArchiveError(f"archive has more than {limits.entries} entries")
        problems: list[str] = []
        entries, directories = _classify(infos, problems)
        if blueprint:
            _strip_top_folder(entries, directories)
        problems.extend(_conflicts({entry.parts: entry.shown for entry in entries}, directories))
        files = _read_contents(archive, entries, limits, problems)
    if blueprint and not any(entry.parts == (MANIFEST_NAME,) for entry in entries):
        problems.append(f"missed file {MANIFEST_NAME}")
    if problems:
        raise ArchiveError(*problems)
    return MappingProxyType(dict(sorted(files.items())))


def write_archive(files: Mapping[str, bytes]) -> bytes:
    """Zip `files` deterministically: the same files always give the same bytes.

    Entries are sorted by name, dated 1980-01-01, deflated, with no directory entries. The bytes
    depend on the zlib build too, so they are stable within one installation. Raises `ValueError`
    if a name is not a normalised blueprint path (as `read_archive` returns them).
    """
    for name in files:
        problem = _canonical_problem(name)
        if problem is not None:
            raise ValueError(f"{_show(name)}: {problem}")
    for problem in _conflicts({tuple(name.split("/")): _show(name) for name in files}, set()):
        raise ValueError(problem)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = _UNIX
            info.external_attr = _FILE_MODE << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def content_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) of the files themselves: sorted paths and contents, length-prefixed.

    Two archives holding the same files give the same digest whatever their entry order, timestamps
    or compression; the length prefixes keep ``{"ab": b"c"}`` and ``{"a": b"bc"}`` apart.
    """
    digest = hashlib.sha256(_DIGEST_PREFIX)
    digest.update(len(files).to_bytes(8, "big"))
    # Code point order equals UTF-8 byte order, so the digest does not depend on Python's sort.
    for name in sorted(files):
        for field in (name.encode("utf-8"), files[name]):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return digest.hexdigest()


def _classify(infos: list[zipfile.ZipInfo], problems: list[str]) -> tuple[list[_Entry], set[tuple[str, ...]]]:
    """Sort entries into blueprint files and directories, dropping junk, noting what is wrong."""
    entries: list[_Entry] = []
    directories: set[tuple[str, ...]] = set()
    seen: dict[tuple[str, ...], str] = {}
    for info in infos:
        # orig_filename: ZipInfo cuts `filename` at the first NUL, hiding it.
        name = info.orig_filename
        shown = _show(name)
        parts = _parts(name)
        if isinstance(parts, str):
            problems.append(f"{shown}: {parts}")
            continue
        if parts and (parts[0] == _JUNK_TOP or parts[-1] in _JUNK_NAMES):
            continue
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            problems.append(f"{shown}: symbolic links are not allowed")
            continue
        if name.endswith("/") or kind == stat.S_IFDIR:
            directories.add(parts)
            continue
        if kind not in (0, stat.S_IFREG):
            problems.append(f"{shown}: not a regular file")
            continue
        if not parts:
            problems.append(f"{shown}: path has no file name")
            continue
        if parts in seen:
            same = "" if seen[parts] == shown else f" (same as {seen[parts]})"
            problems.append(f"{shown}: duplicate file name{same}")
            continue
        seen[parts] = shown
        problem = _feature_problem(info)
        if problem is not None:
            problems.append(f"{shown}: {problem}")
        entries.append(_Entry(info, shown, parts, readable=problem is None))
    return entries, directories


def _parts(name: str) -> tuple[str, ...] | str:
    """The normalised components of an entry name (``.`` dropped), or what is wrong with it."""
    if "\x00" in name:
        return "path contains a NUL character"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "path contains a control character"
    if "\\" in name:
        return "path contains a backslash (zip paths use /)"
    if name.startswith("/"):
        return "path is absolute"
    if _DRIVE.match(name):
        return "path starts with a drive letter"
    # A trailing slash marks a directory entry (APPNOTE.TXT §4.4.17.1).
    components = (name[:-1] if name.endswith("/") else name).split("/")
    if "" in components:
        return "path has an empty component"
    parts = tuple(part for part in components if part != ".")
    if ".." in parts:
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                return "path leaves the blueprint directory"
        return "path contains a '..' component"
    return parts


def _canonical_problem(name: str) -> str | None:
    """Why `name` is not a path `read_archive` could return, or None."""
    if any(unicodedata.category(char) == "Cs" for char in name):
        return "path is not valid UTF-8"
    parts = _parts(name)
    if isinstance(parts, str):
        return parts
    if "/".join(parts) != name or not parts:
        return "path is not normalised"
    if parts[0] == _JUNK_TOP or parts[-1] in _JUNK_NAMES:
        return "path is operating-system junk that archives drop"
    return None


def _feature_problem(info: zipfile.ZipInfo) -> str | None:
    """Why the member of a well-named file entry cannot be read, or None."""
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        return "encrypted entries are not supported"
    if info.flag_bits & _FLAG_PATCHED:
        return "patched data entries are not supported"
    if info.compress_type not in _SUPPORTED_METHODS:
        method = info.compress_type
        label = f" ({_METHOD_NAMES[method]})" if method in _METHOD_NAMES else ""
        return f"compression method {method}{label} is not supported; use deflate or store"
    return None


def _strip_top_folder(entries: list[_Entry], directories: set[tuple[str, ...]]) -> None:
    """Drop the one folder a file manager puts everything under, when the root has no manifest."""
    if not entries or any(entry.parts == (MANIFEST_NAME,) for entry in entries):
        return
    top = entries[0].parts[0]
    if not all(len(entry.parts) > 1 and entry.parts[0] == top for entry in entries):
        return
    if not all(directory[:1] == (top,) for directory in directories if directory):
        return
    for entry in entries:
        entry.parts = entry.parts[1:]
    stripped = {directory[1:] for directory in directories}
    directories.clear()
    directories.update(stripped)


def _conflicts(files: Mapping[tuple[str, ...], str], directories: set[tuple[str, ...]]) -> list[str]:
    """Problems for files (path → shown name) whose path is also a directory (``lib`` and ``lib/x``)."""
    folders = set(directories)
    for parts in files:
        folders.update(parts[:i] for i in range(1, len(parts)))
    return [
        f"{shown}: path is both a file and a directory" for parts, shown in files.items() if parts in folders
    ]


def _read_contents(
    archive: zipfile.ZipFile, entries: list[_Entry], limits: ArchiveLimits, problems: list[str]
) -> dict[str, bytes]:
    """Read every readable entry, never inflating more than the limits allow, whatever the headers say."""
    files: dict[str, bytes] = {}
    total = 0
    for entry in entries:
        if not entry.readable:
            continue
        claimed = entry.info.file_size
        limit = limits.manifest_bytes if entry.parts == (MANIFEST_NAME,) else limits.file_bytes
        if claimed > limit:
            problems.append(f"{entry.shown}: file is larger than {_size(limit)}")
            continue
        if claimed > limits.total_bytes - total:
            problems.append(f"archive unpacks to more than {_size(limits.total_bytes)}")
            break
        # The claim is within the limits, so a read bounded by it is safe; but zipfile silently cuts a
        # member at the claimed size. Claiming one byte more lets a member that inflates past its header
        # show itself, to be refused as Go's archive/zip refuses it.
        probe = copy.copy(entry.info)
        probe.file_size = claimed + 1
        try:
            with archive.open(probe) as member:
                content = member.read(claimed + 1)
        except _MEMBER_ERRORS:
            # CRC mismatch, bad deflate data, a local header that disagrees with the central one...
            problems.append(f"{entry.shown}: corrupt entry")
            continue
        if len(content) != claimed:
            problems.append(f"{entry.shown}: corrupt entry")
            continue
        total += claimed
        files["/".join(entry.parts)] = content
    return files


def _show(name: str) -> str:
    """An entry name as it can be printed in a message."""
    return name if name.isprintable() and name else repr(name)


def _size(count: int) -> str:
    """A byte count for people: ``10 MiB``, ``256 KiB``, ``1000 bytes``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"
