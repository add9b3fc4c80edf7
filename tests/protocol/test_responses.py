import ast
import pathlib

import pytest

from refd.protocol.responses import (
    Bye,
    Cond,
    Continuation,
    Tagged,
    Untagged,
    UntaggedStatus,
    id_response,
    list_response,
    namespace_response,
    referral_code,
    to_bytes,
    wire_mailbox,
)

WIRE = [
    (Tagged("a1", Cond.OK, "LOGIN completed."), b"a1 OK LOGIN completed.\r\n"),
    (
        Tagged("a1", Cond.NO, "Try mail2.", referral_code(["imap://a;AUTH=*@m2/"])),
        b"a1 NO [REFERRAL imap://a;AUTH=*@m2/] Try mail2.\r\n",
    ),
    (UntaggedStatus(Cond.BAD, "Empty command line."), b"* BAD Empty command line.\r\n"),
    (Bye("Autologout.", "UNAVAILABLE"), b"* BYE [UNAVAILABLE] Autologout.\r\n"),
    (Untagged("CAPABILITY IMAP4rev1"), b"* CAPABILITY IMAP4rev1\r\n"),
    (Continuation(), b"+ \r\n"),
    (Continuation("Ready"), b"+ Ready\r\n"),
    # CR/LF never escape into the stream, whatever the text holds.
    (Tagged("a", Cond.NO, "x\r\n* OK y"), b"a NO x  * OK y\r\n"),
    (Tagged("a", Cond.NO, "x", "REFERRAL a\x00b\nc"), b"a NO [REFERRAL a b c] x\r\n"),
    (Untagged("CAPABILITY\r\nX"), b"* CAPABILITY  X\r\n"),
    (Continuation("go\x00on\r"), b"+ go on \r\n"),
    (Tagged("a", Cond.NO, ""), b"a NO .\r\n"),
]


@pytest.mark.parametrize(("response", "wire"), WIRE)
def test_to_bytes(response: object, wire: bytes) -> None:
    assert to_bytes(response) == wire  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Shared/Sales", "Shared/Sales"),
        ("Shared/Café Menu", '"Shared/Caf&AOk- Menu"'),
        ("100%", '"100%"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("", '""'),
        ("NIL", '"NIL"'),
        ("x]", '"x]"'),
    ],
)
def test_wire_mailbox(name: str, wire: str) -> None:
    assert wire_mailbox(name) == wire


def test_data_responses() -> None:
    assert to_bytes(list_response("LIST", ["\\Remote"], "/", "Shared/Café Menu")) == (
        b'* LIST (\\Remote) "/" "Shared/Caf&AOk- Menu"\r\n'
    )
    assert to_bytes(namespace_response((("", "/"),), (), (("Shared/", "/"),))) == (
        b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))\r\n'
    )
    assert to_bytes(id_response([("name", "refd")])) == b'* ID ("name" "refd")\r\n'


PURE = ("refd/protocol", "refd/routing")
FORBIDDEN = {"trio", "socket", "ssl", "yaml", "prometheus_client", "asyncio", "subprocess"}


@pytest.mark.parametrize("package", PURE)
def test_core_imports_no_io(package: str) -> None:
    root = pathlib.Path(__file__).resolve().parents[2] / package
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
