"""Why the engine cannot be reached, in words an operator can act on.

gRPC's channel only says "not ready". A name that does not resolve, a port nobody listens
on and a firewall that drops packets need different fixes, so a failed wait is followed by
one plain look of our own: resolve the name, then open a TCP connection.
"""

from __future__ import annotations

import socket

import anyio


async def unreachable_cause(host: str, port: int, timeout: float) -> str:
    """A sentence on why host:port does not answer; says so when it does."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return (f"the name {host!r} does not resolve ({exc.strerror}): check flow-engine.host, "
                "or the container's network and DNS")
    address = str(infos[0][4][0]) if infos else host
    try:
        # A blocking connect on a worker thread: its errors name the cause, where anyio's
        # connect_tcp folds every address's error into one "all attempts failed".
        sock = await anyio.to_thread.run_sync(socket.create_connection, (address, port), timeout)
    except TimeoutError:
        return (f"{host} ({address}) port {port} did not answer within {timeout:g} s: a firewall, "
                "or a host that is down")
    except ConnectionRefusedError:
        return (f"{host} ({address}) refused the connection on port {port}: is the flow engine "
                "running, and is flow-engine.port right?")
    except OSError as exc:
        return f"{host} ({address}) port {port}: {exc.strerror or exc}"
    sock.close()
    return (f"{host} ({address}) accepts TCP on port {port}, but gRPC did not get ready: is it "
            "the flow engine's port (plain HTTP/2, no TLS)?")
