"""The one place a scenario's (or a device group's) traffic sections become what a transport runs."""

from __future__ import annotations

from loadgen.protocol.errors import ConfigError
from loadgen.scenario.model import CoapConfig, PingConfig, RequestStep
from loadgen.traffic.steps import steps_plan
from loadgen.traffic.tracker import traffic_plan
from loadgen.traffic.workload import Gate, WorkloadPlan


def build_plan(ping: PingConfig, requests: tuple[RequestStep, ...] = (),
               coap: CoapConfig | None = None, gate: Gate | None = None) -> WorkloadPlan:
    """The plan for ``ping`` and ``requests``: today's ping (:func:`~.tracker.traffic_plan`) when
    ``requests`` is empty, the request steps (:func:`~.steps.steps_plan`) when they carry payloads,
    and CoAP's plan (:mod:`loadgen.coap`, with the ``coap`` section's transmission parameters) when
    they are CoAP requests. The loader never mixes the two kinds in one list. ``gate`` is the
    run's :class:`~.workload.Gate` (None: the plan has one of its own, always open)."""
    if not requests:
        return traffic_plan(ping, gate)
    if all(step.coap is None for step in requests):
        return steps_plan(ping, requests, gate)
    if any(step.coap is None for step in requests):
        raise ConfigError("requests: plain payload steps and CoAP steps cannot be mixed in one list")
    return _coap_plan(ping, requests, coap if coap is not None else CoapConfig(), gate)


def _coap_plan(ping: PingConfig, requests: tuple[RequestStep, ...], coap: CoapConfig,
               gate: Gate | None) -> WorkloadPlan:
    """CoAP's plan (:class:`loadgen.coap.plan.CoapPlan`), imported here: only CoAP runs load the CoAP package."""
    try:
        from loadgen.coap.plan import CoapPlan  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigError("CoAP request steps need loadgen.coap.plan, which this build lacks") from None
    try:
        plan: WorkloadPlan = CoapPlan.build(requests, coap, ping, gate)
    except ValueError as exc:
        raise ConfigError(f"requests: {exc}") from None
    return plan
