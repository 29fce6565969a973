"""Fixtures of the adversarial suite: a ``loadgen serve dtls`` process under attack, with
legitimate clients pinging it, both always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from servers import LoadgenServer

from loadgen.protocol.credentials import Secret

from .hostile import cpu_seconds, hwm_kib, rss_kib
from .legit import LegitClients, limit_args

#: Generous limits for tests whose hostile peers must not crowd out the legitimate ones
#: (only passed when the checkout has the flags).
ROOMY = {"max_peers": 100_000, "max_half_open": 100_000}


@dataclass
class Target:
    """A server process under attack and the legitimate clients that must stay served."""

    server: LoadgenServer
    key: Secret
    legit: LegitClients

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def alive(self) -> bool:
        return self.server.process.poll() is None

    def rss(self) -> int:
        return rss_kib(self.pid)

    def hwm(self) -> int:
        return hwm_kib(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def assert_served(self, when: str) -> None:
        assert self.alive(), f"{when}: the server process died:\n{self.server.stderr[-3000:]}"
        try:
            self.legit.assert_served(when)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver stderr (tail):\n{self.server.stderr[-2000:]}") from None


@pytest.fixture
def target(start_dtls_server: Callable[..., LoadgenServer], psk_hex: str) -> Iterator[Callable[..., Target]]:
    """Factory: ``target(*cli_args, limits=ROOMY, legit=2)``: a server, legit clients already served."""
    made: list[Target] = []

    def make(*args: str, limits: dict[str, int | float] | None = None, legit: int = 2) -> Target:
        extra = limit_args(**(ROOMY if limits is None else limits))
        server = start_dtls_server(*args, *extra, key_hex=psk_hex)
        key = Secret(bytes.fromhex(psk_hex))
        native = "openssl" not in args
        made.append(Target(server, key, LegitClients(server.address, key, count=legit, native=native)))
        made[-1].assert_served("before the attack")
        return made[-1]

    try:
        yield make
    finally:
        for t in made:
            t.legit.stop()
