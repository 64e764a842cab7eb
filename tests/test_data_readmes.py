"""Every sha256 a README under data/ quotes is the sha256 of the file it names: a checkpoint rebuilt
without its README (or the other way round) fails here instead of misleading a reader. The GRAM
README's wall times are likewise the artifacts' own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metaprompt_lite.provenance import file_sha256

REPO = Path(__file__).resolve().parents[1]
READMES = sorted((REPO / "data").rglob("README.md"))
# a quoted hex digest on a line that says sha256: the whole digest or its first digits and an ellipsis
SHA = re.compile(r"`([0-9a-f]{8,64})(?:…|\.\.\.)?`")
QUOTED = re.compile(r"`([^`\s]+)`")


def quoted_shas(text: str) -> list[tuple[int, str, Path | None]]:
    """(line number, digest, candidate names) of every sha256 quoted in a README's ``text``: the
    candidates are the quoted words before the digest, in its line and the lines of its paragraph or
    table above it; :func:`resolve` picks the file among them."""
    hits, block = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            block = []
            continue
        if "sha256" in line.lower():
            for match in SHA.finditer(line):
                before = " ".join(block) + " " + line[:match.start()]
                names = [n for n in QUOTED.findall(before) if not SHA.fullmatch(f"`{n}`")]
                hits.append((number, match.group(1), names))
        block.append(line)
    return hits


def resolve(readme: Path, names: list[str]) -> Path | None:
    """The last of ``names`` that is a file, relative to the repository or to the README's folder."""
    for name in reversed(names):
        for base in (REPO, readme.parent):
            if (base / name).is_file():
                return base / name
    return None


def test_the_parser_finds_a_digest_and_the_file_it_names(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    text = "| file | `weights.bin` (fp16) |\n| sha256 | `2d711642b726b044…` |\n\nno digest here `abc`\n"
    [(line, digest, names)] = quoted_shas(text)
    assert (line, digest) == (2, "2d711642b726b044")
    assert resolve(tmp_path / "README.md", names) == tmp_path / "weights.bin"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_sha256_in_a_data_readme_is_the_file_it_names(readme):
    for line, digest, names in quoted_shas(readme.read_text(encoding="utf-8")):
        path = resolve(readme, names)
        assert path is not None, f"{readme.relative_to(REPO)}:{line}: sha256 `{digest}` names no file that exists"
        actual = file_sha256(path)
        assert actual.startswith(digest), (f"{readme.relative_to(REPO)}:{line}: sha256 `{digest}…` is not "
                                           f"{path.relative_to(REPO)}'s ({actual[:16]}…)")


def test_the_gram_readme_gives_each_artifact_its_recorded_build_time():
    """data/gram/README.md's wall times are the artifacts' own ``meta["seconds"]`` (to the second): a
    rebuild without the README, or a time typed from another run, fails here."""
    from metaprompt_lite.checkpoints import load_checkpoint

    readme = REPO / "data" / "gram" / "README.md"
    rows = re.findall(r"^\| `([^`]+\.pt)` \|.*\| (\d+) s \|$", readme.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(rows) == 2, f"expected the two GRAM artifacts' rows with a time, found {rows}"
    for name, seconds in rows:
        recorded = load_checkpoint(readme.parent / name)["meta"]["seconds"]
        assert int(seconds) == round(recorded), f"{name}: the README says {seconds} s, its meta {recorded:.1f} s"
