"""Compare two nnvis report folders: report.json apart from timings (numbers to rel 1e-3), and every PNG
(max grey-level difference per file). Why: to check that a change of how a run is computed (batches,
engines) leaves the report as it was. Usage: python benchmarks/compare_reports.py A B"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TIMING = {"timing", "seconds", "seconds_per_image", "engine", "created", "started", "elapsed"}

def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMING}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v

diffs = []
def walk(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                diffs.append((where + "/" + k, "missing on one side"))
                continue
            walk(a[k], b[k], where + "/" + k)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append((where, f"length {len(a)} vs {len(b)}"))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        if not np.isclose(a, b, rtol=1e-3, atol=1e-4):
            diffs.append((where, f"{a} vs {b}"))
    elif a != b:
        diffs.append((where, f"{str(a)[:80]} vs {str(b)[:80]}"))

A, B = Path(sys.argv[1]), Path(sys.argv[2])
walk(strip(json.loads((A / "report.json").read_text())), strip(json.loads((B / "report.json").read_text())))
print(f"report.json: {len(diffs)} differences beyond rel 1e-3")
for d in diffs[:40]:
    print("  ", *d)
worst = {}
pngs = sorted(p.relative_to(A) for p in A.rglob("*.png"))
missing = [p for p in pngs if not (B / p).is_file()]
for p in pngs:
    if (B / p).is_file():
        x = np.asarray(Image.open(A / p), dtype=np.int16)
        y = np.asarray(Image.open(B / p), dtype=np.int16)
        worst[str(p)] = int(np.abs(x - y).max()) if x.shape == y.shape else 999
print(f"PNGs: {len(pngs)} compared, {len(missing)} missing in B, identical {sum(v == 0 for v in worst.values())}, "
      f"max diff <= 2: {sum(v <= 2 for v in worst.values())}")
for p, v in sorted(worst.items(), key=lambda kv: -kv[1])[:15]:
    if v > 0:
        print(f"   {v:4d}  {p}")
