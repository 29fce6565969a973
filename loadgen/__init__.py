"""loadgen: a load generator for DTLS and TLS services (gevent + pyOpenSSL + Locust).

What a user may import from here, and only this, is the public API (``__all__``); the
modules behind it may move. A custom locustfile or script typically needs:

- scenarios: :func:`load_scenario`, :func:`parse_scenario`, :class:`Scenario`, :class:`ScenarioError`;
- a run: :func:`run` with :class:`RunOptions`, returning a :class:`RunOutcome`;
- clients: :class:`DtlsAssociation` / :class:`TlsAssociation` with :func:`dtls_client_context` /
  :func:`tls_client_context`, keys as :class:`Secret` or a :class:`KeyStore`, the ping or
  request plan from :func:`build_plan` (:func:`traffic_plan` for the ping alone);
- results: the facts they report (:class:`Started`, :class:`Finished`, the :class:`Sink`
  protocol, :class:`FanOut` to several sinks), :class:`StatsSink` (exact HDR counts) and
  :class:`LocustSink` (Locust's request events);
- errors: :class:`LoadgenError`, whose ``code`` is the stable failure name;
- Locust users of your own: :class:`DtlsUser`, :class:`TlsUser`, :class:`CoapUser` (abstract, in the
  style of Locust's ``FastHttpUser``), whose ``self.client`` (:class:`DtlsClient`, :class:`TlsClient`,
  :class:`CoapClient`) makes blocking calls that raise :class:`RequestFailed`; CoAP calls return a
  :class:`CoapResponse`, ``observe`` an :class:`Observation`.

Names load on first use (PEP 562): ``import loadgen`` (and so ``python -m loadgen``) costs
nothing until one is used, and gevent is patched by Locust before any socket module loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from loadgen.locust.api import CoapUser, DtlsUser, TlsUser
    from loadgen.locust.client import DtlsClient, RequestFailed, TlsClient
    from loadgen.locust.coap_client import CoapClient, Observation
    from loadgen.locust.environment import RunOptions
    from loadgen.locust.run import run
    from loadgen.locust.users import LocustSink
    from loadgen.protocol.credentials import KeyStore, Secret
    from loadgen.protocol.dtls_contexts import client_context as dtls_client_context
    from loadgen.protocol.errors import LoadgenError
    from loadgen.protocol.openssl.tls_contexts import client_context as tls_client_context
    from loadgen.results.summary import RunOutcome
    from loadgen.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
    from loadgen.stats.facts import FanOut, Finished, Sink, Started
    from loadgen.stats.sink import StatsSink
    from loadgen.traffic.coap_calls import CoapResponse
    from loadgen.traffic.plans import build_plan
    from loadgen.traffic.tracker import traffic_plan
    from loadgen.transport.dtls_association import DtlsAssociation
    from loadgen.transport.tls_association import TlsAssociation

#: public name -> (module, name there)
_API = {
    "load_scenario": ("loadgen.scenario", "load_scenario"),
    "parse_scenario": ("loadgen.scenario", "parse_scenario"),
    "Scenario": ("loadgen.scenario", "Scenario"),
    "ScenarioError": ("loadgen.scenario", "ScenarioError"),
    "run": ("loadgen.locust.run", "run"),
    "RunOptions": ("loadgen.locust.environment", "RunOptions"),
    "RunOutcome": ("loadgen.results.summary", "RunOutcome"),
    "DtlsAssociation": ("loadgen.transport.dtls_association", "DtlsAssociation"),
    "TlsAssociation": ("loadgen.transport.tls_association", "TlsAssociation"),
    "dtls_client_context": ("loadgen.protocol.dtls_contexts", "client_context"),
    "tls_client_context": ("loadgen.protocol.openssl.tls_contexts", "client_context"),
    "KeyStore": ("loadgen.protocol.credentials", "KeyStore"),
    "Secret": ("loadgen.protocol.credentials", "Secret"),
    "traffic_plan": ("loadgen.traffic.tracker", "traffic_plan"),
    "build_plan": ("loadgen.traffic.plans", "build_plan"),
    "Started": ("loadgen.stats.facts", "Started"),
    "Finished": ("loadgen.stats.facts", "Finished"),
    "Sink": ("loadgen.stats.facts", "Sink"),
    "FanOut": ("loadgen.stats.facts", "FanOut"),
    "StatsSink": ("loadgen.stats.sink", "StatsSink"),
    "LocustSink": ("loadgen.locust.users", "LocustSink"),
    "LoadgenError": ("loadgen.protocol.errors", "LoadgenError"),
    "DtlsUser": ("loadgen.locust.api", "DtlsUser"),
    "TlsUser": ("loadgen.locust.api", "TlsUser"),
    "CoapUser": ("loadgen.locust.api", "CoapUser"),
    "DtlsClient": ("loadgen.locust.client", "DtlsClient"),
    "TlsClient": ("loadgen.locust.client", "TlsClient"),
    "RequestFailed": ("loadgen.locust.client", "RequestFailed"),
    "CoapClient": ("loadgen.locust.coap_client", "CoapClient"),
    "Observation": ("loadgen.locust.coap_client", "Observation"),
    "CoapResponse": ("loadgen.traffic.coap_calls", "CoapResponse"),
}

__all__ = [
    "CoapClient",
    "CoapResponse",
    "CoapUser",
    "DtlsAssociation",
    "DtlsClient",
    "DtlsUser",
    "FanOut",
    "Finished",
    "KeyStore",
    "LoadgenError",
    "LocustSink",
    "Observation",
    "RequestFailed",
    "RunOptions",
    "RunOutcome",
    "Scenario",
    "ScenarioError",
    "Secret",
    "Sink",
    "Started",
    "StatsSink",
    "TlsAssociation",
    "TlsClient",
    "TlsUser",
    "__version__",
    "build_plan",
    "dtls_client_context",
    "load_scenario",
    "parse_scenario",
    "run",
    "tls_client_context",
    "traffic_plan",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
