"""Pre-shared keys: parsing, sources, derivation, key stores, and never leaking a key."""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from loadgen.protocol.credentials import KeyStore, Secret, derive_key, key_from_env, key_from_file, parse_hex
from loadgen.protocol.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

KEY_HEX = "c0ffee00deadbeef0123456789abcdef"
KEY = bytes.fromhex(KEY_HEX)


def write_private(path, data: bytes | str, mode: int = 0o600):
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@contextmanager
def no_warnings():
    """Any warning inside the block fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- hex parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        KEY_HEX,
        KEY_HEX.upper(),
        "0x" + KEY_HEX,
        "0X" + KEY_HEX.upper(),
        ":".join(KEY_HEX[i : i + 2] for i in range(0, len(KEY_HEX), 2)),
        " ".join(KEY_HEX[i : i + 4] for i in range(0, len(KEY_HEX), 4)),
        f"  {KEY_HEX}\n",
        "0x" + ":".join(KEY_HEX[i : i + 2] for i in range(0, len(KEY_HEX), 2)),
    ],
    ids=["plain", "upper", "0x", "0X", "colons", "spaces", "padded", "0x-colons"],
)
def test_parse_hex_accepts_common_spellings(text):
    assert parse_hex(text).value == KEY


@pytest.mark.parametrize("bad", [KEY_HEX[:-1] + "g", KEY_HEX[:-1], "0x" + KEY_HEX + "zz", "my-passphrase"])
def test_bad_hex_error_does_not_echo_the_key(bad):
    with pytest.raises(ConfigError) as info:
        parse_hex(bad, where="key for device-7")
    message = str(info.value)
    assert "key for device-7" in message  # says where
    assert bad not in message
    assert KEY_HEX[:8] not in message  # not even a prefix of a nearly-right key
    assert info.value.code == "config-error"


@pytest.mark.parametrize("empty", ["", "   ", "0x", "::"])
def test_empty_key_is_refused(empty):
    with pytest.raises(ConfigError, match="empty"):
        parse_hex(empty)


# -- environment ----------------------------------------------------------------


def test_key_from_env_missing_names_the_variable(monkeypatch):
    monkeypatch.delenv("LOADGEN_TEST_PSK", raising=False)
    with pytest.raises(ConfigError, match="LOADGEN_TEST_PSK"):
        key_from_env("LOADGEN_TEST_PSK")


def test_key_from_env_set(monkeypatch):
    monkeypatch.setenv("LOADGEN_TEST_PSK", "0x" + KEY_HEX)
    assert key_from_env("LOADGEN_TEST_PSK").value == KEY


def test_key_from_env_bad_value_names_variable_not_value(monkeypatch):
    monkeypatch.setenv("LOADGEN_TEST_PSK", KEY_HEX + "q")
    with pytest.raises(ConfigError) as info:
        key_from_env("LOADGEN_TEST_PSK")
    assert "LOADGEN_TEST_PSK" in str(info.value)
    assert KEY_HEX not in str(info.value)


# -- key files ------------------------------------------------------------------


def test_key_file_with_hex_text(tmp_path):
    path = write_private(tmp_path / "psk.hex", KEY_HEX + "\n")
    with no_warnings():
        assert key_from_file(path).value == KEY


def test_key_file_with_raw_bytes(tmp_path):
    raw = bytes(range(0xF0, 0x100))  # not ASCII, so not hex text
    path = write_private(tmp_path / "psk.bin", raw)
    with no_warnings():
        assert key_from_file(str(path)).value == raw


def test_empty_key_file_is_refused(tmp_path):
    path = write_private(tmp_path / "empty.key", b"")
    with pytest.raises(ConfigError, match="empty"):
        key_from_file(path)


def test_missing_key_file_names_the_path(tmp_path):
    path = tmp_path / "nope.key"
    with pytest.raises(ConfigError) as info:
        key_from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_warns(tmp_path, mode):
    path = write_private(tmp_path / "psk.hex", KEY_HEX, mode)
    with pytest.warns(UserWarning, match="readable by other users") as record:
        assert key_from_file(path).value == KEY
    assert str(path) in str(record[0].message)
    assert KEY_HEX not in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller, not at loadgen internals


def test_private_key_file_does_not_warn(tmp_path):
    path = write_private(tmp_path / "psk.hex", KEY_HEX, 0o600)
    with no_warnings():
        key_from_file(path)


# -- derived keys ---------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 16, 32])
def test_derived_key_is_truncated_hmac_sha256(length):
    master = Secret(b"master secret for the fleet")
    identity = b"device-000042"
    expected = hmac.new(b"master secret for the fleet", b"device-000042", hashlib.sha256).digest()[:length]
    assert derive_key(master, identity, length).value == expected
    assert len(expected) == length


def test_derived_keys_differ_per_device_and_default_to_16_bytes():
    master = Secret(b"m" * 32)
    a, b = derive_key(master, b"device-1"), derive_key(master, b"device-2")
    assert len(a.value) == len(b.value) == 16
    assert a != b


@pytest.mark.parametrize("length", [0, 33, -1])
def test_derived_key_length_out_of_range(length):
    with pytest.raises(ConfigError):
        derive_key(Secret(b"m"), b"d", length)


# -- key stores -----------------------------------------------------------------


def test_keystore_table():
    store = KeyStore(table={b"dev1": Secret(KEY), b"dev2": Secret(b"\x02" * 16)})
    assert store.key_for(b"dev1").value == KEY
    assert store.key_for(b"dev2").value == b"\x02" * 16
    assert store.key_for(b"dev3") is None  # unknown identity: the server refuses it


def test_keystore_derived_matches_client_side_derivation():
    master = Secret(b"fleet master")
    store = KeyStore(master=master, derived_length=24)
    for identity in (b"a", b"device-1", b"\xff\x00binary"):
        expected = hmac.new(b"fleet master", identity, hashlib.sha256).digest()[:24]
        assert store.key_for(identity).value == expected


def test_keystore_shared():
    store = KeyStore(shared=Secret(KEY))
    assert store.key_for(b"anyone").value == KEY
    assert store.key_for(b"someone else").value == KEY


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"table": {}, "shared": Secret(KEY)}, {"master": Secret(KEY), "shared": Secret(KEY)}],
    ids=["none", "table+shared", "master+shared"],
)
def test_keystore_needs_exactly_one_source(kwargs):
    with pytest.raises(ValueError):
        KeyStore(**kwargs)


def test_keystore_from_csv_with_header_comments_and_blank_lines(tmp_path):
    path = write_private(
        tmp_path / "keys.csv",
        "identity,key\n"
        f"dev1,{KEY_HEX}\n"
        "\n"
        "# decommissioned\n"
        " dev2 , 0x0102:0304 \n",
    )
    with no_warnings():
        store = KeyStore.from_csv(path)
    assert store.key_for(b"dev1").value == KEY
    assert store.key_for(b"dev2").value == b"\x01\x02\x03\x04"
    assert store.key_for(b"identity") is None  # the header is not a device
    assert store.key_for(b"# decommissioned") is None


def test_keystore_from_csv_with_utf8_bom(tmp_path):
    # What spreadsheets write for "CSV UTF-8".
    bom = b"\xef\xbb\xbf"
    path = write_private(tmp_path / "keys.csv", bom + b"identity,key\r\ndev1," + KEY_HEX.encode() + b"\r\n")
    assert KeyStore.from_csv(path).key_for(b"dev1").value == KEY
    path = write_private(tmp_path / "nohead.csv", b"\xef\xbb\xbfdev1," + KEY_HEX.encode() + b"\n")
    assert KeyStore.from_csv(path).key_for(b"dev1").value == KEY


def test_keystore_from_csv_duplicate_identity_names_file_and_line(tmp_path):
    path = write_private(tmp_path / "keys.csv", f"identity,key\ndev1,{KEY_HEX}\ndev2,00ff\ndev1,{KEY_HEX}\n")
    with pytest.raises(ConfigError) as info:
        KeyStore.from_csv(path)
    message = str(info.value)
    assert f"{path}:4" in message
    assert "dev1" in message and "duplicate" in message
    assert KEY_HEX not in message


def test_keystore_from_csv_bad_rows_name_file_and_line(tmp_path):
    path = write_private(tmp_path / "keys.csv", f"dev1,{KEY_HEX}\ndev2,{KEY_HEX},extra\n")
    with pytest.raises(ConfigError, match=rf"{path}:2"):
        KeyStore.from_csv(path)
    path = write_private(tmp_path / "badhex.csv", f"dev1,{KEY_HEX}\ndev2,{KEY_HEX}x\n")
    with pytest.raises(ConfigError) as info:
        KeyStore.from_csv(path)
    assert f"{path}:2" in str(info.value)
    assert KEY_HEX not in str(info.value)


def test_keystore_csv_readable_by_others_warns(tmp_path):
    path = write_private(tmp_path / "keys.csv", f"dev1,{KEY_HEX}\n", 0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        KeyStore.from_csv(path)


# -- nothing prints a key ---------------------------------------------------------


def test_secret_repr_never_shows_the_key():
    secret = Secret(KEY)

    @dataclass
    class Device:
        name: str
        key: Secret

    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        repr([secret]),
        repr({"k": secret}),
        repr(Device("dev1", secret)),
        repr(KeyStore(shared=secret)),
        repr(KeyStore(table={b"dev1": secret})),
    ]
    for text in renderings:
        assert KEY_HEX not in text.lower(), text
        assert repr(KEY)[2:-1] not in text, text  # the bytes literal's contents
        assert KEY.decode("latin-1") not in text, text
    assert repr(secret) == "Secret(<16 bytes>)"
    assert secret.value == KEY  # still usable
