"""Load-test scenarios: YAML files validated into frozen dataclasses.

>>> scenario = load_scenario("scenarios/quickstart.yaml")  # doctest: +SKIP
>>> scenario.ping.interval  # doctest: +SKIP
2.0

Every problem in a file raises :class:`ScenarioError`, whose ``str`` names the file,
line and key path. ``schema.json`` next to this module describes the same format
for editors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.scenario.errors import ScenarioError
    from loadgen.scenario.loader import load_scenario, parse_scenario
    from loadgen.scenario.model import (
        REDACTED,
        Clients,
        DtlsConfig,
        Expect,
        Outputs,
        Payload,
        PingConfig,
        PrometheusConfig,
        PskConfig,
        ReconnectConfig,
        Scenario,
        Stage,
        StatsdConfig,
        Target,
        Thresholds,
        TlsConfig,
    )

#: Where each public name lives. Loaded on first use (PEP 562), so that importing a light
#: submodule (``loadgen.scenario.syntax``, which the CLI needs before Locust patches gevent)
#: does not import the loader, YAML and OpenSSL.
_HOME = {"ScenarioError": "errors", "load_scenario": "loader", "parse_scenario": "loader"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME.get(name, 'model')}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "REDACTED",
    "Clients",
    "DtlsConfig",
    "Expect",
    "Outputs",
    "Payload",
    "PingConfig",
    "PrometheusConfig",
    "PskConfig",
    "ReconnectConfig",
    "Scenario",
    "ScenarioError",
    "Stage",
    "StatsdConfig",
    "Target",
    "Thresholds",
    "TlsConfig",
    "load_scenario",
    "parse_scenario",
]
