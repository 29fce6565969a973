"""The key options of ``loadgen serve``: where a server's pre-shared keys come from, and saying so.

The keys themselves are never printed: only where they came from (:func:`key_source`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from loadgen.protocol.credentials import KeyStore, Secret, derive_key, key_from_env, key_from_file, parse_hex
from loadgen.protocol.errors import ConfigError

_T = TypeVar("_T")

#: The demo key of scenarios/quickstart.yaml, used by `serve` when no key option is given. Not a secret.
QUICKSTART_KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))

#: Said by ``serve`` on stderr when no key option chose a key (stdout says only that it is the demo key).
DEMO_KEY_NOTICE = ("WARNING: no key option given, so this server uses the PUBLIC DEMO KEY of scenarios/quickstart.yaml "
                   "(also in scenarios/tls.yaml): fine on loopback, never anywhere else. Clients with another key "
                   "fail with psk-key-mismatch: give the clients' key with --scenario FILE (a scenario's psk "
                   "section), --psk-env VAR, --psk-file PATH, --psk-csv PATH or --psk-master-env VAR.")

#: The ``args`` attributes of the key options: any of them set means a PSK was asked for.
KEY_OPTIONS = ("psk_hex", "psk_env", "psk_file", "psk_csv", "scenario", "psk_master_env")


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """The mutually exclusive key options (and ``--derive-length``) of ``serve dtls`` and ``serve tls``."""
    group = parser.add_argument_group("pre-shared keys (one of; default: the public quickstart demo key, "
                                      "with a notice)")
    keys = group.add_mutually_exclusive_group()
    keys.add_argument("--psk-hex", metavar="HEX", help="one key for every identity (visible in ps: prefer --psk-env)")
    keys.add_argument("--psk-env", metavar="VAR", help="environment variable holding a hex key")
    keys.add_argument("--psk-file", metavar="PATH", help="file holding the key (hex text or raw bytes)")
    keys.add_argument("--psk-csv", metavar="PATH", help="CSV of identity,hex-key rows")
    keys.add_argument("--scenario", metavar="FILE",
                      help="take the keys and identity hint from a scenario's psk section")
    keys.add_argument("--psk-master-env", metavar="VAR",
                      help="derive per-identity keys: HMAC-SHA256(master, identity) with the master from VAR")
    group.add_argument("--derive-length", type=int, default=16, metavar="N", help="derived key length in bytes")


def key_store_from_args(args: argparse.Namespace) -> KeyStore:
    """The KeyStore the key options describe (default: the quickstart key)."""
    if getattr(args, "scenario", None):
        from loadgen.scenario import load_scenario

        psk = load_scenario(args.scenario).psk
        if psk is None:
            raise ConfigError(f"{args.scenario}: the scenario has no psk section")
        args.hint = psk.hint
        return psk.store
    if args.psk_csv:
        return _from_option("--psk-csv", KeyStore.from_csv, args.psk_csv)
    if args.psk_master_env:
        master = key_from_env(args.psk_master_env)
        derive_key(master, b"check", args.derive_length)  # validates the length early
        return KeyStore(master=master, derived_length=args.derive_length)
    if args.psk_hex:
        return KeyStore(shared=parse_hex(args.psk_hex, where="--psk-hex"))
    if args.psk_env:
        return KeyStore(shared=key_from_env(args.psk_env))
    if args.psk_file:
        return KeyStore(shared=_from_option("--psk-file", key_from_file, args.psk_file))
    return KeyStore(shared=QUICKSTART_KEY)


def _from_option(option: str, load: Callable[[str], _T], path: str) -> _T:
    """``load(path)``, its errors prefixed with the option that named the file."""
    try:
        return load(path)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc.args[0]}") from None


def key_source(args: argparse.Namespace) -> str | None:
    """Where the key options took the server's keys from, never the keys (None: no option, the demo key)."""
    if getattr(args, "scenario", None):
        return f"the psk section of {args.scenario} (--scenario)"
    for option, what in (("psk_csv", "identities and keys from the CSV file {} (--psk-csv)"),
                         ("psk_master_env", "derived per identity from the master key in ${} (--psk-master-env, "
                                            f"{args.derive_length}-byte keys)"),
                         ("psk_hex", "one key for every identity, given inline (--psk-hex: visible in ps)"),
                         ("psk_env", "one key for every identity, from ${} (--psk-env)"),
                         ("psk_file", "one key for every identity, from the file {} (--psk-file)")):
        value = getattr(args, option, None)
        if value:
            return what.format(value) if option != "psk_hex" else what
    return None


def say_keys(args: argparse.Namespace, psk: bool) -> None:
    """The ``serve`` line that says where the keys come from (loud, on stderr too, for the demo key)."""
    if not psk:
        print(f"loadgen: keys: certificate {args.cert} (no PSK)", flush=True)
        return
    source = key_source(args)
    if source is None:
        print("loadgen: keys: the PUBLIC DEMO KEY of scenarios/quickstart.yaml (no key option given: see stderr)",
              flush=True)
        print(f"loadgen: {DEMO_KEY_NOTICE}", file=sys.stderr, flush=True)
    else:
        print(f"loadgen: keys: {source}" + (f"; certificate {args.cert}" if getattr(args, "cert", None) else ""),
              flush=True)
