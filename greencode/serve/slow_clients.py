"""A uvicorn HTTP protocol that bounds clients that send their request slowly.

uvicorn times out idle keep-alive connections, but a client that connects and trickles (or never
sends) its request holds its slot forever. Here:

- Deadline: a request's headers and body must arrive within `timeout_s` of the connection opening (or
  of its previous response), in total. A connection whose headers are late is closed; the deadline is
  put into the request's scope (DEADLINE_KEY), and GuardMiddleware answers 408 when the body is late.
- Cap: at most `max_sending` connections may be still sending a request at once. Past it the oldest
  senders (those sending for more than SENDING_GRACE_S: a real client sends in milliseconds) are
  closed, so trickling clients cannot fill [serve].limit_concurrency and starve real requests.
"""

from __future__ import annotations

from collections import OrderedDict

DEADLINE_KEY = "greencode.deadline"  # loop.time() by which the request's body must have arrived
SENDING_GRACE_S = 0.5  # a sender younger than this is never closed to make room


def protocol_with_header_timeout(timeout_s: float, max_sending: int = 1 << 30):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    senders: OrderedDict = OrderedDict()  # this server's connections still sending a request -> since when

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer = None
        _started = 0.0

        def _arm(self) -> None:
            self._disarm()
            self._started = self.loop.time()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)
            senders.pop(self, None)
            senders[self] = self._started  # the newest sender, last in line to be closed
            self._make_room()

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _make_room(self) -> None:
            now = self.loop.time()
            while len(senders) > max_sending:
                oldest, since = next(iter(senders.items()))
                if now - since < SENDING_GRACE_S:
                    break
                del senders[oldest]
                oldest.transport.close()

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers were read: the guard bounds the body
                self._disarm()
                self.cycle.scope[DEADLINE_KEY] = self._started + timeout_s
            if self.cycle is not None and not self.cycle.more_body:
                senders.pop(self, None)  # the whole request is here

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            senders.pop(self, None)
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
