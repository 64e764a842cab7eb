"""Do the committed official rows come out the same under other CPU kernel paths?

Runs an official-budget slice (every base-to-new method x DATASETS x seed 1) once per kernel path,
each in its own process with the environment that selects the path (``ATEN_CPU_CAPABILITY`` picks
torch's own vectorised kernels; ``MKL_ENABLE_INSTRUCTIONS`` caps MKL's GEMM code), then compares
every row with the committed ``results/official/b2n.csv`` and with the machine's own path: how many
rows differ, by how much (points and test images), and how many training curves differ at all (a
curve's losses at every step: equal curves are the same bits). Resumes: a path's rows already on
disk are kept.

    python experiments/kernel-paths/kernel_paths.py                       # every path, the default slice
    python experiments/kernel-paths/kernel_paths.py --paths native avx2   # some paths
    python experiments/kernel-paths/kernel_paths.py --src /path/to/clone  # the package of another tree

Writes ``runs/kernel-paths/<path>/b2n.csv`` (outside git) and ``kernel_paths.json`` beside this file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("fashion", "emoji-novel-food", "cards")  # the three cheapest at the official budgets
# the base-to-new grid as the slice ran it (before the bare-name zero-shot row joined it)
METHODS = ("zsclip", "zsclip-ens", "coop", "cocoop", "ivlp", "maple", "metaprompt", "metaprompt-clean", "prometar",
           "prometar-base", "gram-coop", "gram-ivlp")
PATHS = {  # name: the environment that selects it (on top of the machine's own)
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
COLUMNS = ("base", "new", "hm")


def run_path(name: str, src: Path, out: Path, datasets, workers: int) -> Path:
    env = {**os.environ, **PATHS[name], "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "metaprompt_lite", "bench", "--suite", "b2n", "--seeds", "1",
               "--methods", *METHODS, "--datasets", *datasets, "--out-dir", str(out / name), "--no-report", "--workers", str(workers)]
    subprocess.run(command, cwd=src, env=env, check=True)
    return out / name / "b2n.csv"


def machine(name: str) -> dict:
    """The machine as ``bench_meta.json`` records it (``provenance.machine``: CPU, torch's kernel
    capability, MKL and oneDNN), read in a process under this path's environment."""
    probe = "import json; from metaprompt_lite.provenance import machine; print(json.dumps(machine()))"
    env = {**os.environ, **PATHS[name], "PYTHONPATH": str(ROOT)}
    facts = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return {**json.loads(facts.stdout), "env": PATHS[name]}


def rows(path: Path) -> dict[tuple[str, str, str], dict]:
    return {(r["method"], r["dataset"], r["seed"]): r for r in csv.DictReader(path.open())}


def test_images(datasets) -> dict[str, dict[str, int]]:
    """Test images of each half (base, new) of each dataset, as the bench's comparison counts them
    (``compare.images_per_column``): one image is 100/n points of that half."""
    sys.path.insert(0, str(ROOT))
    from metaprompt_lite.compare import images_per_column
    from metaprompt_lite.data.store import load_dataset

    return {name: images_per_column(load_dataset(name), None) for name in datasets}


def compare(ours: dict, reference: dict, sizes: dict) -> dict:
    """Rows of ``ours`` that are also in ``reference``: how many differ in base/new/hm, the largest
    |difference| in points, and in test images of one half."""
    shared = sorted(set(ours) & set(reference))
    differing, worst_points, worst_images = [], 0.0, 0.0
    for key in shared:
        deltas = {c: abs(float(ours[key][c]) - float(reference[key][c])) for c in COLUMNS}
        if any(d > 0 for d in deltas.values()):
            differing.append("/".join(key))
        worst_points = max(worst_points, *deltas.values())
        worst_images = max(worst_images, *(deltas[h] * sizes[key[1]][h] / 100 for h in ("base", "new")))
    return {"rows": len(shared), "differing": len(differing), "differing_rows": differing,
            "max_abs_points": round(worst_points, 4), "max_abs_images": round(worst_images, 2)}


def compare_curves(ours: Path, reference: Path) -> dict:
    """Training curves (curves/*.json) of ``ours`` that ``reference`` also has: how many have other
    losses at any step, and the largest |difference| of a loss. Equal curves are the same bits."""
    names = sorted(p.name for p in ours.glob("*.json") if (reference / p.name).is_file())
    differing, worst = 0, 0.0
    for name in names:
        a = [h.get("loss") for h in json.loads((ours / name).read_text())]
        b = [h.get("loss") for h in json.loads((reference / name).read_text())]
        if a != b:
            differing += 1
            worst = max([worst] + [abs(x - y) for x, y in zip(a, b) if x is not None and y is not None])
    return {"curves": len(names), "differing": differing, "max_abs_loss": round(worst, 6)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--src", type=Path, default=ROOT, help="tree whose package runs (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kernel-paths")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    committed = rows(ROOT / "results" / "official" / "b2n.csv")
    sizes = test_images(args.datasets)
    result = {"slice": {"datasets": args.datasets, "seeds": [1], "protocol": "official"}, "paths": {}}
    made = {}
    for name in args.paths:
        made[name] = rows(run_path(name, args.src.resolve(), args.out, args.datasets, args.workers))
        result["paths"][name] = {"machine": machine(name),
                                 "against_committed": compare(made[name], committed, sizes),
                                 "curves_against_committed": compare_curves(args.out / name / "curves",
                                                                            ROOT / "results" / "official" / "curves")}
        print(name, json.dumps(result["paths"][name]["against_committed"]),
              json.dumps(result["paths"][name]["curves_against_committed"]), flush=True)
    first = args.paths[0]
    for name in args.paths[1:]:
        result["paths"][name][f"against_{first}"] = compare(made[name], made[first], sizes)
        result["paths"][name][f"curves_against_{first}"] = compare_curves(args.out / name / "curves",
                                                                           args.out / first / "curves")
        print(f"{name} vs {first}", json.dumps(result["paths"][name][f"against_{first}"]),
              json.dumps(result["paths"][name][f"curves_against_{first}"]))
    (Path(__file__).parent / "kernel_paths.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
