"""What made a result: the code fingerprint follows code, not prose; weights are named by content."""

from __future__ import annotations

from metaprompt_lite.provenance import RANDOM_WEIGHTS, code_fingerprint, code_text, file_sha256, weights_id

SOURCE = '''"""Module docstring."""

def f(x):
    """What f does."""
    # a comment
    y = x + 1  # another

    return y
'''


def test_code_text_ignores_docstrings_comments_and_blank_lines_but_not_code():
    reworded = SOURCE.replace("What f does.", "Something else entirely.").replace("# a comment", "# changed")
    assert code_text(reworded) == code_text(SOURCE.replace("\n\n    return", "\n    return"))
    assert code_text(SOURCE.replace("x + 1", "x + 2")) != code_text(SOURCE)
    assert code_text(SOURCE.replace("    return y", "    pass\nreturn_y = 1")) != code_text(SOURCE)
    assert "'a string'" in code_text("x = 'a string'\n")  # a string that is not a docstring counts


def test_the_fingerprint_moves_with_the_code_of_any_module(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text(SOURCE)
    (package / "sub" / "b.py").write_text("z = 1\n")
    before = code_fingerprint(str(package))
    (package / "a.py").write_text(SOURCE.replace("What f does.", "Reworded."))
    code_fingerprint.cache_clear()
    assert code_fingerprint(str(package)) == before
    (package / "sub" / "b.py").write_text("z = 2\n")
    code_fingerprint.cache_clear()
    assert code_fingerprint(str(package)) != before
    code_fingerprint.cache_clear()


def test_weights_are_named_by_content_tag_or_random(tmp_path):
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(b"weights")
    digest = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"  # sha256sum of b"weights"
    assert file_sha256(checkpoint) == digest and weights_id(str(checkpoint)) == "sha256:" + digest[:16]
    assert weights_id(None) == RANDOM_WEIGHTS and weights_id("openai") == "openai"
