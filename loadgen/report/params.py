"""The report's run parameters: what the scenario set, and where it differs from the model's defaults.

``scenario.json`` holds every field of the model, set or not (a DTLS run carries a whole
``tls`` section of nulls). The report lists required fields and the fields whose value
differs from :mod:`loadgen.scenario.model`'s defaults, walking the model's dataclasses
alongside the saved data, and writes each value as text: never a Python structure.
The saved scenario is already redacted (keys read ``<redacted>``).
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from typing import Any

from loadgen.scenario.model import PingConfig, PskConfig, Scenario, plain_data

#: Fields in seconds (the saved scenario has float seconds everywhere).
_SECONDS = {"run_time", "interval", "timeout", "delay", "duration", "handshake_timeout", "retransmit_cap",
            "ack_timeout", "observe_for", "handshake_p95", "handshake_p99", "ping_p99"}
#: Fields the model fills from another when left out (PingConfig: the timeout is the interval).
_DERIVED: dict[tuple[type, str], str] = {(PingConfig, "timeout"): "interval"}


def parameters(scenario: dict[str, Any], churn: bool = False) -> list[tuple[str, str]]:
    """``(name, value)`` rows, names as the YAML spells them (``ping.interval``, ``requests[0].name``):
    required fields always, others only where they differ from the defaults; none of a section the
    run did not use (``tls`` without TLS targets, ``dtls`` with only TLS ones, ``coap`` without CoAP
    requests, ``ping`` in a ``churn`` run, whose clients only handshake)."""
    unused = _unused_sections(scenario, churn)
    return [(name, value) for name, value in _differences(Scenario, scenario, "")
            if name.split(".", 1)[0] not in unused]


def _unused_sections(scenario: dict[str, Any], churn: bool) -> set[str]:
    protocols = {str(t.get("protocol", "dtls")) for t in scenario.get("targets") or []} or {"dtls"}
    steps = [*(scenario.get("requests") or []),
             *(step for group in scenario.get("devices") or [] for step in group.get("requests") or [])]
    unused = {section for section in ("dtls", "tls") if section not in protocols}
    if not any(step.get("coap") for step in steps):
        unused.add("coap")
    if churn:
        unused.add("ping")
    return unused


def _differences(cls: type, data: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    hints = _hints(cls)
    out: list[tuple[str, str]] = []
    for f in fields(cls):
        if f.name not in data:
            continue
        value, path = data[f.name], prefix + f.name
        derived = _DERIVED.get((cls, f.name))
        if value == _default(f) or (derived is not None and value == data.get(derived)):
            continue
        inner = _dataclass_in(hints[f.name])
        if path == "targets" and value:
            out.append((path, ", ".join(_target(t) for t in value)))
        elif path == "stages" and value:
            out.append((path, "; ".join(_stage(s) for s in value)))
        elif inner is not None and inner is not PskConfig and isinstance(value, dict):
            out += _differences(inner, value, path + ".")
        elif inner is not None and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out += _differences(inner, item, f"{path}[{i}].")
        elif isinstance(value, dict):  # psk: its YAML shape, all of it (the keys are redacted already)
            out += [(f"{path}.{k}", text(v, k)) for k, v in value.items() if v is not None]
        else:
            out.append((path, text(value, f.name)))
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: Field[Any]) -> Any:
    """A field's default as plain data (``MISSING`` for a required field)."""
    if f.default is not MISSING:
        return plain_data(f.default)
    if f.default_factory is not MISSING:
        return plain_data(f.default_factory())
    return MISSING


def _dataclass_in(hint: Any) -> type | None:
    """The model class a field holds: ``PingConfig``, ``CoapRequest | None``, ``tuple[RequestStep, ...]``."""
    if isinstance(hint, type) and is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _target(t: dict[str, Any]) -> str:
    host = f"[{t['host']}]" if ":" in str(t["host"]) else t["host"]
    return f"{t['name']} = {host}:{t['port']} ({str(t.get('protocol', 'dtls')).upper()})"


def _stage(s: dict[str, Any]) -> str:
    return f"{s['clients']} clients for {s['duration']:g} s (spawn {s['spawn_rate']:g}/s)"


def text(value: Any, name: str = "") -> str:
    """A saved value as the report writes it: durations with "s", lists joined, no Python syntax."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g} s" if name in _SECONDS else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(text(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {text(v, k)}" for k, v in value.items()) or "none"
    return str(value)

