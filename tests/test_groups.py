"""Device groups (``devices:``): loading and its errors, the groups' Locust user classes and their
numbering. Runs of a two-group scenario are in ``test_groups_runs.py``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest
from locust.dispatch import UsersDispatcher
from locust.env import Environment
from locust.runners import WorkerNode

from loadgen.locust.environment import BUILTIN_TARGET, make_environment
from loadgen.locust.users import Endpoint, PingUser, Session, user_classes
from loadgen.scenario import Scenario, ScenarioError, load_scenario
from loadgen.scenario.devices import IDENTITY_CHECK

pytestmark = pytest.mark.timeout(60)

KEY = "5a17c0ffee0ddba11deadbeef0123456"
TARGETS = """\
    targets:
      - {name: gw1, host: 127.0.0.1, port: 5684}
      - {name: gw2, host: 127.0.0.1, port: 5685}
    """


def scenario_text(body: str, *, targets: str = "", psk: str = f'psk: {{key: "{KEY}"}}') -> str:
    return "name: fleet\nrun_time: 10s\n" + psk + "\n" + textwrap.dedent(targets) + textwrap.dedent(body)


def load(tmp_path: Path, body: str, **kwargs: str) -> Scenario:
    path = tmp_path / "fleet.yaml"
    path.write_text(scenario_text(body, **kwargs))
    return load_scenario(path)


def error(tmp_path: Path, body: str, **kwargs: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load(tmp_path, body, **kwargs)
    err = info.value
    assert str(err).startswith(f"{tmp_path / 'fleet.yaml'}:{err.line}: {err.key_path}: "), str(err)
    return err


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of the scenario text containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


TWO_GROUPS = """\
    ping: {interval: 2s, expect: echo}
    devices:
      - name: meters
        count: 3
        psk: {identity: "meter-{n:03d}"}
        ping: {interval: 30s}
      - name: sensors
        share: 2
        psk: {identity: "sensor-{n}", hint: other}
      - name: cams
        share: 1
        psk: {identity: "cam-{n}"}
        targets: [gw2]
    clients: {count: 10}
    """


# --- loading ------------------------------------------------------------------------------


def test_groups_load_with_their_own_sections_or_the_scenarios(tmp_path: Path) -> None:
    s = load(tmp_path, TWO_GROUPS, targets=TARGETS)
    meters, sensors, cams = s.fleet()
    assert (meters.name, meters.count, sensors.share, cams.share) == ("meters", 3, 2.0, 1.0)
    assert s.clients.count == 10
    # psk: the identity is the group's, the key source the scenario's (the same store).
    assert meters.psk is not None and meters.psk.identity_for(7) == b"meter-007"
    assert s.psk is not None and meters.psk.store is s.psk.store and meters.psk.hint == "loadgen"
    assert sensors.psk is not None and sensors.psk.hint == "other"
    # ping: a group's own section replaces the scenario's (keys it leaves out take their defaults).
    assert meters.ping is not None and (meters.ping.interval, meters.ping.expect.kind) == (30.0, "any")
    assert sensors.ping == s.ping and sensors.ping is not None and sensors.ping.interval == 2.0
    assert (meters.targets, cams.targets) == ((), ("gw2",))


def test_a_group_with_its_own_key_source(tmp_path: Path) -> None:
    s = load(tmp_path, """\
        devices:
          - {name: a, count: 1, psk: {identity: "a-{n}", key: "00112233"}}
          - {name: b, count: 1}
        """, targets=TARGETS)
    a, b = s.fleet()
    assert a.psk is not None and a.psk.store.key_for(b"a-0") != b.psk.store.key_for(b"device-00000")  # type: ignore[union-attr]
    assert b.psk == s.psk


def test_counts_alone_give_clients_count(tmp_path: Path) -> None:
    s = load(tmp_path, """\
        devices:
          - {name: a, count: 2, psk: {identity: "a-{n}"}}
          - {name: b, count: 5, psk: {identity: "b-{n}"}}
        """)
    assert s.clients.count == 7 and s.clients.spawn_rate == 7.0


def test_without_devices_one_implicit_group_and_nothing_else_changes(tmp_path: Path) -> None:
    s = load(tmp_path, "clients: {count: 4}\n")
    assert s.devices == ()
    (group,) = s.fleet()
    assert (group.name, group.count, group.psk, group.ping, group.targets) == ("", None, s.psk, s.ping, ())
    session = Session(s, Environment(), [Endpoint(BUILTIN_TARGET, ("127.0.0.1", 9))])
    assert [c.__name__ for c in user_classes(PingUser, s, "Device", session=session)] == ["Device"]
    assert session.groups[""].label("builtin") == "builtin"  # stats keys and Locust rows as before


# --- errors: file, line, key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle", "key_path", "message"),
    [
        ("devices:\n  - {name: a, count: 1, psk: {identity: 'a{n}'}}\n  - {name: a, count: 1}\nclients: {count: 2}\n",
         "- {name: a, count: 1}", "devices[1].name", "duplicate device group name 'a'"),
        ("devices:\n  - {name: a, count: 1, share: 2}\nclients: {count: 2}\n",
         "share: 2", "devices[0].share", "give count or share, not both"),
        ("devices:\n  - {name: 'a b', count: 1}\nclients: {count: 1}\n",
         "a b", "devices[0].name", "a name of letters, digits"),
        ("devices:\n  - {name: a, count: 1, ping: {intervall: 1s}}\nclients: {count: 1}\n",
         "intervall", "devices[0].ping.intervall", "did you mean 'interval'?"),
        ("devices:\n  - {name: a, cout: 1}\nclients: {count: 1}\n",
         "cout", "devices[0].cout", "did you mean 'count'?"),
        ("devices:\n  - {name: a, count: 0}\nclients: {count: 1}\n",
         "count: 0", "devices[0].count", "expected an integer >= 1"),
    ],
)
def test_group_errors_name_line_and_key(tmp_path: Path, body: str, needle: str, key_path: str, message: str) -> None:
    err = error(tmp_path, body, targets=TARGETS)
    assert (err.line, err.key_path) == (line_of(scenario_text(body, targets=TARGETS), needle), key_path), str(err)
    assert message in err.message, str(err)


def test_counts_above_clients_count(tmp_path: Path) -> None:
    body = """\
        clients: {count: 5}
        devices:
          - {name: a, count: 3, psk: {identity: "a-{n}"}}
          - {name: b, count: 3, psk: {identity: "b-{n}"}}
          - {name: c, share: 1, psk: {identity: "c-{n}"}}
        """
    err = error(tmp_path, body)
    assert (err.line, err.key_path) == (line_of(scenario_text(body), "clients:"), "clients.count")
    assert "the device groups' counts sum to 6, above clients.count 5" in err.message


def test_counts_that_leave_clients_to_no_group(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        clients: {count: 9}
        devices:
          - {name: a, count: 3, psk: {identity: "a-{n}"}}
        """)
    assert err.key_path == "clients.count" and "leaves 6 clients to no group" in err.message


