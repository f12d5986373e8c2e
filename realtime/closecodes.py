"""WebSocket close codes every product's socket uses, and whether the client reconnects.

The shared client (static/shared/js/socket.js) keeps FINAL in step with this module: on a
final code it stops and tells the page; on any other it reconnects with backoff and jitter.
docs/protocols/realtime.md lists them for client authors.
"""

from __future__ import annotations

# Final: reconnecting would be refused again, or the user must act first.
LOGGED_OUT = 4001  # this session ended: logout, "forget device", sign out everywhere
UNAUTHENTICATED = 4401  # no valid (user, device, session) behind the socket
FORBIDDEN = 4403  # the account may not use this (deactivated, banned, under age)
REPLACED = 4409  # the same product opened in another window took over

# Reconnect: the server wants the client back, after a pause.
REAUTHENTICATE = 4002  # the account's credentials changed: come back and be checked again
TRY_LATER = 4429  # too many connects or sockets: back off, then retry
# 1012/1013 say the same in the protocol's own range, but daphne (autobahn) lets an
# application close only with 1000 or 3000-4999: these mirror them.
SERVICE_RESTART = 4012  # the process is going away (deploy, restart)
TRY_AGAIN = 4013  # a dependency (Redis) is briefly unavailable

FINAL = frozenset({LOGGED_OUT, UNAUTHENTICATED, FORBIDDEN, REPLACED})


def is_final(code: int) -> bool:
    return code in FINAL
