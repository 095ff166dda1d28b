"""mTLS over real TLS on loopback: the real `waypost serve`, a CA made by the test, and clients
with and without a certificate from it."""

from __future__ import annotations

import ipaddress
import pathlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.crypto.envelope import generate_master_key
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Issued:
    cert: pathlib.Path
    key: pathlib.Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    folder: pathlib.Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path)


class Ca:
    def __init__(self, folder: pathlib.Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=5))
            .not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = _write(folder, name, self.cert, self.key).cert

    def issue(self, stem: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=5))
            .not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return _write(self.folder, stem, builder.sign(self.key, hashes.SHA256()), key)


def context(ca: Ca, client: Issued | None = None) -> ssl.SSLContext:
    made = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        made.load_cert_chain(str(client.cert), str(client.key))
    return made


@dataclass(frozen=True)
class Tls:
    server: ServerProcess
    ca: Ca
    client: Issued
    stranger: Issued

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"


@pytest.fixture
def tls(tmp_path: pathlib.Path) -> Iterator[Tls]:
    ca = Ca(tmp_path, "waypost-test-ca")
    server_cert = ca.issue("server", server=True)
    client = ca.issue("client", server=False)
    stranger = Ca(tmp_path, "another-ca").issue("stranger", server=False)
    server = ServerProcess(
        {
            "WAYPOST__DATABASE__URL": "memory://",
            "WAYPOST__SECRETS__MASTER_KEY": generate_master_key(),
            "WAYPOST__HTTP__TLS_CERT_FILE": str(server_cert.cert),
            "WAYPOST__HTTP__TLS_KEY_FILE": str(server_cert.key),
            "WAYPOST__HTTP__TLS_CLIENT_CA_FILE": str(ca.path),
        },
        tmp_path / "server.log",
    )
    found = Tls(server, ca, client, stranger)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.proc.poll() is None, server.output()
            try:
                httpx.get(f"{found.url}/healthz/live", verify=context(ca, client), timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
        yield found
    finally:
        assert server.stop() == 0, server.output()


def test_a_client_certificate_from_the_ca_gets_in(tls: Tls) -> None:
    answer = httpx.get(f"{tls.url}/healthz/live", verify=context(tls.ca, tls.client))
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"].startswith("max-age=")
    refused = httpx.get(f"{tls.url}/api/v1/events", verify=context(tls.ca, tls.client))
    assert refused.status_code == 401  # mTLS is the transport; credentials still apply


@pytest.mark.parametrize("who", ["nobody", "stranger"])
def test_without_a_certificate_from_the_ca_the_handshake_fails(tls: Tls, who: str) -> None:
    client = None if who == "nobody" else tls.stranger
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{tls.url}/healthz/live", verify=context(tls.ca, client), timeout=5)
    # at the TLS level: the server aborts the TLS session (an alert, or the connection cut
    # without close_notify); not one HTTP byte comes back
    with (
        socket.create_connection(("127.0.0.1", tls.server.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)),
    ):
        _ask(context(tls.ca, client), raw)


def _ask(made: ssl.SSLContext, raw: socket.socket) -> None:
    with made.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as wrapped:
        wrapped.sendall(b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
        got = wrapped.recv(1024)
    pytest.fail(f"the server answered without a client certificate: {got!r}")


# --- service identities: a client certificate that is a tenant's principal ------------------


def _client_cert(ca: Ca, stem: str, san: x509.GeneralName | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                    x509.NameAttribute(NameOID.COMMON_NAME, stem),
                ]
            )
        )
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return _write(ca.folder, stem, builder.sign(ca.key, hashes.SHA256()), key)


SERVICE_CONFIG = """
[[http.service_identities]]
match = "CN=ci-runner, O=Example"
tenant = "acme"
role = "event_producer"
name = "ci"

[[http.service_identities]]
match = "uri:spiffe://example.test/dashboards"
tenant = "acme"
role = "event_viewer"

[[http.service_identities]]
match = "CN=globex-bot,O=Example"
tenant = "globex"
role = "event_viewer"
"""


@dataclass(frozen=True)
class Services:
    tls: Tls
    certs: dict[str, Issued]
    receiver: str
    platform_key: str

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.tls.url, verify=context(self.tls.ca, self.certs[who]), timeout=10
        )


