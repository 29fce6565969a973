"""The ``devices:`` section of a scenario: device groups, each its own class of devices in one fleet.

A group has a ``name``, a ``count`` or a ``share``, and optionally its own ``psk``, ``ping`` /
``requests`` and ``targets``. The checks that need the whole scenario (unknown target names,
counts against ``clients.count`` and the stages, identities two groups would share, one key source
for the built-in server) run in :func:`build_devices`, called from the loader's scenario build.
The section converters of ``psk`` and ``ping`` are the loader's own (passed in, so that a group's
sections are read exactly as the scenario's are).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from loadgen.scenario import model as m
from loadgen.scenario.convert import Conv, Ctx, Fields, join, list_of, section
from loadgen.scenario.scalars import NAME, integer, number, string, template
from loadgen.scenario.traffic import check_request_targets

#: The keys of a psk section that name a key source (a group's psk without one takes the scenario's).
KEY_SOURCES = ("key", "key_env", "key_file", "derive", "csv")

#: Devices per group whose identities are compared with the other groups' (the first ones of each):
#: every group's identities in full would be millions of strings for a large fleet.
IDENTITY_CHECK = 10_000

_NAME = string(NAME, "a name of letters, digits, '_', '.' and '-'")
_IDENTITY_ONLY = section({"identity": template(n=0), "hint": string(empty_ok=True)})


def device_section(psk: Conv, ping: Conv, requests: Conv | None) -> Conv:
    """The converter of one ``devices:`` entry (a :class:`Fields`; :func:`build_devices` makes the group).

    ``psk`` and ``ping`` are the scenario's section converters; ``requests`` the request steps'
    (None until there is one: then a group has no ``requests`` key)."""

    def group_psk(ctx: Ctx, node: Node, path: str) -> Any:
        # With a key source it is a whole psk section; with only identity/hint it takes the scenario's key.
        if isinstance(node, MappingNode) and any(isinstance(k, ScalarNode) and k.value in KEY_SOURCES
                                                 for k, _ in node.value):
            return psk(ctx, node, path)
        return _IDENTITY_ONLY(ctx, node, path)

    fields: dict[str, Conv] = {
        "name": _NAME,
        "count": integer(1),
        "share": number(0, above=True),
        "psk": group_psk,
        "ping": ping,
        "targets": list_of(_NAME),
    }
    if requests is not None:
        fields["requests"] = requests
    return list_of(section(fields, required=("name",)))


def devices_total(groups: Sequence[Fields]) -> int | None:
    """The clients of a fleet whose every group has a count (their sum), else None."""
    counts = [g.values.get("count") for g in groups]
    return sum(counts) if counts and None not in counts else None  # type: ignore[arg-type]


def build_devices(ctx: Ctx, groups: Sequence[Fields], clients: m.Clients, stages: Sequence[m.Stage],
                  targets: Sequence[m.Target], psk: m.PskConfig | None, count_node: Node,
                  stage_nodes: Sequence[Node]) -> tuple[m.DeviceGroup, ...]:
    """The checked device groups; ``count_node`` and ``stage_nodes``: where ``clients.count`` (or the scenario)
    and each stage's ``clients`` are, for errors."""
    if not groups:
        return ()
    names: set[str] = set()
    built: list[m.DeviceGroup] = []
    for rec in groups:
        name = rec.values["name"]
        if name in names:
            ctx.fail(*rec.at("name"), f"duplicate device group name {name!r}")
        names.add(name)
        built.append(_group(ctx, rec, targets, psk))
    _check_counts(ctx, groups, clients, stages, count_node, stage_nodes)
    _check_identities(ctx, groups, built, clients, stages, psk)
    if not targets:
        _check_one_key_source(ctx, groups, built, psk)
    return tuple(built)


