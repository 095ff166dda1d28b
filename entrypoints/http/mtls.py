"""mTLS service identities: a client certificate that is a tenant's principal.

The transport (uvicorn, with `http.tls_client_ca_file`) has verified the certificate
against the configured CA before any HTTP is spoken. `ClientCertProtocol` hands it to
the app the way the ASGI TLS extension says (`scope["extensions"]["tls"]
["client_cert_chain"]`, PEM): uvicorn does not implement that extension itself.

`http.service_identities` maps certificates to principals: each entry's `match` is the
certificate's subject (RFC 4514, compared as a distinguished name: `CN=ci, O=Example`
equals `CN=ci,O=Example`) or one of its subject alternative names (`dns:`, `uri:`,
`email:`, `ip:`), with a tenant (slug) and one tenant role. A request that carries a
certificate and no `Authorization` header authenticates as the entry that matches (its
role's permissions only, in its tenant only); a certificate that matches nothing is
refused (401, audited). A bearer credential, when sent, is what authenticates.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

from cryptography import x509
from litestar.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.domain.access import Role
from entrypoints.operations_settings import parse_subject
from entrypoints.settings import ServiceIdentity

__all__ = ["ClientCertProtocol", "ServiceIdentities", "client_certificate"]

#: Certificates whose identity was looked up, remembered (a client reconnects often).
_REMEMBERED: Final = 1024


class ClientCertProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with the verified client certificate in each request's scope."""

    _peer: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        found: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        der = found.getpeercert(binary_form=True) if found is not None else None
        self._peer = None if not der else ssl.DER_cert_to_PEM_cert(der)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._peer is not None:
            self.scope["extensions"] = {"tls": {"client_cert_chain": [self._peer]}}


def client_certificate(scope: Scope) -> str | None:
    """The verified client certificate of the request (PEM), if there is one."""
    extensions: dict[str, Any] = scope.get("extensions") or {}
    chain = extensions.get("tls", {}).get("client_cert_chain") or ()
    return str(chain[0]) if chain else None


class _Matcher:
    def __init__(self, entry: ServiceIdentity) -> None:
        self.entry = entry
        self.role = Role(entry.role)
        self.name = entry.name or entry.match
        scheme, _, value = entry.match.partition(":")
        self.san: tuple[str, str] | None = None
        self.subject: x509.Name | None = None
        if scheme.lower() in ("dns", "uri", "email", "ip") and "=" not in scheme:
            kind = scheme.lower()
            self.san = (kind, _normal_san(kind, value.strip()))
        else:
            self.subject = parse_subject(entry.match)

    def matches(self, subject: x509.Name, sans: set[tuple[str, str]]) -> bool:
        if self.subject is not None:
            return subject == self.subject
        assert self.san is not None
        return self.san in sans


def _normal_san(kind: str, value: str) -> str:
    if kind == "dns":
        return value.lower().rstrip(".")
    if kind == "ip":
        return str(ipaddress.ip_address(value))
    return value


def _sans(cert: x509.Certificate) -> set[tuple[str, str]]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found: set[tuple[str, str]] = set()
    for name in names:
        if isinstance(name, x509.DNSName):
            found.add(("dns", _normal_san("dns", name.value)))
        elif isinstance(name, x509.UniformResourceIdentifier):
            found.add(("uri", name.value))
        elif isinstance(name, x509.RFC822Name):
            found.add(("email", name.value))
        elif isinstance(name, x509.IPAddress):
            found.add(("ip", str(name.value)))
    return found


class ServiceIdentities:
    """The configured mapping, and the lookup of a certificate in it."""

    def __init__(self, entries: Iterable[ServiceIdentity]) -> None:
        self._matchers = [_Matcher(entry) for entry in entries]
        self._seen: OrderedDict[str, _Matcher | None] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._matchers)

    def find(self, pem: str) -> tuple[str, str, Role] | None:
        """(name, tenant slug, role) of the first entry the certificate matches, or None."""
        if pem in self._seen:
            matcher = self._seen[pem]
        else:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            subject, sans = cert.subject, _sans(cert)
            matcher = next((m for m in self._matchers if m.matches(subject, sans)), None)
            self._seen[pem] = matcher
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
        if matcher is None:
            return None
        return matcher.name, matcher.entry.tenant, matcher.role
