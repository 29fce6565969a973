"""Hostile input files: devices, FIFOs, directories and huge files given as keys, CSVs or scenarios.

Each one must end the real ``loadgen`` command with exit status 2 and one message that names
the place (the CLI option, or the scenario file, line and key), without a traceback, without
reading a device until memory runs out and without blocking on a FIFO. The children run under
an address-space limit, so a regression fails with MemoryError instead of eating the machine,
and under a timeout, so a regression that blocks on a FIFO fails instead of hanging.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import child_env

from loadgen.protocol.credentials import CSV_FILE_CAP, KEY_FILE_CAP
from loadgen.scenario import ScenarioError, load_scenario
from loadgen.scenario.loader import SCENARIO_FILE_CAP

pytestmark = pytest.mark.timeout(180)

#: Far more than any child needs (about 50 MB), far less than the machine has.
_CHILD_MEMORY = 1 << 30
_CHILD_TIMEOUT = 30.0
#: Sparse: over every cap (scenario 64 MiB, CSV 256 MiB) without a byte on disk.
_HUGE = (1 << 30) + 1
KINDS = ("dev-zero", "dev-urandom", "fifo", "huge-sparse", "directory")
# What the message says about each kind.
SAYS = {
    "dev-zero": "not a regular file (a character device)",
    "dev-urandom": "not a regular file (a character device)",
    "fifo": "not a regular file (a FIFO)",
    "huge-sparse": "over the",
    "directory": "not a regular file (a directory)",
}


def hostile_file(kind: str, tmp_path: Path) -> Path:
    """A path of the given kind (tmp ones are made fresh in ``tmp_path``)."""
    if kind == "dev-zero":
        return Path("/dev/zero")
    if kind == "dev-urandom":
        return Path("/dev/urandom")
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes: a reader that blocks on it hangs forever
    elif kind == "huge-sparse":
        with open(path, "wb") as f:
            f.truncate(_HUGE)
    else:
        path.mkdir()
    return path


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_MEMORY, _CHILD_MEMORY))


def loadgen(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m loadgen ARGS``, bounded in memory and time (a timeout is a failure)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "loadgen", *map(str, args)], cwd=cwd, env=child_env(),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_CHILD_TIMEOUT,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        pytest.fail(f"loadgen {' '.join(map(str, args))} still running after {_CHILD_TIMEOUT:g} s "
                    f"(blocked on its input?): stderr {exc.stderr!r}")


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- serve dtls: --psk-file and --psk-csv ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ["--psk-file", "--psk-csv"])
def test_serve_key_option_refuses_a_hostile_file(option: str, kind: str, tmp_path: Path) -> None:
    path = hostile_file(kind, tmp_path)
    result = loadgen("serve", "dtls", "--port", "0", option, path, cwd=tmp_path)
    assert_usage_error(result, f"{option}: ", str(path), SAYS[kind])
    assert "listening" not in result.stdout


def test_serve_tls_key_option_refuses_a_device(tmp_path: Path) -> None:
    result = loadgen("serve", "tls", "--port", "0", "--psk-file", "/dev/zero", cwd=tmp_path)
    assert_usage_error(result, "--psk-file: ", "/dev/zero", SAYS["dev-zero"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ["--cert", "--key", "--ca-file"])
def test_serve_tls_pem_option_refuses_a_hostile_file(option: str, kind: str, tmp_path: Path) -> None:
    """OpenSSL itself would block for ever on a FIFO: the path is checked before it gets it."""
    path = hostile_file(kind, tmp_path)
    result = loadgen("serve", "tls", "--port", "0", "--psk-hex", "00" * 16, option, path, cwd=tmp_path)
    assert_usage_error(result, f"{option} ", str(path), SAYS[kind])
    assert "listening" not in result.stdout


@pytest.mark.parametrize(("option", "cap"), [("--psk-file", KEY_FILE_CAP), ("--psk-csv", CSV_FILE_CAP)])
def test_serve_key_option_names_the_cap(option: str, cap: int, tmp_path: Path) -> None:
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(cap + 1)
    line = assert_usage_error(loadgen("serve", "dtls", "--port", "0", option, path, cwd=tmp_path), option)
    assert re.search(r"over the \d+ [KMG]iB limit", line), line


# --- validate: the files a scenario reads -------------------------------------------------

# (key path, scenario text with {path}, line of the key)
SCENARIO_KEYS = {
    "psk.key_file": ("name: hostile\nclients: {{count: 1}}\nrun_time: 10s\npsk:\n  key_file: '{path}'\n", 5),
    "psk.csv": ("name: hostile\nclients: {{count: 1}}\nrun_time: 10s\npsk:\n  csv: '{path}'\n", 5),
    "psk.derive.master_file": (
        "name: hostile\nclients: {{count: 1}}\nrun_time: 10s\npsk:\n  derive:\n    master_file: '{path}'\n", 6),
    "tls.ca_file": (
        "name: hostile\nclients: {{count: 1}}\nrun_time: 10s\ntargets:\n"
        "  - {{name: t, host: 127.0.0.1, port: 4433, protocol: tls}}\ntls:\n  ca_file: '{path}'\n", 7),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["psk.key_file", "psk.csv", "psk.derive.master_file"])
def test_validate_refuses_a_hostile_scenario_key_file(key: str, kind: str, tmp_path: Path) -> None:
    path = hostile_file(kind, tmp_path)
    text, line = SCENARIO_KEYS[key]
    (tmp_path / "s.yaml").write_text(text.format(path=path))
    result = loadgen("validate", "s.yaml", cwd=tmp_path)
    assert_usage_error(result, f"s.yaml:{line}: {key}: ", SAYS[kind])
    assert result.stdout == ""


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_validate_refuses_a_hostile_tls_file(kind: str, tmp_path: Path) -> None:
    path = hostile_file(kind, tmp_path)
    text, line = SCENARIO_KEYS["tls.ca_file"]
    (tmp_path / "s.yaml").write_text(text.format(path=path))
    assert_usage_error(loadgen("validate", "s.yaml", cwd=tmp_path), f"s.yaml:{line}: tls.ca_file: ", SAYS[kind])


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge-sparse", "directory"])
def test_validate_refuses_a_hostile_scenario_file(kind: str, tmp_path: Path) -> None:
    path = hostile_file(kind, tmp_path)
    assert_usage_error(loadgen("validate", path, cwd=tmp_path), str(path), SAYS[kind])


@pytest.mark.parametrize(("key", "cap"), [("psk.key_file", KEY_FILE_CAP), ("psk.csv", CSV_FILE_CAP)])
def test_scenario_key_file_just_over_the_cap_is_refused_in_process(key: str, cap: int, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(cap + 1)
    text, line = SCENARIO_KEYS[key]
    (tmp_path / "s.yaml").write_text(text.format(path=big))
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "s.yaml")
    assert (info.value.line, info.value.key_path) == (line, key)
    assert re.search(r"over the \d+ [KMG]iB limit", info.value.message), info.value.message


def test_scenario_file_cap_leaves_room_for_large_scenarios() -> None:
    # 40,000 targets take about 2 MB; the cap must not be what stops a large but real scenario.
    assert SCENARIO_FILE_CAP >= 32 << 20


# --- O(n) duplicate checks -------------------------------------------------------------------


def _targets_scenario(n: int, duplicate_of: int | None = None) -> str:
    lines = ["name: many", "targets:"]
    for i in range(n):
        lines += [f"  - name: gw{i}", "    host: 127.0.0.1", f"    port: {1 + i % 65535}"]
    if duplicate_of is not None:
        lines += [f"  - name: gw{duplicate_of}", "    host: 127.0.0.1", "    port: 5684"]
    lines += ["clients: {count: 10}", "run_time: 10s", 'psk: {key: "00112233"}']
    return "\n".join(lines) + "\n"


def _validation_cpu_seconds(path: Path) -> float:
    started = time.process_time()  # CPU time: other work on the machine does not count
    scenario = load_scenario(path)
    elapsed = time.process_time() - started
    assert scenario.targets
    return elapsed


def test_validating_many_targets_scales_linearly(tmp_path: Path) -> None:
    small, large = tmp_path / "small.yaml", tmp_path / "large.yaml"
    small.write_text(_targets_scenario(4_000))
    large.write_text(_targets_scenario(40_000))
    small_cpu = min(_validation_cpu_seconds(small) for _ in range(2))
    large_cpu = _validation_cpu_seconds(large)
    # Linear: about 10x; the quadratic check took about 100x (76 s for 40,000 targets).
    assert large_cpu < 25 * small_cpu, (small_cpu, large_cpu)


def test_duplicate_target_among_many_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(_targets_scenario(40_000, duplicate_of=17))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    # Each target takes 3 lines after the 2 header lines: the duplicate is the 40,001st.
    assert info.value.line == 2 + 3 * 40_000 + 1
    assert info.value.key_path == "targets[40000].name"
    assert "duplicate target name 'gw17'" in info.value.message



def _validate_cpu_seconds(text: str, tmp_path: Path) -> tuple[float, ScenarioError]:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    started = time.process_time()
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return time.process_time() - started, info.value


# A value is checked against regular expressions whose time must stay linear in its length
# (whitespace before a non-matching character made two of them quadratic).
PADDED = {
    "a name (shown in the message unless it looks like a key)": ('name: "{pad}z"\n', 1, "expected a name"),
    "a duration": ('name: x\nclients: {{count: 1}}\nrun_time: "1{pad}z"\n', 3, "expected a duration"),
}


@pytest.mark.parametrize("case", PADDED)
def test_padded_values_are_checked_in_linear_time(case: str, tmp_path: Path) -> None:
    text, line, says = PADDED[case]
    small, error = _validate_cpu_seconds(text.format(pad=" " * 10_000), tmp_path)
    large, error = _validate_cpu_seconds(text.format(pad=" " * 100_000), tmp_path)
    assert (error.line, says in error.message) == (line, True), error
    assert large < 25 * max(small, 0.005), (small, large)  # quadratic: 100x (about 8 s at 100,000)


def test_source_addresses_are_capped_in_total_before_expanding(tmp_path: Path) -> None:
    ranges = "\n".join(f"      - 10.{i}.0.0-10.{i}.255.255" for i in range(200))  # 13 million addresses
    text = f"name: x\nclients:\n  count: 1\n  source_addresses:\n{ranges}\nrun_time: 1s\npsk: {{key: '0011'}}\n"
    elapsed, error = _validate_cpu_seconds(text, tmp_path)
    assert error.key_path.startswith("clients.source_addresses[") and "at most 65536" in error.message, error
    assert elapsed < 5.0


def test_alias_bomb_in_a_key_is_refused_in_linear_time(tmp_path: Path) -> None:
    """YAML aliases share nodes: 9 levels of 9 references are 387 million leaves if anything expands them."""
    lines = ["name: x", "l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines += ["? *l9", ": 1"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    assert_usage_error(loadgen("validate", "bomb.yaml", cwd=tmp_path), "bomb.yaml:2: l0: unknown key")
    assert time.monotonic() - started < 15.0


@pytest.mark.parametrize(("key", "text", "line"), [
    ("psk.identity", "name: x\nclients: {{count: 1}}\nrun_time: 1s\npsk:\n  key: '0011'\n  identity: '{spec}'\n", 6),
    ("ping.payload.text", "name: x\nclients: {{count: 1}}\nrun_time: 1s\npsk: {{key: '0011'}}\nping:\n"
     "  payload:\n    text: '{spec}'\n", 7),
])
def test_template_with_a_huge_width_is_refused_before_formatting(key: str, text: str, line: int,
                                                                 tmp_path: Path) -> None:
    # Formatting "{n:>9999999999}" to check the template would allocate 10 GB.
    (tmp_path / "s.yaml").write_text(text.format(spec="dev-{n:>9999999999}"))
    assert_usage_error(loadgen("validate", "s.yaml", cwd=tmp_path), f"s.yaml:{line}: {key}: ", "65535")
