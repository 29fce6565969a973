"""CoAP (RFC 7252, with Observe RFC 7641 and Block2 RFC 7959) over DTLS.

- :mod:`.message`: the codec (``decode``/``encode``, types, codes "2.05" <-> 69, options, Block values);
- :mod:`.exchange`: :class:`Request` (what to send), :class:`Exchange` (one under way) and the events;
- :mod:`.endpoint`: :class:`CoapEndpoint`, the sans-I/O client (ids, tokens, ACKs, retransmission,
  duplicates, ping, Observe, Block2), for any caller that owns a socket and a clock;
- :mod:`.plan`, :mod:`.workload`: :class:`CoapPlan` / :class:`CoapWorkload`, the ``requests:`` steps
  with ``coap:`` as the DTLS transport runs them (scheduled by :mod:`loadgen.traffic.schedule`).
"""

from loadgen.coap.endpoint import CoapEndpoint
from loadgen.coap.exchange import Event, Exchange, Failed, Notification, ObserveEnded, Request, Response, Unmatched
from loadgen.coap.plan import CoapPlan
from loadgen.coap.workload import CoapWorkload

__all__ = ["CoapEndpoint", "CoapPlan", "CoapWorkload", "Event", "Exchange", "Failed", "Notification",
           "ObserveEnded", "Request", "Response", "Unmatched"]
