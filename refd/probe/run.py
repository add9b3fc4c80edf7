"""One probe run: visit the door, follow its referrals, run the command where they lead.

The I/O of the probe, on the IMAP client that the ``imap`` auth source
uses too (`refd.imap_client` over the sans-IO `refd.protocol.client`).
`probe` is blocking, as a CLI wants: it runs the visits under
``trio.run``. Each visit connects, reads the greeting, does STARTTLS if
asked, logs in and runs the command; what each answer means and where a
referral leads is decided in `refd.probe.plan`, and every step is written
down in a `refd.probe.report.Report`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from refd.imap_client import ClientError, ImapClient, TlsMode, client_tls_context, connect
from refd.probe.plan import (
    Exit,
    HopKey,
    Options,
    Target,
    Verdict,
    command_chunks,
    command_verdict,
    hop_tls,
    login_verdict,
    plan_referral,
    probe_message,
)
from refd.probe.report import Hop, Report, describe_data, result_data
from refd.protocol.client import ResponseError, check_greeting, render

__all__ = ["probe"]


@dataclass(frozen=True)
class _Referred:
    urls: tuple[str, ...]


@dataclass(frozen=True)
class _Done:
    exit_code: Exit
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failed:
    reason: str


class _Prober:
    def __init__(self, options: Options, emit: Callable[[str], None]) -> None:
        self.options = options
        self.emit = emit
        self.context: ssl.SSLContext | None = None
        if options.tls is not TlsMode.NONE:
            self.context = client_tls_context(options.cafile, verify=not options.insecure)
        self.report = Report(options)

    def step(self, hop: Hop, target: Target, label: str, answer: str) -> None:
        hop.steps.append({"command": label, "response": answer})
        self.emit(f"hop {hop.hop} {target.where}: {label} -> {answer}")

    async def run(self) -> Report:
        o = self.options
        door = Target(o.door_host, o.door_port, o.user, o.mailbox)
        visited: dict[HopKey, int] = {door.key: 1}
        candidates: tuple[Target, ...] = (door,)
        number = 1
        while True:
            outcome: _Referred | _Done | _Failed | None = None
            source = door
            failures: list[str] = []
            for target in candidates:
                source = target
                outcome = await self.visit(number, target)
                if not isinstance(outcome, _Failed):
                    break
                failures.append(f"{target.where}: {outcome.reason}")
            if outcome is None or isinstance(outcome, _Failed):
                if number == 1:
                    reason = outcome.reason if outcome else "not tried"
                    return self.finish(Exit.DOOR_UNREACHABLE, f"door {o.door}: {reason}", None)
                tried = "; ".join(failures) or "no usable URL"
                return self.finish(
                    Exit.UNREACHABLE,
                    f"no server of the referral at hop {number - 1} answered ({tried})",
                    None,
                )
            if isinstance(outcome, _Done):
                return self.finish(outcome.exit_code, outcome.message, source, outcome.data)
            plan = plan_referral(
                outcome.urls,
                current=source,
                visited=visited,
                next_hop=number + 1,
                max_hops=o.max_hops,
            )
            if plan.stop is not None:
                return self.finish(plan.stop[0], plan.stop[1], source)
            for url, reason in plan.unusable:
                hop = Hop(number + 1, "-", url, source.user, None, error=reason)
                self.report.hops.append(hop)
                self.emit(f"hop {number + 1} {url}: unusable URL -> {reason}")
            if not plan.targets:
                reasons = "; ".join(f"{u}: {r}" for u, r in plan.unusable) or "no URL"
                return self.finish(
                    Exit.UNREACHABLE,
                    f"no usable URL in the referral at hop {number} ({reasons})",
                    None,
                )
            number += 1
            self.report.referrals += 1
            for target in plan.targets:
                visited.setdefault(target.key, number)
            candidates = plan.targets

    def finish(
        self,
        code: Exit,
        message: str,
        final: Target | None,
        data: dict[str, object] | None = None,
    ) -> Report:
        report = self.report
        report.exit_code = code
        report.message = message
        report.final = final
        report.data = data or {}
        return report

    async def open(self, target: Target) -> ImapClient:
        timeout_s = self.options.timeout_s
        stream = await connect(target.host, target.port, timeout_s=timeout_s)
        client = ImapClient(stream, timeout_s=timeout_s)
        if hop_tls(self.options.tls, at_door=target.url is None) is TlsMode.IMPLICIT:
            assert self.context is not None
            try:
                await client.tls_handshake(self.context, target.host)
            except BaseException:
                await client.aclose()
                raise
        return client

    async def visit(self, number: int, target: Target) -> _Referred | _Done | _Failed:
        o = self.options
        at_door = target.url is None
        hop = Hop(number, target.server, target.url, target.user, target.url_mailbox)
        self.report.hops.append(hop)
        client: ImapClient | None = None
        stage = "connect"
        broken = False
        try:
            client = await self.open(target)
            greeting = await client.greeting()
            self.step(hop, target, "connect", render(greeting))
            check_greeting(greeting)
            if greeting.condition == "BYE":
                if greeting.code == "REFERRAL":  # RFC 2221 §4.2
                    return _Referred(tuple(greeting.code_args.split()))
                raise ClientError(f"the server said {render(greeting)}")
            if hop_tls(o.tls, at_door=at_door) is TlsMode.STARTTLS:
                stage = "STARTTLS"
                answer = await client.request_starttls()
                self.step(hop, target, "STARTTLS", render(answer))
                assert self.context is not None
                await client.start_tls(answer, self.context, target.host)
            if greeting.condition != "PREAUTH":
                stage = f"LOGIN {target.user}"
                if "LOGINDISABLED" in await client.known_capabilities():
                    self.step(hop, target, stage, "not sent: the server advertises LOGINDISABLED")
                    return _Done(
                        Exit.AUTH_FAILED,
                        f"{target.where} advertises LOGINDISABLED: use --tls or --starttls",
                    )
                tagged = (await client.login(target.user, o.password)).tagged
                self.step(hop, target, stage, render(tagged))
                verdict = login_verdict(tagged.condition, tagged.code, at_door=at_door)
                if verdict is Verdict.FOLLOW:
                    return _Referred(tuple(tagged.code_args.split()))
                if isinstance(verdict, Exit):
                    place = "the door" if at_door else target.server
                    return _Done(verdict, f"LOGIN as {target.user} at {place}: {render(tagged)}")
            return await self.run_command(client, hop, target, at_door)
        except (ClientError, ResponseError) as exc:
            broken = True  # no LOGOUT on a connection that failed
            reason = str(exc)
            self.step(hop, target, stage, f"failed: {reason}")
            if stage != "connect":
                reason = f"{reason} (at {stage})"
            hop.error = reason
            return _Failed(reason)
        finally:
            if client is not None:
                if not broken:
                    await client.logout()
                await client.aclose()

    async def run_command(
        self, client: ImapClient, hop: Hop, target: Target, at_door: bool
    ) -> _Referred | _Done:
        command = self.options.command
        message, message_id = probe_message(target.user) if command == "APPEND" else (b"", "")
        caps = client.capabilities or frozenset()
        tag = client.tag()
        chunks = command_chunks(tag, command, target.mailbox, caps, message)
        label = chunks[0][len(tag) + 1 :].decode("ascii").split("\r\n")[0]
        answer = await client.command(tag, chunks)
        tagged = answer.tagged
        self.step(hop, target, label, render(tagged))
        verdict = command_verdict(tagged.condition, tagged.code, at_door=at_door)
        if verdict is Verdict.FOLLOW:
            return _Referred(tuple(tagged.code_args.split()))
        place = "the door" if at_door else target.server
        what = f"{command} {target.mailbox} at {place} as {target.user}"
        if verdict is Exit.OK:
            data = result_data(command, answer.untagged, tagged)
            if command == "APPEND":
                data["message_id"] = message_id
            summary = describe_data(command, data)
            if at_door:
                summary += " (answered by the door itself: no referral)"
            return _Done(Exit.OK, f"{what}: {summary}", data)
        assert isinstance(verdict, Exit)
        return _Done(verdict, f"{what}: {render(tagged)}")


def probe(options: Options, emit: Callable[[str], None] | None = None) -> Report:
    """Run the probe (blocking); ``emit`` gets each hop line as it happens."""
    return trio.run(_Prober(options, emit or (lambda _line: None)).run)
