"""Load-test scenarios: YAML files validated into frozen dataclasses.

>>> scenario = load_scenario("scenarios/quickstart.yaml")  # doctest: +SKIP
>>> scenario.ping.interval  # doctest: +SKIP
2.0

Every problem in a file raises :class:`ScenarioError`, whose ``str`` names the file,
line and key path. ``schema.json`` next to this module describes the same format
for editors.
"""

from __future__ import annotations

from .errors import ScenarioError
from .loader import load_scenario, parse_scenario
from .model import (
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
