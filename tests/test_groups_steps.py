"""Device groups with request steps (``devices[].requests``, the steps helper's section): post-merge glue."""

from __future__ import annotations

from pathlib import Path

from test_groups import TARGETS, error, load


def test_a_groups_request_steps_replace_the_scenarios_ping(tmp_path: Path) -> None:
    s = load(tmp_path, """\
        devices:
          - name: meters
            count: 1
            psk: {identity: "m-{n}"}
            requests:
              - {name: register, once: true, payload: {text: "REG {name}"}, expect: echo}
          - {name: sensors, count: 1, psk: {identity: "s-{n}"}}
        """)
    meters, sensors = s.fleet()
    assert [step.name for step in meters.requests] == ["register"] and meters.ping == s.ping
    assert sensors.requests == () and sensors.ping == s.ping


def test_a_groups_coap_steps_need_coap_targets(tmp_path: Path) -> None:
    body = """\
        devices:
          - name: meters
            count: 1
            psk: {identity: "m-{n}"}
            requests:
              - {coap: {method: GET, path: /temp}}
        """
    err = error(tmp_path, body)
    assert err.key_path == "devices[0].requests" and "CoAP requests need targets" in err.message
    load(tmp_path, body, targets=TARGETS)