def _group(ctx: Ctx, rec: Fields, targets: Sequence[m.Target], psk: m.PskConfig | None) -> m.DeviceGroup:
    v = rec.values
    if "count" in v and "share" in v:
        ctx.fail(*rec.at("share"), "give count or share, not both")
    known = {t.name: t for t in targets}
    for name, (item, path) in zip(v.get("targets", ()), _item_nodes(rec, "targets"), strict=True):
        if name not in known:
            what = ", ".join(known) if known else "none: the scenario has no targets (it runs the built-in server)"
            ctx.fail(item, path, f"unknown target {name!r} (targets: {what})")
    check_request_targets(ctx, rec, [known[t] for t in v["targets"]] if v.get("targets") else list(targets))
    own = v.get("psk")
    if isinstance(own, Fields):  # identity / hint only: the scenario's key source
        own = _inherit_key(ctx, own, psk)
    protocols = {known[t].protocol for t in v.get("targets", ())} or {t.protocol for t in targets} or {"dtls"}
    if own is None and psk is None and "dtls" in protocols:
        ctx.fail(rec.node, join(rec.path, "psk"), "required key is missing (DTLS clients need a pre-shared key: "
                                                  "give the group or the scenario a psk section)")
    fields = {k: v[k] for k in ("name", "count", "share", "ping") if k in v}
    return m.DeviceGroup(**fields, psk=own, requests=tuple(v.get("requests", ())), targets=tuple(v.get("targets", ())))


def _item_nodes(rec: Fields, key: str) -> list[tuple[Node, str]]:
    node, path = rec.at(key)
    return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)] if isinstance(node, SequenceNode) else []


def _inherit_key(ctx: Ctx, rec: Fields, psk: m.PskConfig | None) -> m.PskConfig:
    """A group psk of identity / hint only, with the scenario's key source."""
    if psk is None:
        ctx.fail(rec.node, rec.path, f"expected exactly one of {', '.join(KEY_SOURCES)} (the scenario has no "
                                     "psk section to take the key from)")
    own = dataclasses.replace(psk, **rec.values)
    if own.source == "csv" and own.store.key_for(own.identity_for(0)) is None:
        node, path = rec.at("identity")
        ctx.fail(node, path, f"identity {own.identity.format(n=0)!r} of client 0 is not in the scenario's CSV file")
    return own


def _check_counts(ctx: Ctx, groups: Sequence[Fields], clients: m.Clients, stages: Sequence[m.Stage],
                  count_node: Node, stage_nodes: Sequence[Node]) -> None:
    """Counts fit ``clients.count``; without a share group, nothing is left to no group."""
    counted = [g for g in groups if "count" in g.values]
    total = sum(g.values["count"] for g in counted)
    if total > clients.count:
        ctx.fail(count_node, "clients.count", f"the device groups' counts sum to {total}, above clients.count "
                                              f"{clients.count}")
    if len(counted) < len(groups):
        return
    for i, stage in enumerate(stages):
        if stage.clients > total:
            ctx.fail(stage_nodes[i], f"stages[{i}].clients", f"{stage.clients} clients, above the {total} the "
                                                             "device groups' counts give (no group has a share)")
    if clients.count > total:
        ctx.fail(count_node, "clients.count", f"clients.count {clients.count} leaves {clients.count - total} "
                                              f"clients to no group (the counts sum to {total}): give a group a "
                                              "share instead of a count, or lower clients.count")


def _check_identities(ctx: Ctx, groups: Sequence[Fields], built: Sequence[m.DeviceGroup], clients: m.Clients,
                      stages: Sequence[m.Stage], psk: m.PskConfig | None) -> None:
    """Two groups that would use the same identity are an error: a server would see one device (one key,
    one session) where the scenario means two. Compared over each group's first devices (IDENTITY_CHECK)."""
    peak = max([clients.count, *(s.clients for s in stages)])
    owner: dict[bytes, str] = {}
    for rec, group in zip(groups, built, strict=True):
        own = group.psk or psk
        if own is None:
            continue
        mine = [own.identity_for(n) for n in range(min(group.count or peak, IDENTITY_CHECK))]
        for identity in mine:  # in device order: the message names the first device that collides
            other = owner.get(identity)
            if other is not None and other != group.name:
                node, path = rec.at("psk")
                ctx.fail(node, path, f"identity {identity.decode(errors='replace')!r} would be used by groups "
                                     f"{other!r} and {group.name!r} (give each group its own psk.identity)")
        owner.update(dict.fromkeys(mine, group.name))


def _check_one_key_source(ctx: Ctx, groups: Sequence[Fields], built: Sequence[m.DeviceGroup],
                          psk: m.PskConfig | None) -> None:
    """The built-in server (no targets) serves one key source: every group's must be the same."""
    first: tuple[str, object] | None = None
    for rec, group in zip(groups, built, strict=True):
        own = group.psk or psk
        if own is None:
            continue
        source = (own.location or "", own.store.one_key())
        if first is None:
            first = source
        elif source != first:
            ctx.fail(*rec.at("psk"), "the built-in server (no targets) serves one key source: give this group "
                                     "the same key as the others (or only an identity, to take the scenario's)")
