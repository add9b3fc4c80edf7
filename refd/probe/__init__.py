"""``refd probe``: follow a route from the outside, exactly as a client sees it.

The probe is a small referral-following IMAP client. It connects to the
door, logs in, follows the referrals it gets (RFC 2221 login referrals,
RFC 2193 mailbox referrals) to whichever server they name, logs in there
with the same credentials and runs one mailbox command, printing every hop::

    hop 1 door 127.0.0.1:1143: LOGIN alice -> NO [REFERRAL imap://alice;AUTH=*@mail1/] ...
    hop 2 imap://alice;AUTH=*@mail1/: LOGIN alice -> OK [CAPABILITY ...] Logged in
    hop 2 imap://alice;AUTH=*@mail1/: SELECT INBOX -> OK [READ-WRITE] Select completed.
    result: ok (exit 0): SELECT INBOX on mail1:143 as alice: EXISTS 2, UIDVALIDITY 1700000000

At each server: connect (and TLS), read the greeting (``* BYE [REFERRAL]``
is followed, RFC 2221 §4.2), STARTTLS if asked, LOGIN, then the command.

- ``NO [REFERRAL url ...]`` to LOGIN or to the command: follow. The URLs are
  RFC 5092 server or mailbox URLs (``parse_imap_url``); several are replicas,
  preferred first (RFC 2193 §3): they are tried in order and the first one
  that answers wins. A URL "fails" on a refused or timed-out connection, a
  TLS error, a greeting other than ``* OK``/``* PREAUTH``, a closed
  connection or an answer that is not IMAP, at any point of its session.
- ``OK [REFERRAL url]`` to LOGIN (accept mode, RFC 2221 §4.1): logged in
  here; stay and run the command here (it will usually be referred).
- The command runs on the mailbox the last followed URL named, else on
  ``--mailbox``. SELECT and EXAMINE report EXISTS and UIDVALIDITY; STATUS
  asks for MESSAGES UIDNEXT UIDVALIDITY; APPEND sends a small test message
  (Subject ``refd probe test message``) with a synchronizing literal, so a
  door answers with its referral instead of ``+`` and never gets the body;
  LIST sends ``RLIST "" <mailbox>`` to a server advertising
  MAILBOX-REFERRALS (RFC 2193 §5.1: a referral client lists with RLIST) and
  ``LIST "" <mailbox>`` elsewhere, so ``--mailbox`` may hold wildcards.
  The others report the tagged answer.

Decisions:

- **The URL's user is the login name** at that server (RFC 5092 §3.2: the
  URL's user name "is used in the LOGIN command"); the password stays the
  one given. A URL without a user keeps the current name. refd's URLs carry
  the name it authenticated (domain lower-cased), so the two agree. A URL
  without ``;AUTH=*`` would ask for anonymous login (RFC 5092 §3.2); the
  probe checks a user's route, so it logs in as the user anyway.
- **TLS: at the door as asked, at referred servers STARTTLS** (``--tls``:
  implicit TLS at the door, ``--starttls``: STARTTLS there, neither:
  plaintext everywhere), verifying each server's certificate against the
  host in its URL (``--cafile``, else the system CAs; ``--insecure``
  verifies nothing). An IMAP URL cannot say "TLS", so a referral-following
  client (alpine) opens the URL's port in plaintext and upgrades with
  STARTTLS, whichever way it reached the door; refd's URLs name STARTTLS
  ports for that reason, and the probe follows them the same way
  (`refd.probe.plan.hop_tls`). A referral to an implicit-TLS port fails
  here as it hangs alpine.
- **Loops** (RFC 2221 §3: "MUST NOT follow more than 10 levels"): every
  server visited is remembered as (host, port, user, mailbox the URL named);
  a referral naming one of them again, or a hop beyond ``--max-hops`` (the
  door is hop 1), stops the probe with exit 5. Hosts are compared as
  written (lower-cased): two spellings of one host are caught by the hop
  bound.
- **Strict and bounded**: ``--timeout`` bounds the connect, the TLS
  handshake, and each response as a whole (one deadline however slowly
  its bytes drip in); a logical response line (literals included)
  is at most 64 KiB, a command's whole answer at most 16 MiB. A connection
  that failed gets no LOGOUT; others get one, waited for at most 1 s.
- **Never the password** in output: LOGIN is shown as ``LOGIN <user>``; a
  password goes as a quoted string, or as a literal when it is 8-bit
  (``refd.protocol.client.login_chunks``).

Exit codes (each means one thing; ``--json`` carries it too):

== =====================================================================
0  the command succeeded where the referrals led -- or at the door
   itself, which then gave no referral (``referrals: 0``; a plain IMAP
   server, or LIST/RLIST, which RFC 2193 answers at the door)
2  usage or configuration error (bad option, password or CA file)
3  authentication failed: LOGIN refused without a referral, at the door
   (``[AUTHENTICATIONFAILED]``, ``[AUTHORIZATIONFAILED]``, ``[EXPIRED]``,
   ``[PRIVACYREQUIRED]``, no code, or BAD) or at any later server (any NO
   or BAD); or LOGINDISABLED advertised
4  no referral where one was expected: the door refused LOGIN with
   another code (refd: ``[UNAVAILABLE]``, no route for the user or its
   password check down), or refused the command without a referral
5  referral loop: a URL already visited, or more than ``--max-hops`` hops
6  backend unreachable: every URL of a referral failed (see above), or
   none of them could be used
7  a server the probe was referred to refused the command (tagged NO or
   BAD without a referral), e.g. ``[NONEXISTENT]``
8  the door itself unreachable (connect, TLS, timeout, not IMAP)
== =====================================================================

The package (``refd.probe``; this docstring is ``refd probe``'s manual):

- ``cli``: the options, the password, what is printed; ``run(args)``;
- ``plan``: pure decisions -- options, exit codes, verdicts on tagged
  answers, referral URLs to targets with loop detection, command bytes;
- ``run``: the visits, on trio (``trio.run`` keeps ``probe`` blocking);
- ``report``: hops and result, as lines and as JSON.

It talks IMAP through the client that the ``imap`` auth source uses too
(``refd.imap_client`` over the sans-IO ``refd.protocol.client``), and may
import those, ``refd.protocol`` and ``refd.routing.url``; nothing of the
daemon (server, session, config).
"""

from refd.imap_client import TlsMode
from refd.probe.cli import EPILOG, UsageError, add_arguments, options_from_args, parse_hostport, run
from refd.probe.plan import TEST_SUBJECT, Exit, Options
from refd.probe.report import Report
from refd.probe.run import probe

__all__ = [
    "EPILOG",
    "TEST_SUBJECT",
    "Exit",
    "Options",
    "Report",
    "TlsMode",
    "UsageError",
    "add_arguments",
    "options_from_args",
    "parse_hostport",
    "probe",
    "run",
]
