"""What a probe run found, and how it is printed: hop lines, the result line, JSON.

Pure: `run` fills a `Report`; `refd.probe.cli` prints it (`result_line`,
`Report.to_json`). `result_data` reads the counts and names out of a
successful command's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from refd.probe.plan import Exit, Options, Target
from refd.protocol import mutf7
from refd.protocol.client import Response, Untagged, parse_data

__all__ = ["Hop", "Report", "describe_data", "result_data", "result_line"]


@dataclass
class Hop:
    """One server visited (or tried): what was said there."""

    hop: int
    server: str
    url: str | None
    user: str
    mailbox: str | None
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "hop": self.hop,
            "server": self.server,
            "url": self.url,
            "user": self.user,
            "mailbox": self.mailbox,
            "steps": self.steps,
            "error": self.error,
        }


@dataclass
class Report:
    """The whole run: every hop and the result."""

    options: Options
    hops: list[Hop] = field(default_factory=list)
    exit_code: Exit = Exit.OK
    message: str = ""
    final: Target | None = None
    referrals: int = 0
    data: dict[str, object] = field(default_factory=dict)
    #: the first server the door's referral named (login or mailbox referral)
    first_referral: Target | None = None
    #: ``--autoconfig``: what was fetched and how it compares (None: not asked)
    setup: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        o = self.options
        final = self.final
        return {
            "door": o.door,
            "user": o.user,
            "command": o.command,
            "mailbox": o.mailbox,
            "tls": o.tls.value,
            "hops": [h.to_json() for h in self.hops],
            "result": {
                "exit_code": int(self.exit_code),
                "status": self.exit_code.label,
                "message": self.message,
                "referrals": self.referrals,
                "server": final.server if final else None,
                "url": final.url if final else None,
                "user": final.user if final else None,
                "mailbox": final.mailbox if final else None,
                "data": self.data,
            },
            "setup": self.setup,
        }


def result_line(report: Report) -> str:
    """The last line of the human output: ``result: ok (exit 0): ...``."""
    code = report.exit_code
    return f"result: {code.label} (exit {int(code)}): {report.message}"


def _untagged_body(raw: bytes) -> bytes:
    return raw[2:] if raw.startswith(b"* ") else raw


def _decode_name(name: str) -> str:
    try:
        return mutf7.decode(name)
    except mutf7.MUTF7Error:
        return name


def result_data(command: str, untagged: Sequence[Untagged], tagged: Response) -> dict[str, object]:
    """What the probe reports from a successful command's answer."""
    out: dict[str, object] = {}
    if command in ("SELECT", "EXAMINE"):
        for line in untagged:
            resp = line.response
            if resp.condition == "" and resp.text.upper().endswith(" EXISTS"):
                count = resp.text.split(" ", 1)[0]
                if count.isdigit():
                    out["exists"] = int(count)
            elif resp.code == "UIDVALIDITY" and resp.code_args.isdigit():
                out["uidvalidity"] = int(resp.code_args)
        if tagged.code in ("READ-WRITE", "READ-ONLY"):
            out["access"] = tagged.code
    elif command == "STATUS":
        for line in untagged:
            resp = line.response
            if resp.condition or not resp.text.upper().startswith("STATUS "):
                continue
            tokens = parse_data(_untagged_body(line.raw))
            items = tokens[-1] if len(tokens) >= 3 and isinstance(tokens[-1], list) else []
            pairs = zip(items[0::2], items[1::2], strict=False)
            for name, value in pairs:
                if isinstance(name, str) and isinstance(value, str) and value.isdigit():
                    out[name.lower()] = int(value)
    elif command == "LIST":
        entries: list[dict[str, object]] = []
        for line in untagged:
            resp = line.response
            if resp.condition or not resp.text.upper().startswith("LIST "):
                continue
            tokens = parse_data(_untagged_body(line.raw))
            if len(tokens) >= 4 and isinstance(tokens[1], list) and isinstance(tokens[3], str):
                flags = [f for f in tokens[1] if isinstance(f, str)]
                delimiter = tokens[2] if isinstance(tokens[2], str) else None
                name = _decode_name(tokens[3])
                entries.append({"flags": flags, "delimiter": delimiter, "name": name})
        out["entries"] = entries
    elif command == "APPEND" and tagged.code == "APPENDUID":
        out["appenduid"] = tagged.code_args
    return out


def describe_data(command: str, data: dict[str, object]) -> str:
    """`result_data` in a few words, for the result line."""
    if command in ("SELECT", "EXAMINE", "STATUS"):
        keys = ("exists", "messages", "uidnext", "uidvalidity")
        parts = [f"{k.upper()} {data[k]}" for k in keys if k in data]
        return ", ".join(parts) or "no counts reported"
    if command == "LIST":
        entries = data.get("entries")
        assert isinstance(entries, list)
        names = [str(e["name"]) for e in entries[:10]]
        more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
        return f"{len(entries)} mailbox(es)" + (f": {', '.join(names)}{more}" if names else "")
    if command == "APPEND":
        uid = data.get("appenduid")
        return f"appended ({data.get('message_id')})" + (f", APPENDUID {uid}" if uid else "")
    return "done"
