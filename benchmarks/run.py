"""Run every benchmark and print its tables: ``python benchmarks/run.py [name ...]``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    names = argv or sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    for name in names:
        print(f"## {name}\n", flush=True)
        importlib.import_module(f"bench_{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
