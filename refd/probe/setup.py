"""``refd probe --autoconfig``: fetch the account-setup document as a client does, and compare.

Thunderbird (and the other autoconfig clients) ask
``http(s)://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<address>``
when an account is set up. The probe asks the same question, with the same
``Host`` header, at ``--web`` (default: ``https://autoconfig.<domain>``),
reads the answer with refd's hardened reader (`read_autoconfig`) and checks
it against the first server the door's referral named
(`refd.probe.plan.setup_verdict`): a setup document and a referral must
never disagree.

Blocking I/O with the standard library's HTTP client, after the IMAP part
has ended: one request, bounded by ``--timeout``, the body by
`MAX_DOCUMENT_BYTES`. The probe's CA options verify an ``https`` server
against the ``--web`` host.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from urllib.parse import quote

from refd.autodiscovery.documents import BadRequest, read_autoconfig
from refd.imap_client import client_tls_context
from refd.probe.plan import Exit, setup_verdict
from refd.probe.report import Report
from refd.routing.url import url_host

__all__ = ["MAX_DOCUMENT_BYTES", "PATH", "check_setup", "fetch"]

PATH = "/mail/config-v1.1.xml"
MAX_DOCUMENT_BYTES = 1 << 20
#: the IMAP outcomes after which there is nothing to compare a document with
_NOT_COMPARED = (Exit.USAGE, Exit.AUTH_FAILED, Exit.DOOR_UNREACHABLE)


class FetchError(Exception):
    """The document could not be had: no connection, TLS, not 200, too big."""


def fetch(
    scheme: str,
    host: str,
    port: int,
    address: str,
    *,
    timeout_s: float,
    context: ssl.SSLContext | None,
) -> tuple[str, bytes]:
    """GET the autoconfig document for ``address``: (the URL as shown, the body)."""
    domain = address.rpartition("@")[2]
    target = f"{PATH}?emailaddress={quote(address, safe='@')}"
    shown = f"{scheme}://{url_host(host)}:{port}{target} (Host: autoconfig.{domain})"
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(
            "GET",
            target,
            headers={
                "Host": f"autoconfig.{domain}",
                "Accept": "application/xml, text/xml",
                "User-Agent": "refd-probe",
                "Connection": "close",
            },
        )
        answer = conn.getresponse()
        body = answer.read(MAX_DOCUMENT_BYTES + 1)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else str(exc) or type(exc).__name__
        raise FetchError(f"GET {shown}: {reason}") from None
    finally:
        conn.close()
    if answer.status != 200:
        raise FetchError(f"GET {shown}: HTTP {answer.status} {answer.reason}")
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"GET {shown}: more than {MAX_DOCUMENT_BYTES} bytes")
    return shown, body


def check_setup(report: Report, emit: Callable[[str], None]) -> None:
    """Fetch the document for ``--autoconfig`` and judge it against the referral.

    A mismatch (exit 9) or a document that cannot be had or read (exit 10)
    overrides the IMAP outcome; otherwise that stands. Nothing is compared
    when the IMAP part ended before a referral could come (usage, password,
    door unreachable) or when the door gave none.
    """
    options = report.options
    address = options.autoconfig
    assert address is not None and options.web is not None
    setup: dict[str, object] = {"address": address}
    report.setup = setup
    if report.exit_code in _NOT_COMPARED:
        setup["checked"] = False
        emit(f"setup: not checked ({report.exit_code.label} before any referral)")
        return
    scheme, host, port = options.web
    context = None
    if scheme == "https":
        context = client_tls_context(options.cafile, verify=not options.insecure)
    try:
        shown, body = fetch(
            scheme, host, port, address, timeout_s=options.timeout_s, context=context
        )
        setup["url"] = shown
        offered = read_autoconfig(body)
    except (FetchError, BadRequest) as exc:
        _judge(report, emit, Exit.SETUP_UNAVAILABLE, f"autoconfig: {exc}")
        return
    setup["servers"] = [
        {
            "element": s.element,
            "type": s.type,
            "hostname": s.hostname,
            "port": s.port,
            "socket_type": s.socket_type,
            "username": s.username,
        }
        for s in offered
    ]
    referral = report.first_referral
    if referral is None:
        setup["checked"] = False
        emit(f"setup GET {shown}: {len(offered)} servers; not compared: the door gave no referral")
        return
    emit(f"setup GET {shown}: 200, {len(offered)} servers")
    verdict, text = setup_verdict(offered, referral, address)
    if verdict is not None:
        _judge(report, emit, verdict, text)
        return
    setup["checked"] = True
    setup["agrees"] = True
    emit(f"setup: {text} ({referral.where})")


def _judge(report: Report, emit: Callable[[str], None], code: Exit, text: str) -> None:
    assert report.setup is not None
    report.setup["checked"] = code is Exit.SETUP_MISMATCH
    report.setup["agrees"] = False
    report.setup["problem"] = text
    emit(f"setup: {text}")
    report.exit_code = code
    report.message = f"{text} (IMAP: {report.message})"
