"""``refd dns``: the DNS records that lead mail clients to their servers.

An IMAP door cannot answer DNS queries, so ``refd dns`` prints, for each
mail domain of the routing table (``domains:``), the records an admin adds
to the zone, in zone-file syntax (RFC 1035 §5.1; names absolute, with the
trailing dot). Pure: values in (the loaded table and the name of the host
that serves account-setup documents), lines out.

What the records name is the domain-level answer (``Domain.server``), the
same endpoints that the setup documents offer when no per-user answer is
given, so DNS, documents and referrals never disagree.

- RFC 6186 §3.2 defines two SRV labels for IMAP: ``imap`` "Identifies an
  IMAP server that MAY ... require the MUA to use the "STARTTLS" command"
  (port 143 in its example), and ``imaps`` "Identifies an IMAP server where
  TLS is initiated directly upon connection to the IMAP server" (993). §3.1
  defines ``submission`` (587). ``_imap._tcp`` names the server's ``port``;
  ``_imaps._tcp`` its ``imaps_port``.
- RFC 8314 §5.1 (use of SRV records in establishing configuration) adds
  the ``submissions`` label, submission with implicit TLS (port 465; §3.3).
  A submission endpoint with ``tls: implicit`` is published as
  ``_submissions._tcp``, any other as ``_submission._tcp``.
- A service the domain does not offer gets the SRV target ``.``, written
  ``SRV 0 0 0 .``, so a client does not go looking for it. RFC 6186: "...
  service is not supported at all at a particular domain by setting the
  target of an SRV RR to "."" (RFC 2782: "A Target of "." means that the
  service is decidedly not available at this domain").
- Among the services a domain offers, the SRV priority says which one a
  client should prefer (lower first): the one setup documents offer
  (``client_tls``) gets 0, the other 10. RFC 8314 recommends implicit TLS;
  ``client_tls`` is where the admin states that choice.
- Thunderbird asks ``autoconfig.<domain>``, Outlook ``autodiscover.<domain>``
  and the ``_autodiscover._tcp`` SRV record (port 443): CNAMEs (or A/AAAA
  records, when the host is an IP address) to the host that serves the
  documents.

An SRV or CNAME target must be a host name (RFC 2782); a server whose host
is an IP address gets a comment line saying so instead of a record.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from refd.routing import RoutingTable
from refd.routing.model import ClientTls, Domain, Endpoint

__all__ = ["Record", "domain_records", "zone_lines"]

#: The priority of the endpoint setup documents offer, and of the other one.
PREFERRED, OTHER = 0, 10
#: The weight of every record: one target per service (RFC 2782 "0" would
#: also do; RFC 6186's examples use 1).
WEIGHT = 1
#: Autodiscover's SRV record names HTTPS.
HTTPS_PORT = 443


@dataclass(frozen=True, slots=True)
class Record:
    """One zone-file line: owner name, type, data, and an optional comment.

    ``kind`` is empty for a record that cannot be published; ``data`` then
    says why (printed as a comment line).
    """

    name: str
    kind: str
    data: str
    comment: str = ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _srv(name: str, priority: int, endpoint: Endpoint, what: str) -> Record:
    if _is_ip(endpoint.host):
        return Record(
            name,
            "",
            f"not published: {what} is the IP address {endpoint.host}, "
            "and an SRV target must be a host name (RFC 2782)",
        )
    return Record(name, "SRV", f"{priority} {WEIGHT} {endpoint.port} {endpoint.host}.")


def _absent(name: str, why: str) -> Record:
    return Record(name, "SRV", "0 0 0 .", why)


def domain_records(domain: Domain, web_host: str) -> list[Record]:
    """The records of one domain; ``web_host`` serves autoconfig and autodiscover."""
    d = domain.name
    server = domain.server
    starttls = Endpoint(server.host, server.port, server.client_tls)
    offered = server.imap_endpoint.tls
    records: list[Record] = []
    imap_priority = OTHER if offered is ClientTls.IMPLICIT else PREFERRED
    records.append(
        _srv(f"_imap._tcp.{d}.", imap_priority, starttls, f"the host of server {server.name}")
    )
    if server.imaps_port is None:
        records.append(_absent(f"_imaps._tcp.{d}.", f"server {server.name} has no imaps_port"))
    else:
        imaps = Endpoint(server.host, server.imaps_port, ClientTls.IMPLICIT)
        imaps_priority = PREFERRED if offered is ClientTls.IMPLICIT else OTHER
        records.append(
            _srv(f"_imaps._tcp.{d}.", imaps_priority, imaps, f"the host of server {server.name}")
        )
    submission = server.submission or domain.submission
    if submission is None:
        records.append(
            Record(
                f"_submission._tcp.{d}.",
                "",
                f"no submission records: neither domains.{d} nor server {server.name} "
                "names a submission server",
            )
        )
    else:
        implicit = submission.tls is ClientTls.IMPLICIT
        label, other = (
            ("_submissions", "_submission") if implicit else ("_submission", "_submissions")
        )
        records.append(_srv(f"{label}._tcp.{d}.", PREFERRED, submission, "the submission host"))
        records.append(_absent(f"{other}._tcp.{d}.", f"submission is {submission.authority} only"))
    for label in ("autoconfig", "autodiscover"):
        records.append(_pointer(f"{label}.{d}.", web_host))
    records.append(
        _srv(
            f"_autodiscover._tcp.{d}.",
            PREFERRED,
            Endpoint(web_host, HTTPS_PORT, ClientTls.IMPLICIT),
            "the autodiscovery host",
        )
    )
    return records


def _pointer(name: str, host: str) -> Record:
    """``name`` to ``host``: a CNAME, or A/AAAA for an IP address (a CNAME names a name)."""
    if _is_ip(host):
        kind = "AAAA" if ":" in host else "A"
        return Record(name, kind, host)
    return Record(name, "CNAME", f"{host}.")


def zone_lines(table: RoutingTable, web_host: str) -> list[str]:
    """Zone-file lines for every domain of ``table``: a comment, then its records."""
    blocks = [(domain, domain_records(domain, web_host)) for domain in table.domains.values()]
    width = max((len(r.name) for _, records in blocks for r in records), default=0)
    kind_width = max((len(r.kind) for _, records in blocks for r in records), default=0)
    lines: list[str] = []
    for domain, records in blocks:
        server = domain.server
        if lines:
            lines.append("")
        lines.append(
            f"; {domain.name}: server {server.name} ({table.file}:{domain.line}), "
            f"setup documents offer IMAP {server.imap_endpoint.authority} "
            f"{server.imap_endpoint.tls.value}"
        )
        for record in records:
            if not record.kind:
                lines.append(f"; {record.name} {record.data}")
                continue
            line = f"{record.name:<{width}} IN {record.kind:<{kind_width}} {record.data}"
            lines.append(line + (f"  ; {record.comment}" if record.comment else ""))
    return lines
