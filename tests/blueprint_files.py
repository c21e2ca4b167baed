"""Blueprint directories written by tests, for the SDK to zip and upload as a user's would be."""

from __future__ import annotations

from pathlib import Path


def write_blueprint(directory: Path, manifest: str, **files: str) -> Path:
    """A new blueprint directory: `manifest.yml` and the given extra files (name -> text)."""
    directory.mkdir()
    (directory / "manifest.yml").write_text(manifest)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory
