"""The README's YAML examples for CoAP, request steps and device groups load as scenarios and mean
what the text around them says (a README example that no longer loads is a broken promise)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from loadgen.scenario import parse_scenario
from loadgen.scenario.model import Scenario

README = Path(__file__).resolve().parent.parent / "README.md"
KEY = "00112233445566778899aabbccddeeff"
#: What a fragment leaves out, so that it loads on its own.
BASE = {"name": "readme", "clients": {"count": 100, "spawn_rate": 10}, "run_time": "1m",
        "psk": {"identity": "device-{n:05d}", "key": KEY},
        "targets": [{"name": "gw1", "host": "127.0.0.1", "port": 5684},
                    {"name": "gw2", "host": "127.0.0.1", "port": 5685}]}


def yaml_blocks(heading: str) -> list[str]:
    """The ```yaml blocks of the README section under ``heading`` (up to the next heading of its level)."""
    text = README.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    section = text[start:end if end > 0 else None]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def load(fragment: str) -> Scenario:
    data = {**BASE, **yaml.safe_load(fragment)}
    return parse_scenario(yaml.safe_dump(data, sort_keys=False), "README.md")


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GW_PSK", "LOADGEN_PSK", "TRACKER_PSK"):
        monkeypatch.setenv(name, KEY)


def test_the_coap_example_is_a_coap_workload() -> None:
    [example, *_] = yaml_blocks("## CoAP over DTLS")
    s = load(example)
    names = [step.name for step in s.requests]
    assert names == ["register", "GET /sensors/temp", "observe time", "GET /config", "CoAP ping"]
    register, temp, observe, config, ping = s.requests
    assert register.once and register.coap is not None and register.coap.method == "POST"
    assert register.coap.query == ("ep={name}",) and register.expect.code == "2.01"
    assert temp.interval == 10.0 and temp.expect.code == "2.05" and temp.expect.regex is not None
    assert observe.coap is not None and observe.coap.observe and observe.coap.observe_for == 60.0
    assert config.coap is not None and not config.coap.confirmable and config.coap.block_size == 64
    assert ping.coap is not None and ping.coap.ping and ping.interval == 30.0
    assert (s.coap.ack_timeout, s.coap.ack_random_factor, s.coap.max_retransmit) == (2.0, 1.5, 4)


def test_the_request_steps_examples_load() -> None:
    steps, binary_ping = yaml_blocks("### requests")[:2]
    s = load(steps)
    register, telemetry, config = s.requests
    assert register.once and telemetry.in_flight == 4 and telemetry.expect.seq_offset == 1
    assert telemetry.payload is not None and telemetry.payload.seq_width == 4 and config.interval == 5.0
    ping = load(binary_ping).ping
    assert ping.expect.prefix == bytes.fromhex("60") and ping.expect.seq_offset == 2


def test_the_device_groups_example_is_a_fleet_of_three() -> None:
    [example] = yaml_blocks("### devices")
    s = load(example)
    meters, sensors, trackers = s.fleet()
    assert (meters.count, sensors.share, trackers.share) == (20, 3, 1)
    assert [step.name for step in meters.requests] == ["register", "report"]
    assert sensors.requests == () and sensors.ping == s.ping
    assert trackers.targets == ("gw2",) and trackers.ping is not None and trackers.ping.interval == 1.0
    assert meters.psk is not None and meters.psk.identity_for(19) == b"meter-0019"
