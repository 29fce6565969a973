#!/usr/bin/env python3
"""The project's two commands, runnable with nothing but Python installed.

    python3 tasks.py run     # quickstart: a short headless run against the built-in server
    python3 tasks.py test    # the test suite
    python3 tasks.py bench   # benchmarks (figures, not pass/fail)
    python3 tasks.py lint    # ruff;  python3 tasks.py typecheck  # mypy

Each creates .venv and installs loadgen with its test dependencies on first use
(again whenever pyproject.toml, setup.py or the C accelerator's source changes; the accelerator
is built when gcc and OpenSSL's headers are there, else the pure-Python record layer is used).
Extra arguments are passed on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"


#: What the install depends on: a change to any of them installs again (the C accelerator is rebuilt).
INSTALL_INPUTS = ("pyproject.toml", "setup.py", "loadgen/protocol/native/_aead.c")


def ensure_venv() -> None:
    wanted = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in INSTALL_INPUTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("tasks: creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("tasks: installing loadgen and its dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    commands = {
        "run": [str(BIN / "loadgen"), "run", "scenarios/quickstart.yaml"],
        "test": [str(BIN / "python"), "-m", "pytest"],
        "bench": [str(BIN / "python"), "benchmarks/bench_dtls.py"],
        "lint": [str(BIN / "ruff"), "check", "loadgen", "benchmarks", "tests", "tasks.py"],
        "typecheck": [str(BIN / "mypy"), "loadgen"],
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    return subprocess.call([*commands[argv[0]], *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
