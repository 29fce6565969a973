"""Whether an association outlives its last reference once it ended.

Load processes freeze their heap (``gc.freeze``) while users spawn and once they are up, and a
frozen object in a reference cycle is never freed: an association that ended must go by
reference counting alone, or every one a reconnect or the churn workload replaced leaks.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from typing import Any

import gevent

from loadgen.protocol.errors import LoadgenError


def assert_freed_when_ended(make: Callable[[], Any], when: str, received: int) -> None:
    """Start the association ``make()`` returns (this function holds its only reference), end it
    ``when`` ("pinging": closed after ``received`` bytes came in; "handshaking": closed before the
    handshake is up; "failed": ended by its own error, then closed), and assert that it is freed
    with the collector off."""
    gc.collect()
    gc.disable()
    try:
        assoc = make()
        assoc.start()
        if when == "handshaking":
            gevent.sleep(0)  # connecting or handshaking, not up yet
            assert assoc._engine is None or not assoc._engine.handshake_done  # noqa: SLF001
        else:
            deadline = time.monotonic() + 10
            while assoc.bytes_received < received and not assoc._done.ready() and time.monotonic() < deadline:  # noqa: SLF001
                gevent.sleep(0.02)
        if when == "failed":
            assert isinstance(assoc._done.get(timeout=10), LoadgenError)  # noqa: SLF001
        assoc.close()
        gevent.sleep(0.1)  # the loop's callbacks (the end, the socket's close) have run
        ref = weakref.ref(assoc)
        del assoc
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
    finally:
        gc.enable()
