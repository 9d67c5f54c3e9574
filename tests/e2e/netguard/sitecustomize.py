"""Loaded by the pipeline under test: refuse and record any connection off this machine."""

import ipaddress
import os
import socket

_LOG = os.environ["NETGUARD_LOG"]
_connect = socket.socket.connect


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # unix socket
        return True
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return address[0] == "localhost"


def _guarded(self, address):
    if not _is_local(address):
        with open(_LOG, "a") as f:
            f.write(f"{address!r}\n")
        raise ConnectionRefusedError(f"netguard: refused {address!r}")
    return _connect(self, address)


socket.socket.connect = _guarded
