"""Scenario YAML -> validated :class:`~loadgen.scenario.model.Scenario`.

``yaml.compose`` with the SafeLoader builds a node tree without constructing any
object, so a tag like ``!!python/object/apply`` can never run code, and every node
keeps its line number for error messages. Each section below is a table of
converters from :mod:`.convert`; cross-field checks run in the section's ``build``.
Key sources are resolved here, at load time, so a missing variable or file is
reported with its line rather than in the middle of a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import yaml
from yaml.nodes import MappingNode

from loadgen.protocol.credentials import (
    CSV_FILE_CAP,
    KEY_FILE_CAP,
    FileRefused,
    KeyStore,
    Secret,
    key_from_env,
    key_from_file,
    read_capped,
)
from loadgen.protocol.errors import ConfigError
from loadgen.protocol.openssl.tls_contexts import PSK_MODES, psk_modes_problem
from loadgen.scenario import model as m
from loadgen.scenario.convert import (
    PEM_FILE_CAP,
    Ctx,
    Fields,
    check_tags,
    exactly_one,
    expected,
    list_of,
    optional,
    section,
)
from loadgen.scenario.devices import build_devices, device_section, devices_total
from loadgen.scenario.errors import ScenarioError
from loadgen.scenario.scalars import (
    ENV_NAME,
    HOST,
    NAME,
    PORT,
    addresses,
    boolean,
    choice,
    duration,
    hex_bytes,
    integer,
    number,
    regular_file,
    string,
    template,
    version,
)
from loadgen.scenario.traffic import COAP as _COAP
from loadgen.scenario.traffic import PING as _PING
from loadgen.scenario.traffic import check_request_targets
from loadgen.scenario.traffic import requests as _REQUESTS

#: Largest scenario file read. 40,000 targets take about 2 MB of YAML and validate in seconds;
#: PyYAML builds about 1 KiB of nodes per short line, so 64 MiB already means a GB of memory.
SCENARIO_FILE_CAP = 64 << 20

# --- sections with cross-field rules ------------------------------------------------------


def _load_secret(ctx: Ctx, rec: Fields, kind: str) -> tuple[Secret, str | None]:
    """Resolve an inline / env / file key source now, so a bad one fails at load time."""
    value = rec.values[kind]
    if isinstance(value, Secret):
        return value, None
    node, path = rec.at(kind)
    try:
        if kind.endswith("_env"):
            return key_from_env(value), value
        return key_from_file(value), str(value)
    except ConfigError as exc:
        ctx.fail(node, path, exc.args[0])


def _build_psk(ctx: Ctx, rec: Fields) -> m.PskConfig:
    source = cast(m.KeySourceName, exactly_one(ctx, rec, ("key", "key_env", "key_file", "derive", "csv")))
    v = rec.values
    common = {"identity": v.get("identity", "device-{n:05d}"), "hint": v.get("hint", "loadgen")}
    if source == "derive":
        drec: Fields = rec.values["derive"]
        kind = cast(m.MasterSourceName, exactly_one(ctx, drec, ("master", "master_env", "master_file")))
        master, location = _load_secret(ctx, drec, kind)
        length = drec.values.get("length", 16)
        store = KeyStore(master=master, derived_length=length)
        extra = {"location": location, "master_source": kind, "length": length}
        return m.PskConfig(**common, source=source, store=store, **extra)
    if source == "csv":
        node, path = rec.at("csv")
        try:
            store = KeyStore.from_csv(rec.values["csv"])
        except ConfigError as exc:
            ctx.fail(node, path, exc.args[0])
        first = common["identity"].format(n=0)
        if store.key_for(first.encode()) is None:  # catches a template that does not match the file
            ctx.fail(node, path, f"identity {first!r} of client 0 is not in the CSV file")
        return m.PskConfig(**common, source=source, store=store, location=str(rec.values["csv"]))
    key, location = _load_secret(ctx, rec, source)
    return m.PskConfig(**common, source=source, store=KeyStore(shared=key), location=location)


def _build_tls(ctx: Ctx, rec: Fields) -> m.TlsConfig:
    tls = m.TlsConfig(**rec.values)
    if float(tls.min_version) > float(tls.max_version):
        got = f'"{tls.max_version}", below min_version "{tls.min_version}"'
        ctx.fail(*rec.at("max_version"), f"expected a version >= min_version, got {got}")
    if tls.key_file and not tls.cert_file:
        ctx.fail(*rec.at("key_file"), "key_file needs cert_file")
    if "psk_modes" in rec.values and (problem := psk_modes_problem(tls.psk_modes)) is not None:
        ctx.fail(*rec.at("psk_modes"), problem)
    return tls


_TARGET = section(
    {
        "name": string(NAME, "a name of letters, digits, '_', '.' and '-'"),
        "host": HOST,
        "port": PORT,
        "protocol": choice("dtls", "tls"),
        "weight": number(0, above=True),
        "server_name": optional(string()),
    },
    required=("name", "host", "port"),
)
_CLIENTS = section(
    {
        "count": integer(1),
        "spawn_rate": number(0, above=True),
        "connect": choice("one", "all"),
        "source_addresses": addresses,
    }
)
_STAGE = section(
    {"duration": duration(), "clients": integer(0), "spawn_rate": number(0, above=True)},
    required=("duration", "clients"),
)
_DERIVE = section(
    {
        "master": hex_bytes(secret=True),
        "master_env": string(ENV_NAME, "an environment variable name"),
        "master_file": regular_file(KEY_FILE_CAP, "key file"),
        "length": integer(1, 32),
    }
)
_PSK = section(
    {
        "identity": template(n=0),
        "hint": string(empty_ok=True),
        "key": hex_bytes(secret=True),
        "key_env": string(ENV_NAME, "an environment variable name"),
        "key_file": regular_file(KEY_FILE_CAP, "key file"),
        "derive": _DERIVE,
        "csv": regular_file(CSV_FILE_CAP, "CSV file"),
    },
    build=_build_psk,
)
_DTLS = section(
    {
        "version": version("1.2"),
        "ciphers": string(),
        "mtu": integer(256, 65507),
        "handshake_timeout": duration(),
        "max_retransmits": integer(0),
        "retransmit_cap": optional(duration()),
        "handshake": choice("loadgen", "openssl"),
    },
    build=m.DtlsConfig,
)
_TLS = section(
    {
        "min_version": version("1.2", "1.3"),
        "max_version": version("1.2", "1.3"),
        "ciphers": optional(string()),
        "resumption": boolean,
        "ca_file": optional(regular_file(PEM_FILE_CAP, "PEM file")),
        "cert_file": optional(regular_file(PEM_FILE_CAP, "PEM file")),
        "key_file": optional(regular_file(PEM_FILE_CAP, "PEM file")),
        "verify": choice("none", "peer"),
        "handshake_timeout": duration(),
        "psk_modes": list_of(choice(*PSK_MODES)),
    },
    build=_build_tls,
)
_RECONNECT = section(
    {
        "policy": choice("never", "on-failure", "always"),
        "delay": duration(zero_ok=True),
        "max_attempts": optional(integer(1)),
    },
    build=m.ReconnectConfig,
)
_THRESHOLDS = section(
    {
        "handshake_p95": optional(duration()),
        "handshake_p99": optional(duration()),
        "ping_p99": optional(duration()),
        "error_ratio": optional(number(0, 1)),
        "min_handshake_rate": optional(number(0)),
    },
    build=m.Thresholds,
)
_OUTPUTS = section(
    {
        "results_dir": lambda ctx, node, path: Path(string()(ctx, node, path)),  # resolved at run time
        "csv": boolean,
        "json": boolean,
        "report": boolean,
        "prometheus": optional(section({"host": HOST, "port": PORT}, build=m.PrometheusConfig)),
        "statsd": optional(section({"host": HOST, "port": PORT, "prefix": string()}, build=m.StatsdConfig)),
    },
    build=m.Outputs,
)

# Device groups (see loadgen.scenario.devices): a group's psk and ping are read as the scenario's are.
_DEVICES = device_section(psk=_PSK, ping=_PING, requests=_REQUESTS)


def _build_scenario(ctx: Ctx, rec: Fields) -> m.Scenario:
    v = rec.values
    target_recs: tuple[Fields, ...] = v.get("targets", ())
    targets: list[m.Target] = []
    names: set[str] = set()  # a set, not a scan of the list so far: 40,000 targets took 76 s that way
    for trec in target_recs:
        if trec.values["name"] in names:
            ctx.fail(*trec.at("name"), f"duplicate target name {trec.values['name']!r}")
        names.add(trec.values["name"])
        targets.append(m.Target(**trec.values))

    stage_recs: tuple[Fields, ...] = v.get("stages", ())
    crec: Fields | None = v.get("clients")
    cv = crec.values if crec else {}
    count = cv.get("count", None if stage_recs else devices_total(v.get("devices", ())))
    if count is None:
        if not stage_recs:
            node = crec.node if crec else rec.node
            ctx.fail(node, "clients.count", "required key is missing (give clients.count or stages)")
        count = max(1, *(s.values["clients"] for s in stage_recs))
    clients = m.Clients(**{**cv, "count": count, "spawn_rate": cv.get("spawn_rate", float(count))})
    stages = tuple(m.Stage(**{"spawn_rate": clients.spawn_rate, **s.values}) for s in stage_recs)

    run_time = v.get("run_time", sum(s.duration for s in stages))
    if not run_time:
        ctx.fail(rec.node, "run_time", "required key is missing (give run_time or stages)")
    if "psk" not in v and not v.get("devices") and (not targets or any(t.protocol == "dtls" for t in targets)):
        ctx.fail(rec.node, "psk", "required key is missing (DTLS clients need a pre-shared key)")

    check_request_targets(ctx, rec, targets)
    sections = ("dtls", "tls", "ping", "requests", "coap", "reconnect", "thresholds", "outputs")
    return m.Scenario(
        name=v["name"],
        description=v.get("description", ""),
        targets=tuple(targets),
        clients=clients,
        stages=stages,
        run_time=run_time,
        psk=v.get("psk"),
        devices=build_devices(ctx, v.get("devices", ()), clients, stages, targets, v.get("psk"),
                              crec.nodes.get("count", crec.node) if crec else rec.node,
                              [s.at("clients")[0] for s in stage_recs]),
        source=ctx.source,
        **{k: v[k] for k in sections if k in v},
    )


_SCENARIO = section(
    {
        "name": string(NAME, "a name of letters, digits, '_', '.' and '-'"),
        "description": string(empty_ok=True),
        "targets": list_of(_TARGET),
        "clients": _CLIENTS,
        "stages": list_of(_STAGE),
        "run_time": duration(),
        "psk": _PSK,
        "dtls": _DTLS,
        "tls": _TLS,
        "ping": _PING,
        "requests": _REQUESTS,
        "coap": _COAP,
        "devices": _DEVICES,
        "reconnect": _RECONNECT,
        "thresholds": _THRESHOLDS,
        "outputs": _OUTPUTS,
    },
    required=("name",),
    build=_build_scenario,
)


# --- entry points ---------------------------------------------------------------------


def parse_scenario(text: str, filename: str) -> m.Scenario:
    """Validate scenario YAML ``text``; ``filename`` is used in errors and to resolve relative paths."""
    ctx = Ctx(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        elif exc.context and problem.startswith("but "):  # "expected a single document ..., but found ..."
            problem = f"{exc.context}, {problem}"
        elif exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            problem += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        line = mark.line + 1 if mark else 0
        raise ScenarioError(filename, line, "", f"malformed YAML: {problem}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ScenarioError(filename, 0, "", "malformed YAML: nested too deeply") from None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if position is not None else 0
        raise ScenarioError(filename, line, "", f"malformed YAML: {str(exc).splitlines()[0]}") from None
    if root is None:
        raise ScenarioError(filename, 1, "", "expected a mapping of scenario keys, got an empty file")
    check_tags(ctx, root)
    if not isinstance(root, MappingNode):
        expected(ctx, root, "", "a mapping of scenario keys (name, clients, ...) at the top level")
    scenario: m.Scenario = _SCENARIO(ctx, root, "")
    return scenario


def load_scenario(path: str | os.PathLike[str]) -> m.Scenario:
    """Read and validate the scenario file at ``path``; every problem raises :class:`ScenarioError`."""
    filename = os.fspath(path)
    try:
        data, _ = read_capped(filename, SCENARIO_FILE_CAP, "scenario file")
    except FileRefused as exc:
        raise ScenarioError(filename, 0, "", f"cannot read the file: {exc.reason}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(filename, line, "", "not UTF-8 text") from None
    return parse_scenario(text, filename)
