"""Scenario files: the shipped examples, the bad corpus, the JSON Schema, and keeping keys secret."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml

from loadgen.protocol.credentials import KeyStore
from loadgen.protocol.errors import ConfigError
from loadgen.scenario import REDACTED, Scenario, ScenarioError, load_scenario, parse_scenario

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
BAD_DIR = Path(__file__).resolve().parent / "scenarios_bad"
SCHEMA = ROOT / "loadgen" / "scenario" / "schema.json"
UNSET_ENV = "LOADGEN_TEST_UNSET_VARIABLE_7F3A"  # used by scenarios_bad/unset-env.yaml

# Bad files whose problem only the loader can see (file system, environment, templates,
# regexes, cross-field arithmetic, duplicate keys/names): the schema accepts them.
LOADER_ONLY = {
    "bad-identity-template.yaml",
    "bad-regex.yaml",
    "bad-source-range.yaml",
    "bad-template-field.yaml",
    "duplicate-key.yaml",
    "duplicate-target.yaml",
    "missing-key-file.yaml",
    "seq-outside-payload.yaml",
    "steps-code-on-plain.yaml",
    "steps-coap-to-tls.yaml",
    "steps-duplicate-name.yaml",
    "steps-echo-without-seq.yaml",
    "steps-mixed.yaml",
    "tls-missing-ca.yaml",
    "tls-versions.yaml",
    "unset-env.yaml",
    "zero-duration.yaml",
}

MINIMAL = 'name: t\nclients: {count: 10}\nrun_time: 10s\npsk: {key: "00112233"}\n'


def read_expectations() -> list[tuple[str, int, str, str]]:
    rows = []
    for raw in (BAD_DIR / "expected.txt").read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            name, line, key_path, substring = (part.strip() for part in raw.split("|", 3))
            rows.append((name, int(line), key_path, substring))
    return rows


EXPECTATIONS = read_expectations()


def load_text(tmp_path: Path, text: str, name: str = "s.yaml") -> Scenario:
    path = tmp_path / name
    path.write_text(text)
    return load_scenario(path)


def error_for(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_text(tmp_path, text)
    return info.value


def write_private(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.chmod(path, 0o600)  # credentials warns about key files other users can read
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_ENV, raising=False)


# --- the bad corpus -----------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    files = {p.name for p in BAD_DIR.glob("*.yaml")}
    listed = [name for name, *_ in EXPECTATIONS]
    assert len(listed) == len(set(listed)), "a file is listed twice in expected.txt"
    assert files == set(listed)
    assert len(files) >= 24


@pytest.mark.parametrize(
    ("name", "line", "key_path", "substring"), EXPECTATIONS, ids=[e[0] for e in EXPECTATIONS]
)
def test_bad_scenario(name: str, line: int, key_path: str, substring: str) -> None:
    path = BAD_DIR / name
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.file, err.line, err.key_path) == (str(path), line, key_path)
    assert substring in str(err)
    location = f"{path}:{line}: {key_path}: " if key_path else f"{path}:{line}: "
    assert str(err).startswith(location)
    assert name in str(err) and name in err.args[0]  # the CLI prints args[0]
    assert "\n" not in str(err)


def test_bad_hex_is_not_echoed() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(BAD_DIR / "bad-hex.yaml")
    assert "zz55" not in str(info.value) and "00112233" not in str(info.value)


def test_unknown_key_without_close_match_lists_the_keys(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "ping:\n  frobnicate: 1\n")
    assert err.key_path == "ping.frobnicate"
    assert "expected one of interval, jitter, timeout, max_missed, payload, expect" in str(err)


def test_secret_of_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL.replace('psk: {key: "00112233"}', "psk: {key: true}"))
    assert err.key_path == "psk.key" and "true" not in str(err)


@pytest.mark.parametrize(
    "psk",
    [
        'psk: {key_env: "c0ffee00c0ffee00c0ffee00"}',  # a key pasted into the wrong field
        'psk: {key_file: "c0ffee00c0ffee00c0ffee00"}',
        'psk: {key: "00112233", c0ffee00c0ffee00c0ffee00: 1}',
        'psk: {derive: {master_env: "0xc0ffee00c0ffee00c0ffee00"}}',
    ],
)
def test_key_in_the_wrong_place_is_not_echoed(tmp_path: Path, psk: str) -> None:
    err = error_for(tmp_path, MINIMAL.replace('psk: {key: "00112233"}', psk))
    assert err.key_path.startswith("psk")
    assert "c0ffee" not in str(err) and "not shown" in str(err)


def test_bad_hex_in_env_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADGEN_TEST_PSK", "c0ffee-not-hex-c0ffee")
    err = error_for(tmp_path, MINIMAL.replace('key: "00112233"', "key_env: LOADGEN_TEST_PSK"))
    assert (err.line, err.key_path) == (4, "psk.key_env")
    assert "c0ffee" not in str(err)


def test_yaml_python_tag_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f'name: !!python/object/apply:os.system ["touch {marker}"]\n',
        f'!!python/object/apply:os.system ["touch {marker}"]\n',
        MINIMAL + f"ping:\n  payload:\n    text: !!python/object/apply:os.system ['touch {marker}']\n",
        MINIMAL + "description: !!python/name:os.system\n",
        MINIMAL + "description: !custom thing\n",
    ):
        err = error_for(tmp_path, text)
        assert "unsupported YAML tag" in str(err)
    assert not marker.exists()


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "missing.yaml")
    assert info.value.line == 0 and "missing.yaml: cannot read the file" in str(info.value)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: t\ndescription: caf\xe9\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.line == 2 and "not UTF-8" in str(info.value)


def test_odd_yaml_gives_one_located_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "description: a\x07bell\n")
    assert err.line == 5 and "malformed YAML: unacceptable character" in str(err) and "\n" not in str(err)
    err = error_for(tmp_path, "name: t\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "malformed YAML" in str(err)
    err = error_for(tmp_path, MINIMAL + "---\nname: u\n")
    assert err.line == 5 and "malformed YAML: expected a single document" in str(err)
    assert (
        load_text(tmp_path, MINIMAL + "description: 2024-02-30\n").description == "2024-02-30"
    )  # not a date


def test_error_survives_pickling() -> None:
    err = ScenarioError("x.yaml", 3, "ping.interval", "expected a duration, got 'fast'")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.line, copy.key_path, str(copy)) == ("x.yaml", 3, "ping.interval", str(err))


# --- the shipped scenarios ----------------------------------------------------------------


def test_shipped_scenarios_exist() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"quickstart", "multi-peer", "ramp", "binary-payload", "dtls", "tls", "derived-keys"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.source == path
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.name = "other"  # type: ignore[misc]


def test_quickstart() -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert s.targets == () and s.builtin_server
    assert (s.clients.count, s.clients.spawn_rate, s.clients.connect) == (1000, 500.0, "one")
    assert s.run_time == 20.0 and s.stages == ()
    assert s.ping.interval == 2.0 and s.ping.timeout == 2.0  # timeout defaults to the interval
    assert s.ping.expect.kind == "echo"
    assert s.ping.payload.text == "I am {name}, please, accept our ping {seq}"
    assert s.psk is not None and s.psk.source == "key"
    assert s.psk.identity_for(0) == b"device-00000" and s.psk.identity_for(42) == b"device-00042"
    key = s.psk.store.key_for(b"anything")
    assert key is not None and key.value == bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    assert s.dtls.version == "1.2" and s.dtls.mtu == 1200 and s.dtls.handshake_timeout == 60.0
    assert s.reconnect.policy == "on-failure" and s.reconnect.max_attempts is None
    assert s.outputs.results_dir == Path("results") and s.outputs.prometheus is None


def test_multi_peer() -> None:
    s = load_scenario(ROOT / "scenarios" / "multi-peer.yaml")
    assert [(t.name, t.host, t.port, t.protocol) for t in s.targets] == [
        ("gw1", "127.0.0.1", 5684, "dtls"),
        ("gw2", "127.0.0.1", 5685, "dtls"),
    ]
    assert s.clients.connect == "all" and s.run_time == 60.0
    assert s.ping.jitter == 0.2 and s.ping.expect.kind == "any"


def test_ramp_stages() -> None:
    s = load_scenario(ROOT / "scenarios" / "ramp.yaml")
    assert [(st.duration, st.clients, st.spawn_rate) for st in s.stages] == [
        (30.0, 100, 10.0),
        (60.0, 1000, 100.0),
        (60.0, 2000, 200.0),
        (60.0, 2000, 100.0),  # spawn_rate from clients.spawn_rate
        (30.0, 0, 500.0),
    ]
    assert s.run_time == 240.0  # the sum of the stages
    assert s.clients.count == 2000  # the largest stage
    assert (s.thresholds.handshake_p95, s.thresholds.handshake_p99, s.thresholds.ping_p99) == (0.2, 0.5, 0.1)
    assert s.thresholds.error_ratio == 0.01 and s.thresholds.min_handshake_rate is None
    assert (s.reconnect.delay, s.reconnect.max_attempts) == (2.0, 5)


def test_binary_payload() -> None:
    s = load_scenario(ROOT / "scenarios" / "binary-payload.yaml")
    p = s.ping.payload
    assert (p.text, p.data, p.seq_offset, p.seq_width) == (None, bytes.fromhex("40010000"), 2, 2)
    assert s.ping.expect.kind == "prefix" and s.ping.expect.prefix == b"\x60"
    assert s.ping.timeout == 0.5


def test_dtls_and_tls() -> None:
    d = load_scenario(ROOT / "scenarios" / "dtls.yaml")
    assert d.dtls.ciphers == "PSK-AES128-CCM8:PSK-AES128-GCM-SHA256"
    assert (d.dtls.mtu, d.dtls.handshake_timeout, d.dtls.max_retransmits) == (1200, 15.0, 6)
    assert (d.dtls.retransmit_cap, d.dtls.handshake) == (2.0, "loadgen")
    assert [t.weight for t in d.targets] == [3.0, 1.0]
    assert d.clients.source_addresses == tuple(f"127.0.0.{i}" for i in range(1, 21))
    assert d.ping.expect.regex is not None and d.ping.expect.regex.match(b"I am x, please, accept our ping 7")
    assert d.outputs.prometheus is not None and d.outputs.prometheus.port == 9646
    t = load_scenario(ROOT / "scenarios" / "tls.yaml")
    assert [(x.protocol, x.port, x.server_name) for x in t.targets] == [("tls", 4433, "localhost")]
    assert (t.tls.min_version, t.tls.max_version, t.tls.verify) == ("1.2", "1.2", "none")
    assert t.outputs.statsd is not None and t.outputs.statsd.prefix == "loadgen.tls"


def test_derived_keys_match_hmac() -> None:
    s = load_scenario(ROOT / "scenarios" / "derived-keys.yaml")
    assert s.psk is not None and s.psk.source == "derive" and s.psk.length == 16
    master = bytes.fromhex(
        yaml.safe_load((ROOT / "scenarios" / "derived-keys.yaml").read_text())["psk"]["derive"]["master"]
    )
    for n in (0, 1, 4999):
        identity = s.psk.identity_for(n)
        key = s.psk.store.key_for(identity)
        assert key is not None and key.value == hmac.new(master, identity, hashlib.sha256).digest()[:16]


# --- values, defaults and resolution ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("45", 45.0),
        ("7", 7.0),
        ("0.5", 0.5),
    ],
)
def test_durations(tmp_path: Path, text: str, seconds: float) -> None:
    assert load_text(tmp_path, MINIMAL.replace("run_time: 10s", f"run_time: {text}")).run_time == seconds
    assert load_text(tmp_path, MINIMAL.replace("run_time: 10s", f'run_time: "{text}"')).run_time == seconds


def test_defaults(tmp_path: Path) -> None:
    s = load_text(tmp_path, MINIMAL)
    assert s.clients.spawn_rate == 10.0  # = count
    assert s.psk is not None and s.psk.identity == "device-{n:05d}" and s.psk.hint == "loadgen"
    assert (s.ping.interval, s.ping.jitter, s.ping.timeout, s.ping.expect.kind) == (5.0, 0.1, 5.0, "any")
    assert s.tls.min_version == "1.2" and s.tls.max_version == "1.3" and s.tls.ca_file is None
    assert s.outputs.csv and s.outputs.json and s.outputs.report


def test_unquoted_versions_and_digit_only_hex(tmp_path: Path) -> None:
    # YAML reads 1.2 as a float and 00112233 as an int; the loader takes the source text.
    s = load_text(tmp_path, MINIMAL.replace('"00112233"', "00112233") + "dtls: {version: 1.2}\n")
    assert s.dtls.version == "1.2"
    assert s.psk is not None and s.psk.store.key_for(b"x").value == bytes.fromhex("00112233")  # type: ignore[union-attr]


def test_templates(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        MINIMAL.replace('psk: {key: "00112233"}', 'psk: {identity: "dev-{n:03d}", key: "00112233"}')
        + 'ping: {payload: {text: "{target}/{name}#{seq:04d} n={n}"}}\n',
    )
    assert s.psk is not None and s.psk.identity_for(7) == b"dev-007"
    assert s.ping.payload.text == "{target}/{name}#{seq:04d} n={n}"
    for bad, fragment in (("{0}", "bad template"), ("{n:q}", "bad template"), ("{n", "bad template")):
        err = error_for(tmp_path, MINIMAL + f'ping: {{payload: {{text: "{bad}"}}}}\n')
        assert err.key_path == "ping.payload.text" and fragment in str(err)


def test_relative_key_file_is_resolved_against_the_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = write_private(tmp_path / "conf" / "keys" / "psk.hex", "c0ffee00deadbeef\n")
    (tmp_path / "conf" / "s.yaml").write_text(MINIMAL.replace('key: "00112233"', "key_file: keys/psk.hex"))
    monkeypatch.chdir(tmp_path)  # a relative scenario path, from another directory
    s = load_scenario("conf/s.yaml")
    assert s.psk is not None and s.psk.source == "key_file"
    assert s.psk.location == str(key_file) and Path(s.psk.location).is_absolute()
    assert s.source == tmp_path / "conf" / "s.yaml"
    assert s.psk.store.key_for(b"x").value == bytes.fromhex("c0ffee00deadbeef")  # type: ignore[union-attr]


def test_tls_files_are_resolved_and_checked(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "certs" / name).write_text("not checked here\n")
    base = (
        "name: t\ntargets: [{name: a, host: 127.0.0.1, port: 4433, protocol: tls}]\n"
        "clients: {count: 1}\nrun_time: 1s\n"
    )
    s = load_text(
        tmp_path,
        base + "tls: {ca_file: certs/ca.pem, cert_file: certs/client.pem, key_file: certs/client.key}\n",
    )
    assert s.psk is None  # not needed when every target is tls
    assert (
        s.tls.ca_file == tmp_path / "certs" / "ca.pem" and s.tls.key_file == tmp_path / "certs" / "client.key"
    )
    err = error_for(tmp_path, base + "tls: {key_file: certs/client.key}\n")
    assert err.key_path == "tls.key_file" and "needs cert_file" in str(err)


def test_csv_keys(tmp_path: Path) -> None:
    write_private(tmp_path / "devices.csv", "identity,key\ndevice-00000,00112233\ndevice-00001,44556677\n")
    s = load_text(tmp_path, MINIMAL.replace('key: "00112233"', "csv: devices.csv"))
    assert s.psk is not None and s.psk.location == str(tmp_path / "devices.csv")
    assert s.psk.store.key_for(b"device-00001").value == bytes.fromhex("44556677")  # type: ignore[union-attr]
    err = error_for(tmp_path, MINIMAL.replace('key: "00112233"', 'identity: "x{n}", csv: devices.csv'))
    assert err.key_path == "psk.csv" and "'x0' of client 0 is not in the CSV" in str(err)


def test_derive_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADGEN_TEST_MASTER", "0102030405060708")
    s = load_text(
        tmp_path, MINIMAL.replace('key: "00112233"', "derive: {master_env: LOADGEN_TEST_MASTER, length: 8}")
    )
    assert (
        s.psk is not None and s.psk.master_source == "master_env" and s.psk.location == "LOADGEN_TEST_MASTER"
    )
    want = hmac.new(bytes.fromhex("0102030405060708"), b"device-00003", hashlib.sha256).digest()[:8]
    assert s.psk.store.key_for(s.psk.identity_for(3)).value == want  # type: ignore[union-attr]
    write_private(tmp_path / "master.hex", "0102030405060708")
    s = load_text(tmp_path, MINIMAL.replace('key: "00112233"', "derive: {master_file: master.hex}"))
    assert s.psk is not None and s.psk.store.key_for(b"device-00003").value[:8] == want  # type: ignore[union-attr]
    err = error_for(tmp_path, MINIMAL.replace('key: "00112233"', "derive: {length: 8}"))
    assert err.key_path == "psk.derive" and "master, master_env, master_file, got none" in str(err)


def test_source_addresses(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        MINIMAL.replace("{count: 10}", '{count: 10, source_addresses: ["::1", "10.0.0.254-10.0.1.1"]}'),
    )
    assert s.clients.source_addresses == ("::1", "10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1")
    err = error_for(
        tmp_path, MINIMAL.replace("{count: 10}", "{count: 10, source_addresses: [127.0.0.1, localhost]}")
    )
    assert err.key_path == "clients.source_addresses[1]" and "got 'localhost'" in str(err)


def test_all_tls_without_psk_but_dtls_needs_it(tmp_path: Path) -> None:
    err = error_for(
        tmp_path, "name: t\ntargets: [{name: a, host: h, port: 1}]\nclients: {count: 1}\nrun_time: 1s\n"
    )
    assert err.key_path == "psk" and "required" in str(err)


def test_parse_scenario_from_text() -> None:
    s = parse_scenario(MINIMAL, "inline.yaml")
    assert s.name == "t" and s.source == Path("inline.yaml").absolute()
    with pytest.raises(ScenarioError, match=r"^inline\.yaml:2: clients\.count: "):
        parse_scenario(MINIMAL.replace("10}", "0}"), "inline.yaml")


def test_anchors_and_aliases_are_allowed(tmp_path: Path) -> None:
    text = MINIMAL + "ping: {interval: &t 3s, timeout: *t}\n"
    assert load_text(tmp_path, text).ping.timeout == 3.0


def docs_example() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]


def test_complete_example_in_the_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    example = docs_example()
    monkeypatch.setenv("STAGING_PSK_MASTER", "00112233445566778899aabbccddeeff")
    s = parse_scenario(example, str(ROOT / "docs" / "example.yaml"))
    assert s.name == "staging-soak" and s.run_time == 720.0 and s.clients.count == 5000
    assert len(s.clients.source_addresses) == 50 and s.psk is not None and s.psk.source == "derive"


# --- secrets ------------------------------------------------------------------------------


def secrets_of(path: Path) -> list[str]:
    """Hex of every key a loaded scenario holds (shared key, master, some derived keys)."""
    s = load_scenario(path)
    assert s.psk is not None
    doc = yaml.safe_load(path.read_text())["psk"]
    found = [doc["key"]] if "key" in doc else []
    if "derive" in doc:
        found.append(doc["derive"]["master"])
    for n in range(3):
        key = s.psk.store.key_for(s.psk.identity_for(n))
        assert key is not None
        found.append(key.value.hex())
    return found


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_redacted_has_no_key_material(path: Path) -> None:
    s = load_scenario(path)
    dumped = json.dumps(s.redacted())  # plain data: must serialise without default=
    texts = (dumped, repr(s), str(s))
    for secret in secrets_of(path):
        assert all(secret.lower() not in t.lower() for t in texts), secret
    assert REDACTED in dumped
    assert json.loads(dumped)["name"] == s.name


def test_redacted_keeps_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADGEN_TEST_PSK", "abcdef0123456789")
    s = load_text(tmp_path, MINIMAL.replace('key: "00112233"', "key_env: LOADGEN_TEST_PSK"))
    psk = s.redacted()["psk"]
    assert psk == {"identity": "device-{n:05d}", "hint": "loadgen", "key_env": "LOADGEN_TEST_PSK"}
    assert "abcdef0123456789" not in json.dumps(s.redacted())
    d = load_scenario(ROOT / "scenarios" / "derived-keys.yaml").redacted()["psk"]
    assert d["derive"] == {"master": REDACTED, "length": 16}


def test_key_store_type() -> None:
    s = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert s.psk is not None and isinstance(s.psk.store, KeyStore)


# --- JSON Schema --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def walk_objects(node, path="#"):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from walk_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_objects(value, f"{path}/{i}")


def test_schema_is_strict_and_documented(validator) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = list(walk_objects(schema))
    assert len(objects) > 10
    for where, obj in objects:
        assert obj.get("additionalProperties") is False, where
        for key, prop in obj.get("properties", {}).items():
            assert prop.get("description"), f"{where}/properties/{key} has no description"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenario_matches_schema(validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []
    load_scenario(path)  # and the loader agrees


@pytest.mark.parametrize(
    ("name", "line", "key_path", "substring"), EXPECTATIONS, ids=[e[0] for e in EXPECTATIONS]
)
def test_bad_scenario_vs_schema(validator, name: str, line: int, key_path: str, substring: str) -> None:
    try:
        doc = yaml.safe_load((BAD_DIR / name).read_text())
    except yaml.YAMLError:
        return  # malformed YAML (or a Python tag): no document for the schema to judge
    rejected = not validator.is_valid(doc)
    assert rejected == (name not in LOADER_ONLY)


def test_docs_example_matches_schema(validator) -> None:
    assert [e.message for e in validator.iter_errors(yaml.safe_load(docs_example()))] == []


@pytest.mark.parametrize(("handshake", "native"), [("loadgen", True), ("openssl", False)])
def test_dtls_handshake_key_picks_the_engine(handshake: str, native: bool) -> None:
    from locust.env import Environment

    from loadgen.locust.users import Endpoint, Session
    from loadgen.protocol import dtls_factory
    from loadgen.protocol.openssl import dtls

    scenario = parse_scenario(
        "name: hs\ntargets: [{name: gw, host: 127.0.0.1, port: 5684}]\nclients: {count: 1}\nrun_time: 1s\n"
        f'psk: {{key: "00112233"}}\ndtls: {{handshake: {handshake}}}\n', "hs.yaml")
    (target,) = scenario.targets
    session = Session(scenario, Environment(), [Endpoint(target, ("127.0.0.1", 5684))])
    assert session.dtls_context is not None
    engine = dtls_factory.client_engine(session.dtls_context, lambda hint: (b"dev", None))  # type: ignore[arg-type, return-value]
    # The key decides who runs the handshake: loadgen's own engine, or OpenSSL's.
    assert isinstance(engine, dtls.DtlsEngine) is not native
