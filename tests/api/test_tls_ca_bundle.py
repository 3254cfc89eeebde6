"""`clevertim.ca_bundle` for a TLS-inspecting proxy: a server whose certificate is signed by a
private CA fails as a TLS error (server-wide: the pull stops at once) until its CA is given,
then works; and SSL_CERT_FILE does the same through the environment. A real TLS server on
loopback with a CA and certificate made by the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from clevertim_sync.api import errors as e
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.errors import ConfigError
from clevertim_sync.health import Where, decide
from clevertim_sync.settings import ClevertimSettings, Settings

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test Inspecting Proxy CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "OK", "content": [{"id": 1, "name": "Ann"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = make_ca_and_cert(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/api", ca
    server.shutdown()
    server.server_close()


def settings(url: str, ca: Path | None = None) -> Settings:
    return Settings(
        clevertim=ClevertimSettings(url=url, token=SecretStr("tok"), ca_bundle=ca, read_retries=0)
    )


def test_a_private_ca_is_a_tls_failure_until_ca_bundle_names_it(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    with ClevertimClient.from_settings(settings(url)) as client, pytest.raises(e.TransportError) as info:
        client.list("user")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and decide(info.value, Where.LISTING).stop
    with ClevertimClient.from_settings(settings(url, ca)) as client:
        assert client.list("user") == [{"id": 1, "name": "Ann"}]


def test_ssl_cert_file_in_the_environment_is_honoured(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with ClevertimClient.from_settings(settings(url)) as client:
        assert client.list("user") == [{"id": 1, "name": "Ann"}]


def test_a_ca_bundle_that_is_not_certificates_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="ca_bundle"):
        ClevertimClient.from_settings(settings("https://www.clevertim.com/api", bad))
