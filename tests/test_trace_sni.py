"""``trace sni`` for real: ``openssl s_client -servername`` against a local ``openssl s_server``
with a self-signed certificate made here, traced with ``--host``."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from containerlab import needs

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

NAME = "some.name.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A TLS server on a local port: (its pid, its port)."""
    needs("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={NAME}", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not listen"
                time.sleep(0.05)
        yield server.pid, port
    finally:
        server.kill()
        server.wait()


def test_the_client_hello_names_the_server_and_the_client(
    igrun_cli: IgrunCli, tls_server: tuple[int, int]
) -> None:
    server_pid, port = tls_server
    run = igrun_cli.start("trace", "sni", "--host", "-o", "json")
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert client.wait(timeout=20) == 0
    time.sleep(0.5)
    out, err = run.stop()
    assert run.returncode == 0, err
    hellos = [e for e in igrun_cli.events(out) if e.get("name") == NAME]
    # On loopback the hello is seen leaving (the client's socket) and arriving (the server's).
    (sent,) = [e for e in hellos if e["pktType"] == "OUTGOING"]
    assert (sent["pid"], sent["tid"], sent["comm"]) == (client.pid, client.pid, "openssl")
    assert sent["ownerKnown"] is True
    # The server's socket was open before the run: the start-up pass found its owner.
    (received,) = [e for e in hellos if e["pktType"] == "HOST"]
    assert (received["pid"], received["comm"]) == (server_pid, "openssl")
    run.assert_released()
