"""A blueprint package: the archive's files and the manifest they carry, checked together.

Pure. Turns uploaded bytes into what the store keeps (the content digest that makes uploading the
same content twice give the same blueprint, the name it is found by, the compiled manifest) or
into every problem found, worded for the person who wrote the blueprint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from gateway.blueprints.archive import (
    MANIFEST_NAME,
    ArchiveError,
    content_digest,
    read_archive,
    write_archive,
)
from gateway.blueprints.manifest import Manifest, ManifestError, parse_manifest

_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")


class BlueprintError(Exception):
    """The upload is not a usable blueprint; `problems` says why, one line each."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Package:
    """A blueprint that passed every check."""

    files: Mapping[str, bytes]
    manifest: Manifest
    digest: str

    @property
    def name(self) -> str:
        """The `{name}` of `/v3/blueprints/enapter/{name}/{tag}`: the display name in snake case."""
        return _NOT_NAME_CHARS.sub("_", self.manifest.display_name.casefold()).strip("_") or "blueprint"


def load_package(data: bytes) -> Package:
    """Check an uploaded zip: the archive is safe, the manifest valid, the Lua files it names
    are in the archive. Raises BlueprintError with every problem found."""
    try:
        files = read_archive(data).files
    except ArchiveError as exc:
        raise BlueprintError(exc.problems) from None
    try:
        manifest = parse_manifest(files[MANIFEST_NAME])
    except ManifestError as exc:
        raise BlueprintError(tuple(f"{MANIFEST_NAME}: {problem}" for problem in exc.problems)) from None
    missing = [path for path in manifest.referenced_files if not _present(path, files)]
    if missing:
        raise BlueprintError(tuple(f"missed file {path}" for path in missing))
    return Package(files=files, manifest=manifest, digest=content_digest(files))


def _present(path: str, files: Mapping[str, bytes]) -> bool:
    """A file, or for a directory reference (ending in "/") any file under it."""
    if path.endswith("/"):
        return any(name.startswith(path) for name in files)
    return path in files


def compiled_archive(original: bytes, manifest: Mapping[str, object]) -> bytes:
    """The COMPILED view: the uploaded files with `manifest.yml` replaced by the compiled manifest.

    `original` was checked when it was uploaded; the compiled manifest is written as YAML so that
    the result is itself an uploadable blueprint.
    """
    files = dict(read_archive(original).files)
    files[MANIFEST_NAME] = yaml.safe_dump(dict(manifest), sort_keys=False, allow_unicode=True).encode()
    return write_archive(files)