def test_a_stage_above_the_counts(tmp_path: Path) -> None:
    err = error(tmp_path, """\
        stages: [{duration: 5s, clients: 2}, {duration: 5s, clients: 4}]
        devices:
          - {name: a, count: 3, psk: {identity: "a-{n}"}}
        """)
    assert err.key_path == "stages[1].clients" and "4 clients, above the 3" in err.message


def test_unknown_target_name(tmp_path: Path) -> None:
    body = "devices:\n  - name: a\n    count: 1\n    targets: [gw1, gw9]\nclients: {count: 1}\n"
    err = error(tmp_path, body, targets=TARGETS)
    assert (err.line, err.key_path) == (line_of(scenario_text(body, targets=TARGETS), "gw9"), "devices[0].targets[1]")
    assert "unknown target 'gw9' (targets: gw1, gw2)" in err.message


def test_targets_without_targets_is_the_builtin_server(tmp_path: Path) -> None:
    err = error(tmp_path, "devices:\n  - {name: a, count: 1, targets: [builtin]}\nclients: {count: 1}\n")
    assert err.key_path == "devices[0].targets[0]" and "the scenario has no targets" in err.message


def test_two_groups_on_the_scenarios_identity_collide(tmp_path: Path) -> None:
    """Two groups without a psk of their own would both be device-00000, ...: one device to a server."""
    body = "devices:\n  - {name: a, count: 2}\n  - {name: b, count: 2}\nclients: {count: 4}\n"
    err = error(tmp_path, body, targets=TARGETS)
    assert (err.line, err.key_path) == (line_of(scenario_text(body, targets=TARGETS), "name: b"), "devices[1].psk")
    assert "identity 'device-00000' would be used by groups 'a' and 'b'" in err.message


