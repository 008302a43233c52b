"""The metadata fetch's SSRF guard (issue 9 item 10), through `idbridge idps add --metadata URL`:
every DNS answer checked, the checked address pinned for the connection, every redirect hop's
scheme and address checked again. A local HTTPS server stands in for the IdP; which loopback
address counts as "public" is the one thing the test decides (bridge.fetch.public)."""

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge import fetch
from tests.saml_idp import TestIdP

PUBLIC = "127.0.0.1"  # treated as public by the test
PRIVATE = "127.0.0.2"
REAL_GETADDRINFO = socket.getaddrinfo


def _certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meta.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("meta.test"), x509.DNSName("evil.test")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 serving IdP metadata at /metadata and redirects at /to/..."""
    cert, key = _certificate(tmp_path)
    xml = TestIdP().metadata_xml().encode()
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            if self.path.startswith("/to/"):
                self.send_response(302)
                self.send_header("Location", self.path[len("/to/") :].replace("PORT", str(port)))
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            self.wfile.write(xml)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((PUBLIC, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(fetch, "public", lambda ip: ip == ipaddress.ip_address(PUBLIC))
    yield port, seen
    httpd.shutdown()
    httpd.server_close()


def dns(monkeypatch, answers):
    """Names resolve per `answers` (a list per call, the last one repeating); IPs as they are."""
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            lookups.append(host)
            queue = answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def idps(cli, account, url):
    return cli("idps", "add", account.slug, "--metadata", url, "--name", "fetched")


def test_a_public_url_is_fetched(cli, account, server, monkeypatch):
    """The control: a name resolving to the "public" address is fetched and the IdP added."""
    port, seen = server
    dns(monkeypatch, {"meta.test": [[PUBLIC]]})
    result = idps(cli, account, f"https://meta.test:{port}/metadata")
    assert result.exit_code == 0, result.output
    assert seen == ["/metadata"]


def test_any_private_dns_answer_refuses_the_url(cli, account, server, monkeypatch):
    """One private address among the answers refuses the URL, before any connection."""
    port, seen = server
    dns(monkeypatch, {"meta.test": [[PUBLIC, PRIVATE]]})
    result = idps(cli, account, f"https://meta.test:{port}/metadata")
    assert result.exit_code == 1
    assert f"points at a non-public address ({PRIVATE})" in result.output
    assert seen == []
    assert "fetched" not in cli("idps", "list", account.slug).output


def test_the_checked_address_is_the_one_connected_to(cli, account, server, monkeypatch):
    """DNS rebinding: the name answers public once, then private; the connection goes to the
    address that was checked (one lookup per hop), so the fetch reaches the public server."""
    port, seen = server
    lookups = dns(monkeypatch, {"meta.test": [[PUBLIC], [PRIVATE]]})
    result = idps(cli, account, f"https://meta.test:{port}/metadata")
    assert result.exit_code == 0, result.output
    assert lookups == ["meta.test"] and seen == ["/metadata"]


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("https://evil.test:PORT/metadata", f"points at a non-public address ({PRIVATE})"),
        ("http://meta.test:PORT/metadata", "must be https"),
        ("file:///etc/passwd", "must be https"),
    ],
)
def test_every_redirect_hop_is_checked_again(cli, account, server, monkeypatch, target, why):
    """A redirect to a private address or another scheme is refused, not followed."""
    port, seen = server
    dns(monkeypatch, {"meta.test": [[PUBLIC]], "evil.test": [[PRIVATE]]})
    result = idps(cli, account, f"https://meta.test:{port}/to/{target}")
    assert result.exit_code == 1
    assert why in result.output
    assert seen == [f"/to/{target}"]
    assert "fetched" not in cli("idps", "list", account.slug).output


def test_redirect_loops_stop(cli, account, server, monkeypatch):
    """More than five redirects is an error, not a loop."""
    port, seen = server
    assert seen == []
    dns(monkeypatch, {"meta.test": [[PUBLIC]]})
    url = f"https://meta.test:{port}/metadata"
    for _ in range(6):
        url = f"https://meta.test:{port}/to/{url.replace(str(port), 'PORT')}"
    result = idps(cli, account, url)
    assert result.exit_code == 1
    assert "more than 5 redirects" in result.output


def test_webhook_posts_go_to_the_checked_address(monkeypatch):
    """Webhook and logout deliveries (bridge.egress) pin the checked address too: a name that
    answers 127.0.0.1 once, then 127.0.0.2 (rebinding), is posted to where it was checked."""
    import http.server
    import threading

    from bridge import egress

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((PUBLIC, 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        lookups = dns(monkeypatch, {"hooks.test": [[PUBLIC], [PRIVATE]]})
        url = f"http://hooks.test:{httpd.server_address[1]}/in"
        answer = egress.post(url, b"{}", {}, allow_private=True, timeout=5)
        assert answer.status == 204, answer
        assert got == [b"{}"] and lookups == ["hooks.test"]
        refused = egress.post(
            url.replace("http:", "https:"), b"{}", {}, allow_private=False, timeout=5
        )
        assert refused.status is None and "non-public address" in refused.error
    finally:
        httpd.shutdown()
        httpd.server_close()
