"""CoapPlan: a scenario's CoAP request steps, built once and shared by the associations of a run.

``CoapPlan.build(steps, coap, ping)`` is what :func:`loadgen.traffic.plans.build_plan` calls
for ``requests:`` steps with ``coap:``; :meth:`CoapPlan.workload` makes the
:class:`~loadgen.coap.workload.CoapWorkload` one DTLS association runs.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from loadgen.coap.endpoint import DEFAULT_CONFIG, max_transmit_wait
from loadgen.coap.exchange import Request
from loadgen.coap.workload import CoapWorkload
from loadgen.scenario.model import CoapConfig, CoapRequest, PingConfig, RequestStep
from loadgen.stats.facts import Sink
from loadgen.traffic.payloads import DEVICE_FIELDS, ReplyRule, payload_maker
from loadgen.traffic.workload import Gate, Uniform

#: ``make(name, seq) -> Request``: request number ``seq`` of association ``name``.
RequestMaker = Callable[[str, int], Request]


def _fields(texts: Iterable[str]) -> set[str]:
    """The template fields ``texts`` use ({seq} -> "seq")."""
    return {f.split(".")[0].split("[")[0] for text in texts
            for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _texts(coap: CoapRequest) -> list[str]:
    payload = coap.payload
    return [coap.path, *coap.query, *([payload.text] if payload is not None and payload.text else [])]


def request_maker(coap: CoapRequest, **fields: object) -> tuple[RequestMaker, bool]:
    """The maker of ``coap``'s requests (``fields``: the per-device template fields n, target)
    and whether its requests differ (False: one :class:`Request` serves every request)."""
    if coap.ping:
        ping = Request.ping_request()
        return (lambda name, seq: ping), False
    payload = payload_maker(coap.payload, **fields) if coap.payload is not None else None
    varies = bool(_fields(_texts(coap))) or (coap.payload is not None and coap.payload.seq_offset is not None)

    def make(name: str, seq: int) -> Request:
        def fmt(text: str) -> str:
            return text.format(name=name, seq=seq, **fields) if varies else text

        return Request.build(coap.method, fmt(coap.path), tuple(fmt(q) for q in coap.query),
                             payload(name, seq) if payload is not None else b"",
                             content_format=coap.content_format, accept=coap.accept, confirmable=coap.confirmable,
                             observe=coap.observe, observe_for=coap.observe_for, block_size=coap.block_size)

    if varies:
        return make, True
    fixed = make("", 0)
    return (lambda name, seq: fixed), False


@dataclass(frozen=True, slots=True)
class CoapStep:
    """One built step: its requests, how a response is judged, its timeout."""

    step: RequestStep
    coap: CoapRequest
    make: RequestMaker
    matcher: ReplyRule
    timeout: float  # until an unanswered request fails with coap-timeout
    notification_kind: str  # the stats row of its Observe notifications
    want_code: str | None = None  # expect.code
    judge_payload: bool = False  # the payload rule is not "any"

    @classmethod
    def build(cls, step: RequestStep, config: CoapConfig, shared_interval: float, **fields: object) -> CoapStep:
        """ValueError when ``step`` is no CoAP step or its request cannot be built."""
        coap = step.coap
        if coap is None:
            raise ValueError(f"request step {step.name!r} has no coap: section")
        make, _ = request_maker(coap, **fields)
        make("", 0)  # a bad method or block size fails here, at build time, not mid-run
        if step.timeout is not None:
            timeout = step.timeout
        elif coap.confirmable or coap.ping or step.once:
            timeout = max_transmit_wait(config)  # a CON is retransmitted until RFC 7252's give-up time
        else:
            timeout = step.interval or shared_interval
        rule = ReplyRule.expecting(step.expect)
        return cls(step, coap, make, rule, timeout, f"{step.name} notification", step.expect.code, rule.kind != "any")


@dataclass(frozen=True, slots=True)
class CoapPlan:
    """A scenario's (or device group's) CoAP steps: a :class:`~loadgen.traffic.workload.WorkloadPlan`.
    ``ping`` gives the weighted steps' shared interval, the jitter and ``max_missed``."""

    steps: tuple[CoapStep, ...]
    config: CoapConfig = DEFAULT_CONFIG
    ping: PingConfig = field(default_factory=PingConfig)
    device_fields: bool = False  # some step's templates use {n} or {target}
    gate: Gate = field(default_factory=Gate, compare=False, repr=False)  # closed: no request begins

    @classmethod
    def build(cls, steps: Iterable[RequestStep], coap: CoapConfig = DEFAULT_CONFIG,
              ping: PingConfig | None = None, gate: Gate | None = None) -> CoapPlan:
        """The plan of ``steps`` (each with ``coap`` set; ``gate``: the run's, else one of its own).
        ValueError for a step without one, or none at all."""
        ping = ping or PingConfig()
        steps = tuple(steps)
        if not steps:
            raise ValueError("a CoAP plan needs at least one request step")
        built = tuple(CoapStep.build(s, coap, ping.interval, n=0, target="") for s in steps)
        uses = set().union(*(_fields(_texts(s.coap)) for s in built))
        return cls(built, coap, ping, bool(uses & DEVICE_FIELDS), gate if gate is not None else Gate())

    def for_device(self, *, n: int, target: str) -> CoapPlan:
        """This plan for device ``n`` talking to ``target`` (itself when no template names either)."""
        if not self.device_fields:
            return self
        steps = tuple(CoapStep.build(s.step, self.config, self.ping.interval, n=n, target=target) for s in self.steps)
        return replace(self, steps=steps)

    def workload(self, name: str, target: str, sink: Sink, *, uniform: Uniform = random.uniform) -> CoapWorkload:
        """A fresh :class:`~loadgen.coap.workload.CoapWorkload` for association ``name``."""
        return CoapWorkload(name, target, self, sink, uniform=uniform)