def test_different_templates_whose_identities_overlap_collide(tmp_path: Path) -> None:
    """``dev-{n}`` and ``dev-{n:02d}`` differ as text, but both make dev-10 (device 10 of each)."""
    body = """\
        clients: {count: 20}
        devices:
          - {name: a, count: 11, psk: {identity: "dev-{n:02d}"}}
          - {name: b, share: 1, psk: {identity: "dev-{n}"}}
        """
    err = error(tmp_path, body)
    assert (err.line, err.key_path) == (line_of(scenario_text(body), "name: b"), "devices[1].psk")
    assert "identity 'dev-10' would be used by groups 'a' and 'b'" in err.message
    # Device 9 of a is dev-09, of b dev-9: with 10 devices each, nothing overlaps.
    load(tmp_path, body.replace("count: 11", "count: 10").replace("count: 20", "count: 10")
         .replace("share: 1", "count: 10").replace("clients: {count: 10}", "clients: {count: 20}"))


def test_identity_check_is_bounded(tmp_path: Path) -> None:
    """A collision past the devices compared is not seen (documented): the check is bounded in work.
    Here a's device 10000 is d10000, b's device 0 too; a's first 10000 are d00000..d09999."""
    assert IDENTITY_CHECK == 10_000
    n = IDENTITY_CHECK + 5
    load(tmp_path, f"""\
        clients: {{count: {2 * n}}}
        devices:
          - {{name: a, count: {n}, psk: {{identity: "d{{n:05d}}"}}}}
          - {{name: b, count: {n}, psk: {{identity: "d1{{n:04d}}"}}}}
        """)


def test_group_identity_only_needs_a_scenario_key(tmp_path: Path) -> None:
    body = "devices:\n  - name: a\n    count: 1\n    psk: {identity: 'a-{n}'}\nclients: {count: 1}\n"
    err = error(tmp_path, body, targets=TARGETS, psk="")
    assert (err.line, err.key_path) == (line_of(scenario_text(body, targets=TARGETS, psk=""), "psk:"),
                                        "devices[0].psk")
    assert "expected exactly one of key, key_env, key_file, derive, csv" in err.message


def test_a_dtls_group_without_any_psk(tmp_path: Path) -> None:
    err = error(tmp_path, "devices:\n  - {name: a, count: 1}\nclients: {count: 1}\n", targets=TARGETS, psk="")
    assert err.key_path == "devices[0].psk" and "required key is missing" in err.message


def test_builtin_server_serves_one_key_source(tmp_path: Path) -> None:
    body = """\
        clients: {count: 2}
        devices:
          - {name: a, count: 1, psk: {identity: "a-{n}"}}
          - {name: b, count: 1, psk: {identity: "b-{n}", key: "00112233"}}
        """
    err = error(tmp_path, body)
    assert (err.line, err.key_path) == (line_of(scenario_text(body), "name: b"), "devices[1].psk")
    assert "the built-in server (no targets) serves one key source" in err.message
    assert "00112233" not in str(err)
    load(tmp_path, body, targets=TARGETS)  # a real target knows its own keys


def test_inherited_csv_must_hold_the_groups_identity(tmp_path: Path) -> None:
    table = tmp_path / "keys.csv"
    table.write_text(f"device-00000,{KEY}\nmeter-0,{KEY}\n")
    table.chmod(0o600)
    ok = "devices:\n  - {name: m, count: 1, psk: {identity: 'meter-{n}'}}\nclients: {count: 1}\n"
    load(tmp_path, ok, targets=TARGETS, psk=f"psk: {{csv: {table}}}")
    err = error(tmp_path, ok.replace("meter-{n}", "gauge-{n}"), targets=TARGETS, psk=f"psk: {{csv: {table}}}")
    assert err.key_path == "devices[0].psk.identity" and "'gauge-0' of client 0 is not in" in err.message


# --- user classes and numbering -----------------------------------------------------------


def endpoints(s: Scenario) -> list[Endpoint]:
    return [Endpoint(t, (t.host, t.port)) for t in s.targets]


