"""Tests for `gateway.blueprints.archive`: reading uploaded blueprint zips safely, writing canonical ones."""

from __future__ import annotations

import io
import pathlib
import pickle
import stat
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.blueprints.archive import (
    DEFAULT_LIMITS,
    MANIFEST_NAME,
    ArchiveError,
    ArchiveLimits,
    BlueprintFiles,
    content_digest,
    read_archive,
    read_files,
    write_archive,
)

MANIFEST = b"blueprint_spec: device/3.0\ndisplay_name: Meter\nruntime:\n  type: lua\n  opts:\n    dir: .\n"
FIRMWARE = b"function main()\n  enapter.log('hello')\nend\nmain()\n"
MiB = 1024**2


def zip_of(
    files: Mapping[str, bytes],
    compression: int = zipfile.ZIP_DEFLATED,
    date_time: tuple[int, int, int, int, int, int] = (2024, 5, 17, 12, 30, 0),
) -> bytes:
    """A plain zip of `files`, in the given order, as zipfile writes it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=date_time), content, compress_type=compression)
    return buffer.getvalue()


@dataclass(frozen=True)
class Raw:
    """One entry of a hand-built zip, whose every header field the test controls.

    `payload` is the member data as stored (defaults to `content`, deflated for method 8); `crc` and
    `file_size` default to the truth about `content`, so overriding them makes the headers lie.
    """

    name: str | bytes
    content: bytes = b""
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0
    mode: int = stat.S_IFREG | 0o644
    payload: bytes | None = None
    crc: int | None = None
    file_size: int | None = None


def deflate(data: bytes) -> bytes:
    """Raw deflate, as zip stores it (no zlib header)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def raw_zip(*entries: Raw) -> bytes:
    """Write local headers, data, central directory and end record by hand (APPNOTE.TXT §4.3)."""
    body = bytearray()
    central = bytearray()
    for entry in entries:
        if isinstance(entry.name, str):
            name = entry.name.encode("utf-8")
            flags = entry.flags | (0x800 if not entry.name.isascii() else 0)
        else:
            name, flags = entry.name, entry.flags
        if entry.payload is not None:
            payload = entry.payload
        elif entry.method == zipfile.ZIP_DEFLATED:
            payload = deflate(entry.content)
        else:
            payload = entry.content
        crc = zlib.crc32(entry.content) if entry.crc is None else entry.crc
        size = len(entry.content) if entry.file_size is None else entry.file_size
        offset = len(body)
        common = (flags, entry.method, 0, 0x21, crc, len(payload), size, len(name))
        body += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, *common, 0) + name + payload
        central += (
            struct.pack(
                "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, *common, 0, 0, 0, 0, entry.mode << 16, offset
            )
            + name
        )
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return bytes(body + central + end)


def outcome(data: bytes, limits: ArchiveLimits = DEFAULT_LIMITS) -> BlueprintFiles | ArchiveError:
    """What `read_archive` makes of `data`: the files, or the error it raised."""
    try:
        return read_archive(data, limits)
    except ArchiveError as error:
        return error


def problems_of(data: bytes, limits: ArchiveLimits = DEFAULT_LIMITS) -> tuple[str, ...]:
    """The problems `read_archive` reports for `data` (fails the test if it accepts it)."""
    with pytest.raises(ArchiveError) as caught:
        read_archive(data, limits)
    return caught.value.problems


# --- what real producers send ---------------------------------------------------------------------


