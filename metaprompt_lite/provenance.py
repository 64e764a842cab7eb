"""What made a result: the code version and the identity of a backbone's weights.

Every results row records them (with the run's protocol and budget, see ``run.row_settings``), so a
results file can say what produced each number, a resumed benchmark never mixes two settings, and a
report never averages rows that were made differently.

- :func:`code_version` is ``<package version>+<fingerprint>``. The fingerprint hashes the package's
  source with comments and docstrings removed: editing prose leaves it alone, editing code changes it.
- :func:`weights_id` names a backbone's weights: the sha256 of a checkpoint file, an open_clip tag
  (``openai``: the tag is the identity of a published download), or ``random`` for seeded random
  weights.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import platform
import re
import tokenize
from functools import lru_cache
from pathlib import Path

from metaprompt_lite import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
RANDOM_WEIGHTS = "random"
_SKIPPED_TOKENS = (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER)


def code_text(source: str) -> str:
    """The tokens of ``source`` that make it run: docstrings, comments and blank lines dropped,
    indentation kept as INDENT/DEDENT tokens (so moving a line into or out of a block counts)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.add((first.lineno, first.col_offset))
    tokens = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _SKIPPED_TOKENS:
            continue
        if token.type == tokenize.STRING and token.start in docstrings:
            continue
        tokens.append(token.string if token.type not in (tokenize.INDENT, tokenize.DEDENT)
                      else tokenize.tok_name[token.type])
    return " ".join(tokens)


@lru_cache(maxsize=None)
def code_fingerprint(package_dir: str = str(PACKAGE_DIR)) -> str:
    """12 hex digits of sha256 over every ``.py`` file of the package (path and :func:`code_text`)."""
    digest = hashlib.sha256()
    root = Path(package_dir)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(code_text(path.read_text(encoding="utf-8")).encode() + b"\0")
    return digest.hexdigest()[:12]


def code_version() -> str:
    """``<version>+<fingerprint>`` of the code that is running, e.g. ``0.2.0+3f2a9c0d1e4b``."""
    return f"{__version__}+{code_fingerprint()}"


_sha256_memo: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: each file hashed once per process


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), memoised by (path, size, modification time, inode): a benchmark
    or a test run loads the same 26 MB checkpoint many times, and a changed file has a new key."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _sha256_memo:
        digest = hashlib.sha256()
        with open(resolved, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _sha256_memo[key] = digest.hexdigest()
    return _sha256_memo[key]


def weights_id(pretrained: str | None) -> str:
    """How a results row names a backbone's weights: ``sha256:<first 16 hex>`` of a checkpoint file,
    the open_clip tag as given (``openai``), or ``random`` (seeded random weights)."""
    if pretrained is None:
        return RANDOM_WEIGHTS
    if Path(pretrained).is_file():
        return "sha256:" + file_sha256(pretrained)[:16]
    return str(pretrained)


# the machine facts that can change a result's last bits: which kernels torch picks (its CPU capability,
# e.g. AVX2 or AVX512), and the versions of the libraries behind them (MKL for matrix products, oneDNN
# for convolutions); the CPU model says where to look when two machines disagree
MACHINE_KEYS = ("cpu", "cpu_capability", "mkl", "onednn")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), or ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """:data:`MACHINE_KEYS` of this machine: CPU model, torch's CPU capability, MKL and oneDNN versions
    (``none`` when torch was built without one), as ``bench_meta.json`` records them."""
    import torch  # here, not at the top: the command line reads code_version without loading torch

    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version (\d[\w.]*)", config)
    onednn = re.search(r"MKL-DNN v(\d[\w.]*)", config)
    return {"cpu": cpu_model(), "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "mkl": mkl.group(1) if mkl else "none", "onednn": onednn.group(1) if onednn else "none"}
