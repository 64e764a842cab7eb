"""The repository stands on its own: no tracked file cites the maintainers' private notes folder.

Those notes lived beside the repository, in a folder a user's clone does not have, so a citation of
one is a dead link. Facts from them belong in the project's own docs (``docs/methods.md``,
``data/README.md``), cited there. The folder's name is built from parts below, so that this test
does not find itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES_FOLDER = "sha" + "red" + "/"


def tracked_files() -> list[Path]:
    """Every file git tracks in this repository (the working-tree copy is what gets read)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in out.decode().split("\0") if name]


def files_naming(needle: str, paths: list[Path], root: Path = ROOT) -> list[str]:
    """The paths (relative to ``root``) whose bytes contain ``needle``, binary files included;
    tracked files missing from the working tree are skipped."""
    return [str(path.relative_to(root)) for path in paths
            if path.is_file() and needle.encode() in path.read_bytes()]


def test_the_scan_finds_a_citation_wherever_it_is(tmp_path):
    (tmp_path / "a.md").write_text(f"see ../{NOTES_FOLDER}METHODS.md\n")
    (tmp_path / "b.py").write_text("shared = 1  # a variable named like the folder is no citation\n")
    (tmp_path / "c.bin").write_bytes(b"\x00\xff" + NOTES_FOLDER.encode())
    paths = [tmp_path / name for name in ("a.md", "b.py", "c.bin", "gone.md")]
    assert files_naming(NOTES_FOLDER, paths, tmp_path) == ["a.md", "c.bin"]


def test_no_tracked_file_names_the_notes_folder():
    paths = tracked_files()
    assert len(paths) > 100, "git ls-files listed too few files to be this repository"
    hits = files_naming(NOTES_FOLDER, paths)
    assert not hits, (f"these tracked files name {NOTES_FOLDER!r}, which a clone does not have; cite "
                      f"docs/methods.md or data/README.md instead: {hits}")