def test_enapter_sdk_zip_of_a_directory(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meter"
    (path / "lib" / "modbus").mkdir(parents=True)
    (path / "manifest.yml").write_bytes(MANIFEST)
    (path / "firmware.lua").write_bytes(FIRMWARE)
    (path / "lib" / "modbus" / "registers.lua").write_bytes(b"return {}\n")
    buffer = io.BytesIO()
    # Verbatim from enapter.http.api.blueprints.Client._zip_directory (enapter 0.25.0).
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for file_path in path.rglob("*"):
            zip_file.write(file_path, arcname=file_path.relative_to(path))
    data = buffer.getvalue()
    assert {"lib/", "lib/modbus/"} <= set(zipfile.ZipFile(io.BytesIO(data)).namelist())

    blueprint = read_archive(data)

    assert blueprint.files == {
        "manifest.yml": MANIFEST,
        "firmware.lua": FIRMWARE,
        "lib/modbus/registers.lua": b"return {}\n",
    }
    assert blueprint.manifest == MANIFEST


def test_file_manager_zip_has_its_top_folder_stripped() -> None:
    data = zip_of(
        {
            "my-bp/": b"",
            "my-bp/manifest.yml": MANIFEST,
            "my-bp/lib/": b"",
            "my-bp/lib/util.lua": b"return 1\n",
            "my-bp/firmware.lua": FIRMWARE,
        }
    )

    assert read_archive(data).files == {
        "manifest.yml": MANIFEST,
        "firmware.lua": FIRMWARE,
        "lib/util.lua": b"return 1\n",
    }


def test_macos_compress_folder_junk_is_dropped() -> None:
    data = zip_of(
        {
            "my-bp/": b"",
            "my-bp/manifest.yml": MANIFEST,
            "my-bp/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "__MACOSX/": b"",
            "__MACOSX/my-bp/": b"",
            "__MACOSX/my-bp/._manifest.yml": b"\x00\x05\x16\x07",
            ".DS_Store": b"\x00\x00\x00\x01Bud1",
        }
    )

    assert read_archive(data).files == {"manifest.yml": MANIFEST}


def test_top_folder_is_kept_when_the_root_has_the_manifest() -> None:
    data = zip_of({"manifest.yml": MANIFEST, "lua/firmware.lua": FIRMWARE})

    assert set(read_archive(data).files) == {"manifest.yml", "lua/firmware.lua"}


@pytest.mark.parametrize(
    "names",
    [
        ["a/b/manifest.yml"],  # only one level is stripped
        ["one/manifest.yml", "two/firmware.lua"],  # two top folders
        ["my-bp/manifest.yml", "README.md"],  # a file beside the folder
        ["firmware.lua"],
        [],
    ],
)
def test_missing_manifest(names: list[str]) -> None:
    assert problems_of(zip_of(dict.fromkeys(names, b"x"))) == ("missed file manifest.yml",)


def test_windows_zip_without_unix_mode_is_accepted() -> None:
    # Windows tools leave the high half of external_attr zero (only the DOS "archive" bit is set).
    data = raw_zip(Raw("manifest.yml", MANIFEST, mode=0), Raw("firmware.lua", FIRMWARE, mode=0))

    assert read_archive(data).files == {"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE}


def test_stored_entries_are_read() -> None:
    data = zip_of({"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE}, compression=zipfile.ZIP_STORED)

    assert read_archive(data).files == {"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE}


def test_files_are_sorted_and_read_only() -> None:
    blueprint = read_archive(zip_of({"z.lua": b"", "manifest.yml": MANIFEST, "a.lua": b""}))

    assert list(blueprint.files) == ["a.lua", "manifest.yml", "z.lua"]
    with pytest.raises(TypeError):
        blueprint.files["evil.lua"] = b""  # type: ignore[index]


# --- not a zip, sizes, counts ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello", b"PK\x03\x04" + bytes(40), b"PK\x05\x06" + bytes(10)])
def test_not_a_zip(data: bytes) -> None:
    assert problems_of(data) == ("not a zip archive",)


def test_archive_size_limit_is_inclusive() -> None:
    data = zip_of({"manifest.yml": MANIFEST})

    assert read_archive(data, ArchiveLimits(archive_bytes=len(data))).manifest == MANIFEST
    assert problems_of(data, ArchiveLimits(archive_bytes=len(data) - 1)) == (
        f"archive is larger than {len(data) - 1} bytes",
    )


def test_archive_size_is_checked_before_parsing() -> None:
    assert problems_of(bytes(10 * MiB + 1)) == ("archive is larger than 10 MiB",)


def test_entry_count_limit_counts_directories_and_junk() -> None:
    data = zip_of({"manifest.yml": MANIFEST, "lib/": b"", ".DS_Store": b""})

    assert read_archive(data, ArchiveLimits(entries=3)).manifest == MANIFEST
    assert problems_of(data, ArchiveLimits(entries=2)) == ("archive has more than 2 entries",)


def test_a_flood_of_tiny_entries_is_refused_before_zipfile_parses_them() -> None:
    # 200,000 central-directory entries (9 MiB) all pointing at one empty local member.
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, 0, 0, 0, 1, 0) + b"a"
    entry = struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
    )
    central = (entry + b"a") * 200_000
    data = (
        local
        + central
        + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(central), len(local), 0)
    )

    problems, elapsed, peak = read_measured(data)

    assert problems == ("archive has more than 1000 entries",)
    assert elapsed < 0.25
    assert peak < MiB


def test_file_size_limit_is_inclusive() -> None:
    limits = ArchiveLimits(file_bytes=1000)

    assert read_archive(zip_of({"manifest.yml": MANIFEST, "big.lua": bytes(1000)}), limits).files[
        "big.lua"
    ] == bytes(1000)
    assert problems_of(zip_of({"manifest.yml": MANIFEST, "big.lua": bytes(1001)}), limits) == (
        "big.lua: file is larger than 1000 bytes",
    )


def test_manifest_has_its_own_limit_after_the_top_folder_is_stripped() -> None:
    big = b"#" * (256 * 1024 + 1)

    assert problems_of(zip_of({"my-bp/manifest.yml": big})) == (
        "my-bp/manifest.yml: file is larger than 256 KiB",
    )
    assert read_archive(zip_of({"manifest.yml": MANIFEST, "big.yml": big})).files["big.yml"] == big


def test_total_size_limit() -> None:
    limits = ArchiveLimits(file_bytes=MiB, total_bytes=3 * MiB)
    files = {"manifest.yml": MANIFEST} | {f"blob{i}.bin": bytes(MiB) for i in range(5)}

    assert problems_of(zip_of(files), limits) == ("archive unpacks to more than 3 MiB",)
    assert len(read_archive(zip_of(files), ArchiveLimits(file_bytes=MiB, total_bytes=6 * MiB)).files) == 6


# --- zip bombs and lying headers ------------------------------------------------------------------


@dataclass(frozen=True)
class Bomb:
    """A raw deflate stream of `size` zero bytes, about a thousand times smaller, and its CRC-32."""

    stream: bytes
    size: int
    crc: int


@pytest.fixture(scope="module")
def bomb() -> Bomb:
    """100 MiB of zeros deflated to ~100 KiB, built without ever holding 100 MiB.

    A full flush ends a deflate block on a byte boundary with no back-references across it, so one
    compressed MiB of zeros can be repeated; an empty final block closes the stream.
    """
    mib = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(100):
        crc = zlib.crc32(mib, crc)
    return Bomb(segment * 100 + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), 100 * MiB, crc)


def test_bomb_stream_is_what_it_claims(bomb: Bomb) -> None:
    decompressor = zlib.decompressobj(-15)
    total = 0
    chunk = decompressor.decompress(bomb.stream, MiB)
    while chunk:
        assert not chunk.strip(b"\x00")
        total += len(chunk)
        chunk = decompressor.decompress(decompressor.unconsumed_tail, MiB)
    assert decompressor.eof
    assert total == bomb.size
    assert len(bomb.stream) < 200 * 1024


def read_measured(data: bytes) -> tuple[tuple[str, ...], float, int]:
    """The problems, seconds taken and peak bytes allocated while reading `data`."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        problems = problems_of(data)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return problems, elapsed, peak


def test_zip_bomb_with_honest_header_is_refused_without_inflating(bomb: Bomb) -> None:
    data = raw_zip(
        Raw("manifest.yml", MANIFEST),
        Raw("firmware.lua", payload=bomb.stream, crc=bomb.crc, file_size=bomb.size),
    )

    problems, elapsed, peak = read_measured(data)

    assert problems == ("firmware.lua: file is larger than 10 MiB",)
    assert elapsed < 0.5
    assert peak < 4 * MiB


@pytest.mark.parametrize("crc_of", ["everything", "the claimed prefix"])
def test_zip_bomb_with_lying_header_is_inflated_only_up_to_its_claim(bomb: Bomb, crc_of: str) -> None:
    # The header claims 4 MiB (under every limit); the data inflates to 100 MiB. With the CRC of the
    # claimed prefix, zipfile alone would return those 4 MiB as if the member ended there.
    crc = bomb.crc if crc_of == "everything" else zlib.crc32(bytes(4 * MiB))
    data = raw_zip(
        Raw("manifest.yml", MANIFEST),
        Raw("firmware.lua", payload=bomb.stream, crc=crc, file_size=4 * MiB),
    )

    problems, elapsed, peak = read_measured(data)

    assert problems == ("firmware.lua: corrupt entry",)
    assert elapsed < 1.0
    assert peak < 16 * MiB  # about two copies of the claimed 4 MiB, never the 100 MiB


def test_zip_bomb_as_manifest(bomb: Bomb) -> None:
    data = raw_zip(Raw("manifest.yml", payload=bomb.stream, crc=bomb.crc, file_size=bomb.size))

    assert problems_of(data) == ("manifest.yml: file is larger than 256 KiB",)


def test_header_claiming_more_than_the_data_holds() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE, file_size=len(FIRMWARE) + 5))

    assert problems_of(data) == ("firmware.lua: corrupt entry",)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
@pytest.mark.parametrize("crc", [zlib.crc32(FIRMWARE), zlib.crc32(FIRMWARE[:10])])
def test_header_claiming_less_than_the_data_holds(method: int, crc: int) -> None:
    data = raw_zip(
        Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE, method, crc=crc, file_size=10)
    )

    assert problems_of(data) == ("firmware.lua: corrupt entry",)


def test_header_claiming_a_huge_file_is_refused_on_the_claim() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE, file_size=2**32 - 1))

    assert problems_of(data) == ("firmware.lua: file is larger than 10 MiB",)


@pytest.mark.parametrize(
    "entry",
    [
        Raw("firmware.lua", FIRMWARE, crc=0x12345678),
        Raw("firmware.lua", FIRMWARE, payload=b"\xff\xff\xff\xff"),  # not deflate data
        Raw("firmware.lua", FIRMWARE, payload=deflate(FIRMWARE)[:-4]),  # cut short
        Raw("firmware.lua", FIRMWARE, method=zipfile.ZIP_STORED, payload=FIRMWARE[:-1] + b"!"),
    ],
)
def test_corrupt_entry(entry: Raw) -> None:
    assert problems_of(raw_zip(Raw("manifest.yml", MANIFEST), entry)) == ("firmware.lua: corrupt entry",)


def test_local_header_disagreeing_with_central_directory_is_corrupt() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE))
    # Rename the member in its local header only.
    data = data.replace(b"firmware.lua" + deflate(FIRMWARE), b"firmware.lux" + deflate(FIRMWARE), 1)

    assert problems_of(data) == ("firmware.lua: corrupt entry",)


# --- path rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/passwd", "/etc/passwd: path is absolute"),
        ("../evil.lua", "../evil.lua: path leaves the blueprint directory"),
        ("lib/../../evil.lua", "lib/../../evil.lua: path leaves the blueprint directory"),
        ("lib/../firmware.lua", "lib/../firmware.lua: path contains a '..' component"),
        ("lib\\util.lua", "lib\\util.lua: path contains a backslash (zip paths use /)"),
        ("..\\evil.lua", "..\\evil.lua: path contains a backslash (zip paths use /)"),
        ("C:/evil.lua", "C:/evil.lua: path starts with a drive letter"),
        ("c:evil.lua", "c:evil.lua: path starts with a drive letter"),
        (b"evil.lua\x00.txt", "'evil.lua\\x00.txt': path contains a NUL character"),
        ("bell\x07.lua", "'bell\\x07.lua': path contains a control character"),
        ("new\nline.lua", "'new\\nline.lua': path contains a control character"),
        ("del\x7f.lua", "'del\\x7f.lua': path contains a control character"),
        ("c1\u0085.lua", "'c1\\x85.lua': path contains a control character"),
        ("lib//util.lua", "lib//util.lua: path has an empty component"),
        ("", "'': path has an empty component"),
        (".", ".: path has no file name"),
    ],
)
def test_path_rules(name: str | bytes, problem: str) -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw(name, b"x"))

    assert problems_of(data) == (problem,)


def test_path_rules_apply_to_directory_entries_and_junk() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("../up/"), Raw("__MACOSX/../../x"))

    assert problems_of(data) == (
        "../up/: path leaves the blueprint directory",
        "__MACOSX/../../x: path leaves the blueprint directory",
    )


def test_name_flagged_utf8_that_is_not() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw(b"caf\xe9.lua", b"x", flags=0x800))

    assert problems_of(data) == ("an entry name is marked as UTF-8 but is not valid UTF-8",)


def test_cp437_names_without_the_utf8_flag_are_fine() -> None:
    # Byte 0x82 is "é" in code page 437, the zip default when the UTF-8 flag is clear.
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw(b"caf\x82.lua", b"x"))

    assert read_archive(data).files == {"manifest.yml": MANIFEST, "café.lua": b"x"}


def test_utf8_names_with_the_flag() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("lib/Wärmepumpe.lua", b"x"))

    assert "lib/Wärmepumpe.lua" in read_archive(data).files


def test_dot_components_are_normalised_away() -> None:
    data = raw_zip(Raw("./manifest.yml", MANIFEST), Raw("./"), Raw("lib/./util.lua", b"x"))

    assert read_archive(data).files == {"manifest.yml": MANIFEST, "lib/util.lua": b"x"}


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["manifest.yml", "manifest.yml"], "manifest.yml: duplicate file name"),
        (
            ["manifest.yml", "lib/a.lua", "lib/./a.lua"],
            "lib/./a.lua: duplicate file name (same as lib/a.lua)",
        ),
        (["manifest.yml", "./manifest.yml"], "./manifest.yml: duplicate file name (same as manifest.yml)"),
        (["manifest.yml", "lib", "lib/a.lua"], "lib: path is both a file and a directory"),
        (["manifest.yml", "lib/", "lib"], "lib: path is both a file and a directory"),
    ],
)
def test_duplicates_and_clashes(names: list[str], problem: str) -> None:
    data = raw_zip(*(Raw(name, b"" if name.endswith("/") else MANIFEST) for name in names))

    assert problems_of(data) == (problem,)


# --- entry kinds and features -----------------------------------------------------------------------


def test_symlink_entry_made_by_zipfile() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.yml", MANIFEST)
        link = zipfile.ZipInfo("firmware.lua")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")  # Info-ZIP stores the link target as the content

    assert problems_of(buffer.getvalue()) == ("firmware.lua: symbolic links are not allowed",)


def test_symlinked_directory_and_manifest() -> None:
    data = raw_zip(
        Raw("manifest.yml", b"/etc/passwd", mode=stat.S_IFLNK | 0o777),
        Raw("lib/", mode=stat.S_IFLNK | 0o777),
    )

    assert problems_of(data) == (
        "manifest.yml: symbolic links are not allowed",
        "lib/: symbolic links are not allowed",
        "missed file manifest.yml",
    )


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_special_files(kind: int) -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("dev.lua", mode=kind | 0o644))

    assert problems_of(data) == ("dev.lua: not a regular file",)


def test_directory_by_mode_is_dropped() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("lib", mode=stat.S_IFDIR | 0o755))

    assert read_archive(data).files == {"manifest.yml": MANIFEST}


@pytest.mark.parametrize("flags", [0x1, 0x41])
def test_encrypted_entry(flags: int) -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE, flags=flags))

    assert problems_of(data) == ("firmware.lua: encrypted entries are not supported",)


def test_encrypted_manifest_is_not_also_missing() -> None:
    assert problems_of(raw_zip(Raw("manifest.yml", MANIFEST, flags=0x1))) == (
        "manifest.yml: encrypted entries are not supported",
    )


def test_patched_data_entry() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("firmware.lua", FIRMWARE, flags=0x20))

    assert problems_of(data) == ("firmware.lua: patched data entries are not supported",)


@pytest.mark.parametrize(
    ("method", "label"),
    [(zipfile.ZIP_BZIP2, "12 (bzip2)"), (zipfile.ZIP_LZMA, "14 (LZMA)")],
)
def test_unsupported_compression_made_by_zipfile(method: int, label: str) -> None:
    data = zip_of({"manifest.yml": MANIFEST}, compression=method)

    assert problems_of(data) == (
        f"manifest.yml: compression method {label} is not supported; use deflate or store",
    )


def test_unknown_compression_method() -> None:
    data = raw_zip(Raw("manifest.yml", MANIFEST), Raw("x.lua", b"x", method=77, payload=b"x"))

    assert problems_of(data) == ("x.lua: compression method 77 is not supported; use deflate or store",)


def test_every_problem_is_collected_in_entry_order() -> None:
    data = raw_zip(
        Raw("../evil.lua", b"x"),
        Raw("run.sh", mode=stat.S_IFLNK | 0o777),
        Raw("secret.lua", b"x", flags=0x1),
        Raw("broken.lua", b"x", crc=1),
        Raw("ok.lua", b"x"),
    )

    assert problems_of(data) == (
        "../evil.lua: path leaves the blueprint directory",
        "run.sh: symbolic links are not allowed",
        "secret.lua: encrypted entries are not supported",
        "broken.lua: corrupt entry",
        "missed file manifest.yml",
    )


# --- read_files (zips that are not blueprints) --------------------------------------------------------


def test_read_files_needs_no_manifest_and_keeps_the_top_folder() -> None:
    data = zip_of({"profiles/": b"", "profiles/energy/inverter.yml": b"x", "profiles/.DS_Store": b""})

    files = read_files(data)

    assert files == {"profiles/energy/inverter.yml": b"x"}
    with pytest.raises(TypeError):
        files["evil"] = b""  # type: ignore[index]


def test_read_files_has_the_same_safety_checks(bomb: Bomb) -> None:
    data = raw_zip(
        Raw("../evil.yml", b"x"),
        Raw("link.yml", mode=stat.S_IFLNK | 0o777),
        Raw("bomb.yml", payload=bomb.stream, crc=bomb.crc, file_size=bomb.size),
        Raw("big.yml", bytes(1001)),
    )

    with pytest.raises(ArchiveError) as caught:
        read_files(data, ArchiveLimits(file_bytes=1000))

    assert caught.value.problems == (
        "../evil.yml: path leaves the blueprint directory",
        "link.yml: symbolic links are not allowed",
        "bomb.yml: file is larger than 1000 bytes",
        "big.yml: file is larger than 1000 bytes",
    )


# --- ArchiveError and BlueprintFiles --------------------------------------------------------------------


def test_archive_error_message_and_pickling() -> None:
    error = ArchiveError("a.lua: corrupt entry", "missed file manifest.yml")

    assert str(error) == "a.lua: corrupt entry; missed file manifest.yml"
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ArchiveError)
    assert copy.problems == error.problems
    with pytest.raises(ValueError, match="at least one"):
        ArchiveError()


def test_blueprint_files_manifest() -> None:
    assert BlueprintFiles({MANIFEST_NAME: MANIFEST, "x.lua": b""}).manifest == MANIFEST


# --- write_archive --------------------------------------------------------------------------------------


def test_write_archive_is_deterministic_and_canonical() -> None:
    files = {"manifest.yml": MANIFEST, "lib/util.lua": b"return 1\n", "firmware.lua": FIRMWARE}

    data = write_archive(files)

    assert write_archive(dict(reversed(files.items()))) == data
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert [info.filename for info in infos] == ["firmware.lua", "lib/util.lua", "manifest.yml"]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
    assert {stat.S_IFMT(info.external_attr >> 16) for info in infos} == {stat.S_IFREG}
    assert read_archive(data).files == files


def test_write_archive_depends_on_content() -> None:
    files = {"manifest.yml": MANIFEST}

    assert write_archive(files) != write_archive({"manifest.yml": MANIFEST + b"\n"})
    assert write_archive(files) != write_archive(files | {"x.lua": b""})


@pytest.mark.parametrize(
    "name",
    [
        "../x.lua",
        "/x.lua",
        "a//b.lua",
        "lib/",
        "./x.lua",
        "a\\b.lua",
        "C:x",
        ".DS_Store",
        "__MACOSX/x",
        "",
        "\ud800",
    ],
)
def test_write_archive_refuses_paths_read_archive_would_not_return(name: str) -> None:
    with pytest.raises(ValueError, match="path"):
        write_archive({"manifest.yml": MANIFEST, name: b"x"})


def test_write_archive_refuses_a_file_that_is_also_a_directory() -> None:
    with pytest.raises(ValueError, match="both a file and a directory"):
        write_archive({"manifest.yml": MANIFEST, "lib": b"", "lib/a.lua": b""})


# --- content_digest -------------------------------------------------------------------------------------


def test_content_digest_ignores_order_timestamps_and_compression() -> None:
    files = {"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE, "lib/util.lua": b"return 1\n"}
    archives = [
        zip_of(files),
        zip_of(dict(reversed(files.items())), date_time=(2001, 2, 3, 4, 5, 6)),
        zip_of(files, compression=zipfile.ZIP_STORED),
        zip_of({"my-bp/" + name: content for name, content in files.items()}),
        write_archive(files),
    ]

    digests = {content_digest(read_archive(data).files) for data in archives}

    assert digests == {content_digest(files)}
    assert len(archives) == len(set(archives))  # the zips themselves all differ


def test_content_digest_sees_every_byte_and_boundary() -> None:
    files = {"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE}
    changed = FIRMWARE[:10] + bytes([FIRMWARE[10] ^ 1]) + FIRMWARE[11:]
    variants = [
        files,
        files | {"firmware.lua": changed},
        files | {"firmware.lua": FIRMWARE + b"\n"},
        {"manifest.yml": MANIFEST, "firmware.lux": FIRMWARE},
        files | {"empty.lua": b""},
        {"ab": b"c"},
        {"a": b"bc"},
        {"a": b"", "b": b"c"},
        {"a": b"b", "c": b""},
        {},
    ]

    assert len({content_digest(variant) for variant in variants}) == len(variants)
    assert len(content_digest(files)) == 64
    assert content_digest(files) == content_digest(dict(reversed(files.items())))


# --- properties -------------------------------------------------------------------------------------


@given(st.binary(max_size=4096))
def test_any_bytes_give_files_or_archive_error(data: bytes) -> None:
    result = outcome(data)

    if isinstance(result, ArchiveError):
        assert result.problems
        assert all(isinstance(problem, str) and problem for problem in result.problems)
    else:
        assert MANIFEST_NAME in result.files


SEEDS = [
    write_archive({"manifest.yml": MANIFEST, "firmware.lua": FIRMWARE * 20, "lib/ü.lua": b"x"}),
    zip_of(
        {"my-bp/": b"", "my-bp/manifest.yml": MANIFEST, "my-bp/a.lua": b"a"}, compression=zipfile.ZIP_STORED
    ),
]


@st.composite
def mutated_zips(draw: st.DrawFn) -> bytes:
    """A valid archive with a few bytes overwritten, inserted or deleted: headers that almost parse."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["set", "field", "insert", "delete"]))
        if edit == "set":
            data[at] = draw(st.integers(0, 255))
        elif edit == "field":
            width = draw(st.sampled_from([2, 4, 8]))
            data[at : at + width] = draw(st.binary(min_size=width, max_size=width))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 32))]
    return bytes(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_zips())
def test_mutated_zips_give_files_or_archive_error(data: bytes) -> None:
    result = outcome(data, ArchiveLimits(file_bytes=64 * 1024, total_bytes=128 * 1024))

    if isinstance(result, ArchiveError):
        assert result.problems
        assert all(isinstance(problem, str) and problem for problem in result.problems)
    else:
        assert MANIFEST_NAME in result.files
        assert all(len(content) <= 64 * 1024 for content in result.files.values())


COMPONENT = st.text(
    st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/\\"), min_size=1, max_size=8
).filter(lambda part: part not in {".", "..", ".DS_Store", "Thumbs.db", "__MACOSX"} and part[1:2] != ":")
PATH = st.lists(COMPONENT, min_size=1, max_size=3).map("/".join)


@given(st.dictionaries(PATH, st.binary(max_size=300), max_size=6), st.binary(max_size=300))
def test_written_archives_read_back(files: dict[str, bytes], manifest: bytes) -> None:
    files = files | {MANIFEST_NAME: manifest}
    folders = {path.rsplit("/", 1)[0] for path in files if "/" in path}
    assume(not any(folder == path or folder.startswith(path + "/") for folder in folders for path in files))

    data = write_archive(files)

    assert read_archive(data).files == files
    assert write_archive(dict(reversed(files.items()))) == data
