"""``loadgen validate FILE``: exit 0 for good scenarios; exit 2, one located line on stderr, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BAD_DIR = Path(__file__).resolve().parent / "scenarios_bad"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
# A spread of failure kinds: malformed YAML, a Python tag, a missing file, bad secret, cross-field.
BAD = [
    ("tab-indent.yaml", 4, "malformed YAML"),
    ("python-tag.yaml", 6, "unsupported YAML tag"),
    ("missing-key-file.yaml", 6, "psk.key_file: expected an existing file"),
    ("bad-hex.yaml", 7, "psk.key: expected a hex string"),
    ("bad-duration.yaml", 7, "ping.interval: expected a duration like '5s' or '250ms', got 'fast'"),
    ("duplicate-target.yaml", 7, "targets[1].name: duplicate target name 'gw1'"),
    ("empty.yaml", 1, "got an empty file"),
]


def validate(path: Path | str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("LOADGEN_TEST_UNSET_VARIABLE_7F3A", None)
    return subprocess.run(
        [sys.executable, "-m", "loadgen", "validate", str(path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_good_scenario_validates(path: Path) -> None:
    result = validate(path.relative_to(ROOT))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "line", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_scenario_exits_2_with_location(name: str, line: int, fragment: str) -> None:
    rel = Path("tests") / "scenarios_bad" / name
    result = validate(rel)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{rel}:{line}: " in lines[0] and fragment in lines[0]


def test_bad_hex_value_not_on_stderr() -> None:
    result = validate(BAD_DIR / "bad-hex.yaml")
    assert result.returncode == 2 and "zz55" not in result.stderr


def test_missing_file_exits_2() -> None:
    result = validate("no/such/scenario.yaml")
    assert result.returncode == 2
    assert "no/such/scenario.yaml" in result.stderr and "Traceback" not in result.stderr