def test_one_user_class_per_group_with_count_or_share(tmp_path: Path) -> None:
    s = load(tmp_path, TWO_GROUPS, targets=TARGETS)
    env, _ = make_environment(s, endpoints(s))
    meters, sensors, cams = env.user_classes
    assert [c.__name__ for c in env.user_classes] == ["meters", "sensors", "cams"]
    assert (meters.fixed_count, sensors.fixed_count, sensors.weight, cams.weight) == (3, 0, 2.0, 1.0)


def test_locust_dispatches_counts_first_then_shares_by_weight(tmp_path: Path) -> None:
    """Locust's own dispatcher (as its runners use it): 3 meters, then the other 7 by share 2:1."""
    s = load(tmp_path, TWO_GROUPS.replace("count: 10", "count: 12"), targets=TARGETS)
    env, _ = make_environment(s, endpoints(s))
    node = WorkerNode("local")
    dispatcher = UsersDispatcher(worker_nodes=[node], user_classes=env.user_classes)
    dispatcher.new_dispatch(target_user_count=12, spawn_rate=1e6)
    with gevent.Timeout(10):
        dispatched = list(dispatcher)[-1]
    assert dispatched[node.id] == {"meters": 3, "sensors": 6, "cams": 3}


def test_each_group_numbers_its_devices_from_0_and_apart_across_processes(tmp_path: Path) -> None:
    s = load(tmp_path, TWO_GROUPS, targets=TARGETS)
    session = Session(s, Environment(), endpoints(s), index_offset=1, index_stride=2)
    assert [session.next_device("meters") for _ in range(3)] == [1, 3, 5]
    assert [session.next_device("sensors") for _ in range(2)] == [1, 3]
    session.renumber(0, 3)  # a plain Locust worker told its place: every group starts again
    assert [session.next_device("meters"), session.next_device("cams"), session.next_device("meters")] == [0, 0, 3]
    # Identities, targets and the facts' target label per group.
    make = session.association_factory(4, session.endpoints_for(4, "cams")[0], "cams")()
    assert (make.name, make.target) == ("cam-4", "cams@gw2")
    assert session.endpoints_for(4, "cams") == [e for e in endpoints(s) if e.target.name == "gw2"]
    assert session.association_factory(0, endpoints(s)[0], "meters")().target == "meters@gw1"


def test_churn_workload_has_one_class_per_group_too(tmp_path: Path) -> None:
    from loadgen.capacity.workload import churn_user_classes
    from loadgen.locust.environment import RunOptions

    s = load(tmp_path, TWO_GROUPS, targets=TARGETS)
    env, session = make_environment(s, endpoints(s), RunOptions(workload="churn", period=2.0))
    assert [(c.__name__, c.group, c.period, c.fixed_count) for c in env.user_classes] == \
        [("meters", "meters", 2.0, 3), ("sensors", "sensors", 2.0, 0), ("cams", "cams", 2.0, 0)]
    single = load(tmp_path, "clients: {count: 2}\n", targets=TARGETS)
    (churn,) = churn_user_classes(Session(single, Environment(), endpoints(single)), 1.0)
    assert (churn.__name__, churn.group) == ("ChurnDevice", "")


def test_a_tls_target_gets_the_groups_label_and_identity(tmp_path: Path) -> None:
    s = load(tmp_path, """\
        devices:
          - {name: phones, count: 2, psk: {identity: "phone-{n}"}, targets: [web]}
          - {name: meters, count: 1, psk: {identity: "meter-{n}"}, targets: [gw1]}
        """, targets=TARGETS + "  - {name: web, host: 127.0.0.1, port: 4433, protocol: tls}\n")
    session = Session(s, Environment(), endpoints(s))
    (web,) = session.endpoints_for(1, "phones")
    tls = session.association_factory(1, web, "phones")()
    assert (type(tls).__name__, tls.name, tls.target) == ("TlsAssociation", "phone-1", "phones@web")
    assert session.tls_psk and session.dtls_context is not None


def test_an_empty_devices_list_is_the_single_group_form(tmp_path: Path) -> None:
    s = load(tmp_path, "devices: []\nclients: {count: 2}\n")
    assert s.devices == () and [g.name for g in s.fleet()] == [""]
    err = error(tmp_path, "devices: []\nclients: {count: 2}\n", psk="")
    assert err.key_path == "psk" and "required key is missing" in err.message
