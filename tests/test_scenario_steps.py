"""Scenario files: the ``requests:`` steps, CoAP requests, the ``coap:`` section and the new ``expect`` keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.scenario import Scenario, ScenarioError, parse_scenario
from loadgen.scenario.model import CoapConfig, CoapRequest, Expect, Payload

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
BASE = 'name: t\nclients: {count: 10}\nrun_time: 10s\npsk: {key: "00112233"}\n'  # 4 lines
DTLS = BASE + "targets: [{name: gw1, host: 127.0.0.1, port: 5684}]\n"  # 5 lines


def load(text: str) -> Scenario:
    return parse_scenario(text, "s.yaml")


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load(text)
    err = info.value
    assert str(err).startswith(f"s.yaml:{err.line}: {err.key_path}: ") and "\n" not in str(err)
    return err


def test_plain_steps_with_their_defaults() -> None:
    s = load(BASE + """requests:
  - name: register
    payload: {text: "REG {name}"}
    once: true
    expect: echo
  - payload: {hex: "40010000", seq_offset: 2}
    interval: 10s
    in_flight: 4
    timeout: 2s
    expect: {prefix: "60", seq_offset: 2}
  - payload: {text: "T {seq}"}
    weight: 3
""")
    register, second, third = s.requests
    assert (register.name, register.once, register.expect.kind, register.payload) == (
        "register", True, "echo", Payload(text="REG {name}"))
    assert (second.name, second.interval, second.in_flight, second.timeout) == ("request 2", 10.0, 4, 2.0)
    assert second.expect == Expect("prefix", prefix=b"\x60", seq_offset=2, seq_width=2)
    assert (third.name, third.weight, third.interval, third.once, third.in_flight) == ("request 3", 3.0, None, False, 1)
    assert s.coap == CoapConfig() and s.ping.interval == 5.0  # the ping section stays (shared interval)
    assert load(BASE).requests == ()


def test_coap_steps_and_the_coap_section() -> None:
    s = load(DTLS + """requests:
  - coap: {path: /sensors/temp, accept: 50}
    interval: 5s
    expect: {code: 2.05, regex: "^[0-9.]+$"}
  - name: rd
    coap:
      method: POST
      path: /rd
      query: ["ep={name}", "lt=300"]
      payload: {text: "</3303/0>"}
      content_format: 40
      type: NON
    once: true
  - coap: {path: /obs, observe: true, observe_for: 30s, block_size: 64}
  - coap: {ping: true}
    interval: 1m