@pytest.fixture
def services(tmp_path: pathlib.Path) -> Iterator[Services]:
    ca = Ca(tmp_path, "waypost-test-ca")
    server_cert = ca.issue("server", server=True)
    certs = {
        "ci": _client_cert(ca, "ci-runner"),
        "dashboards": _client_cert(
            ca, "dash", x509.UniformResourceIdentifier("spiffe://example.test/dashboards")
        ),
        "globex": _client_cert(ca, "globex-bot"),
        "stranger": _client_cert(ca, "somebody-else"),
    }
    config = tmp_path / "waypost.toml"
    config.write_text(SERVICE_CONFIG)
    server = ServerProcess(
        {
            "WAYPOST__CONFIG": str(config),
            "WAYPOST__DATABASE__URL": "memory://",
            "WAYPOST__SECRETS__MASTER_KEY": generate_master_key(),
            "WAYPOST__HTTP__TLS_CERT_FILE": str(server_cert.cert),
            "WAYPOST__HTTP__TLS_KEY_FILE": str(server_cert.key),
            "WAYPOST__HTTP__TLS_CLIENT_CA_FILE": str(ca.path),
        },
        tmp_path / "server.log",
    )
    tls = Tls(server, ca, certs["stranger"], certs["stranger"])
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.proc.poll() is None, server.output()
            try:
                httpx.get(f"{tls.url}/healthz/live", verify=context(ca, certs["ci"]), timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
        key = server.bootstrap_key()
        # the platform administrator, by its key (a bearer credential wins over the certificate)
        admin = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=tls.url, verify=context(ca, certs["stranger"])) as http:
            for slug in ("acme", "globex"):
                made = http.post(
                    "/api/v1/tenants", json={"slug": slug, "name": slug}, headers=admin
                )
                assert made.status_code == 201, made.text
            acme_key = http.post(
                "/api/v1/api-keys",
                json={"name": "acme-admin", "role": "admin"},
                headers={**admin, "X-Tenant": "acme"},
            ).json()["data"]["key"]
            receiver = http.post(
                "/api/v1/receivers",
                json={"name": "build", "type": "ci", "version": "1", "schema": {}},
                headers={"Authorization": f"Bearer {acme_key}"},
            )
            assert receiver.status_code == 201, receiver.text
        yield Services(tls, certs, receiver.json()["data"], key)
    finally:
        assert server.stop() == 0, server.output()


def _event(receiver: str) -> dict[str, object]:
    return {
        "name": "app",
        "version": "1",
        "release": "1",
        "platform_id": "x86_64",
        "package": "rpm",
        "description": "",
        "payload": {},
        "success": True,
        "event_receiver_id": receiver,
    }


def test_a_mapped_certificate_acts_with_its_roles_permissions_only(services: Services) -> None:
    with services.client("ci") as ci:  # event_producer in acme, by its subject
        recorded = ci.post("/api/v1/events", json=_event(services.receiver))
        assert recorded.status_code == 201, recorded.text
        assert ci.get(f"/api/v1/receivers/{services.receiver}").status_code == 200
        assert ci.get("/api/v1/events").status_code == 403  # no events:read
        assert ci.get("/api/v1/api-keys").status_code == 403
    with services.client("dashboards") as viewer:  # event_viewer in acme, by its URI SAN
        listed = viewer.get("/api/v1/events")
        assert listed.status_code == 200, listed.text
        assert [e["id"] for e in listed.json()["data"]] == [recorded.json()["data"]]
        assert viewer.post("/api/v1/events", json=_event(services.receiver)).status_code == 403


def test_the_mapping_respects_tenants(services: Services) -> None:
    with services.client("globex") as globex:
        assert globex.get("/api/v1/events").json()["data"] == []
        assert globex.get(f"/api/v1/receivers/{services.receiver}").status_code == 404
        named = globex.get("/api/v1/events", headers={"X-Tenant": "acme"})
        assert named.status_code == 403


def test_an_unmapped_certificate_is_refused_and_audited(services: Services) -> None:
    with services.client("stranger") as stranger:
        refused = stranger.get("/api/v1/events")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        audit = stranger.get(
            "/api/v1/audit",
            params={"action": "auth.refused"},
            headers={"Authorization": f"Bearer {services.platform_key}"},
        )
        assert audit.status_code == 200, audit.text
        reasons = [r["reason"] for r in audit.json()["data"]]
        assert "unmapped_client_certificate" in reasons