coap: {ack_timeout: 1s, ack_random_factor: 1.2, max_retransmit: 2}
""")
    get, rd, obs, ping = s.requests
    assert get.name == "GET /sensors/temp" and get.coap == CoapRequest(path="/sensors/temp", accept=50)
    assert get.expect.code == "2.05" and get.expect.regex is not None
    assert rd.name == "rd" and rd.coap is not None and not rd.coap.confirmable
    assert (rd.coap.method, rd.coap.query, rd.coap.content_format) == ("POST", ("ep={name}", "lt=300"), 40)
    assert obs.coap == CoapRequest(path="/obs", observe=True, observe_for=30.0, block_size=64)
    assert ping.name == "CoAP ping" and ping.coap is not None and ping.coap.ping and ping.interval == 60.0
    assert s.coap == CoapConfig(ack_timeout=1.0, ack_random_factor=1.2, max_retransmit=2)


def test_a_quoted_code_and_every_detail_up_to_31() -> None:
    assert load(DTLS + 'requests: [{coap: {path: /a}, expect: {code: "4.04"}}]\n').requests[0].expect.code == "4.04"
    assert load(DTLS + "requests: [{coap: {path: /a}, expect: {code: 5.31}}]\n").requests[0].expect.code == "5.31"


@pytest.mark.parametrize(("code", "shown"),
                         [("2.5", "2.5"), ('"3.00"', "'3.00'"), ("2.32", "2.32"), ('"205"', "'205'")])
def test_codes_outside_the_class_detail_form_are_refused(code: str, shown: str) -> None:
    err = error(DTLS + f"requests:\n  - coap: {{path: /a}}\n    expect: {{code: {code}}}\n")
    assert (err.line, err.key_path) == (8, "requests[0].expect.code")
    assert f'expected a CoAP response code like "2.05" (class 2, 4 or 5, detail 00..31), got {shown}' in str(err)


@pytest.mark.parametrize(("steps", "line", "key_path", "message"), [
    ("  - payload: {text: a}\n    coap: {path: /a}\n", 8, "requests[0]",
     "expected exactly one of payload, coap, got payload and coap"),
    ("  - interval: 1s\n", 7, "requests[0]", "expected exactly one of payload, coap, got none"),
    ("  - payload: {text: a}\n    interval: 1s\n    weight: 2\n", 9, "requests[0].weight",
     "expected at most one of interval, weight, once: true, got interval and weight"),
    ("  - payload: {text: a}\n    once: true\n    interval: 1s\n", 9, "requests[0].interval",
     "expected at most one of interval, weight, once: true, got once and interval"),
    ("  - payload: {text: a}\n    once: true\n    in_flight: 2\n", 9, "requests[0].in_flight",
     "a once step sends one request"),
    ("  - payload: {text: a}\n    in_flight: 0\n", 8, "requests[0].in_flight",
     "expected an integer from 1 to 1000, got 0"),
    ("  - payload: {text: a}\n    weight: 0\n", 8, "requests[0].weight", "expected a number > 0, got 0"),
    ("  - payload: {text: '{nmae}'}\n", 7, "requests[0].payload.text", "unknown template field {nmae}"),
    ("  - name: a\n    payload: {text: x}\n  - name: a\n    payload: {text: y}\n", 9, "requests[1].name",
     "duplicate step name 'a' (also requests[0])"),
    ("  - payload: {text: x}\n  - payload: {text: y}\n    name: request 1\n", 9, "requests[1].name",
     "duplicate step name 'request 1'"),
    ("  - name: handshake\n    payload: {text: x}\n", 7, "requests[0].name", "the handshake's stats row"),
    ("  - name: \"a\\nb\"\n    payload: {text: x}\n", 7, "requests[0].name", "1 to 100 printable characters"),
    ("  - payload: {text: x}\n    expect: {code: 2.05}\n", 8, "requests[0].expect.code",
     "only for CoAP requests (a plain reply has no response code)"),
    ("  - payload: {text: 'x {seq}'}\n    expect: {seq_offset: 0}\n", 8, "requests[0].expect.seq_offset",
     "needs a hex payload with seq_offset: the request must carry its sequence number"),
    ("  - payload: {hex: '0000'}\n    expect:\n      prefix: '00'\n      seq_offset: 0\n", 10,
     "requests[0].expect.seq_offset", "needs a hex payload with seq_offset"),
    ("  - payload: {hex: '0000', seq_offset: 0}\n    expect: {seq_width: 2}\n", 8, "requests[0].expect.seq_width",
     "seq_width needs seq_offset"),
    ("  - payload: {text: x}\n    expect: {regex: a, prefix: '00'}\n", 8, "requests[0].expect",
     "expected at most one of regex, prefix, got regex and prefix"),
    ("  - payload: {text: x}\n    expect: {}\n", 8, "requests[0].expect",
     "expected at least one of regex, prefix, code"),
    ("  - payload: {hex: '0000', seq_offset: 0, seq_width: 1}\n    expect: {seq_offset: 0}\n    in_flight: 200\n"
     "  - payload: {text: x}\n    in_flight: 100\n", 7, "requests[0].expect.seq_width",
     "300 requests may be in flight, more than a 1-byte sequence number tells apart"),
    ("  - payload: {text: x}\n  - coap: {path: /a}\n", 8, "requests[1]",
     "plain payload steps and CoAP steps cannot be mixed in one list: a CoAP exchange is matched by its token"),
    ("  - coap: {path: a}\n", 7, "requests[0].coap.path", "expected a path starting with '/'"),
    ("  - coap: {path: /a, method: GOT}\n", 7, "requests[0].coap.method", "expected one of 'GET', 'POST'"),
    ("  - coap: {path: /a, type: ACK}\n", 7, "requests[0].coap.type", "expected one of 'CON', 'NON', got 'ACK'"),
    ("  - coap: {path: /a, observe_for: 10s}\n", 7, "requests[0].coap.observe_for", "observe_for needs observe: true"),
    ("  - coap: {path: /a, method: POST, observe: true}\n", 7, "requests[0].coap.observe",
     "expected GET or FETCH to observe (RFC 7641), got POST"),
    ("  - coap: {path: /a, block_size: 100}\n", 7, "requests[0].coap.block_size", "expected one of 16, 32"),
    ("  - coap: {ping: true, path: /a}\n", 7, "requests[0].coap.path",
     "a CoAP ping is an empty CON message: it takes no path"),
    ("  - coap: {ping: true, type: NON}\n", 7, "requests[0].coap.type",
     "a CoAP ping is an empty CON message: it takes no type"),
    ("  - coap: {ping: true}\n    expect: {code: 2.05}\n", 8, "requests[0].expect.code", "answered by RST"),
    ("  - coap: {path: /a}\n    expect: {seq_offset: 1}\n", 8, "requests[0].expect.seq_offset",
     "CoAP replies are matched by token"),
    ("  - coap: {path: /a, query: ['{x}']}\n", 7, "requests[0].coap.query[0]", "unknown template field {x}"),
    ("  - coap: {path: /a, frobnicate: 1}\n", 7, "requests[0].coap.frobnicate", "unknown key 'frobnicate'"),
    ("  - payload: {text: x}\n    intervall: 1s\n", 8, "requests[0].intervall", "did you mean 'interval'?"),
])
def test_bad_steps_are_located(steps: str, line: int, key_path: str, message: str) -> None:
    err = error(DTLS + "requests:\n" + steps)
    assert (err.line, err.key_path) == (line, key_path), str(err)
    assert message in str(err)


def test_coap_needs_dtls_targets_that_speak_coap() -> None:
    steps = "requests:\n  - coap: {path: /a}\n"
    err = error(BASE + steps)
    assert (err.line, err.key_path) == (6, "requests") and "the built-in reference server only echoes" in str(err)
    tls = BASE + "targets: [{name: gw1, host: h, port: 1}, {name: web, host: h, port: 2, protocol: tls}]\n"
    err = error(tls + steps)
    assert (err.line, err.key_path) == (7, "requests")
    assert "need DTLS targets (CoAP over TLS is not supported), got target 'web' with protocol tls" in str(err)
    assert load(tls + "requests: [{payload: {text: x}}]\n").requests[0].name == "request 1"  # plain steps go anywhere


@pytest.mark.parametrize(("section", "key_path", "message"), [
    ("coap: {ack_timeout: 0}", "coap.ack_timeout", "expected a duration > 0"),
    ("coap: {ack_random_factor: 0.5}", "coap.ack_random_factor", "expected a number >= 1"),
    ("coap: {max_retransmit: 21}", "coap.max_retransmit", "expected an integer from 0 to 20"),
    ("coap: {nstart: 1}", "coap.nstart", "unknown key 'nstart'"),
])
def test_bad_coap_section(section: str, key_path: str, message: str) -> None:
    err = error(DTLS + section + "\n")
    assert (err.line, err.key_path) == (6, key_path) and message in str(err)


def test_the_ping_section_takes_the_new_expect_keys_where_they_apply() -> None:
    s = load(BASE + "ping:\n  payload: {hex: '40010000', seq_offset: 2, seq_width: 2}\n  expect: {seq_offset: 2}\n")
    assert s.ping.expect == Expect("any", seq_offset=2, seq_width=2)
    err = error(BASE + "ping:\n  expect: {code: 2.05}\n")
    assert (err.line, err.key_path) == (6, "ping.expect.code") and "only for CoAP requests" in str(err)
    err = error(BASE + "ping:\n  expect: {seq_offset: 0}\n")
    assert (err.line, err.key_path) == (6, "ping.expect.seq_offset") and "needs a hex payload" in str(err)
    err = error(BASE + "ping:\n  expect: exact\n")
    assert "expected 'any', 'echo' or a mapping of regex, prefix, code, seq_offset, seq_width" in str(err)


def test_regexes_are_compiled_with_dotall() -> None:
    s = load(BASE + "requests: [{payload: {text: x}, expect: {regex: '^a.b$'}}]\nping: {expect: {regex: '^a.b$'}}\n")
    for expect in (s.requests[0].expect, s.ping.expect):
        assert expect.regex is not None and expect.regex.search(b"a\nb")


def test_redacted_steps_are_plain_data() -> None:
    import json

    s = load(DTLS + "requests:\n  - coap: {path: /a, payload: {hex: '0102'}}\n    expect: {regex: 'x', code: 2.05}\n")
    step = s.redacted()["requests"][0]
    assert step["coap"]["payload"]["data"] == "0102" and step["expect"]["regex"] == "x"
    json.dumps(s.redacted())


@pytest.mark.parametrize("name", ["request-steps.yaml", "coap-device.yaml"])
def test_shipped_step_scenarios(name: str) -> None:
    from loadgen.scenario import load_scenario

    s = load_scenario(ROOT / "scenarios" / name)
    assert s.requests and len({step.name for step in s.requests}) == len(s.requests)
