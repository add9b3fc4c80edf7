"""A private, headless Thunderbird driven through Marionette, for account-setup tests.

`start_thunderbird(binary, directory)` creates ``directory/home`` (its
``HOME``) and ``directory/profile`` (a fresh profile whose ``user.js`` is
written here), starts the real binary with ``--headless --marionette
-remote-allow-system-access --no-remote --profile ...`` in its own process
group, reads the Marionette port Thunderbird chose (``marionette.port`` 0:
it writes ``MarionetteActivePort`` into the profile), opens a session and
switches to the chrome context. `ThunderbirdInstance.stop()` deletes the
session, then SIGTERM to the PID, SIGKILL after a grace period, and ends
any process left in its group.

`account_setup(address, http_proxy=..., https_proxy=...)` runs, inside Thunderbird, the
lookup its account setup runs when a user types an address.  Where
``FindConfig.parallelAutoDiscovery`` (``resource:///modules/accountcreation/
FindConfig.sys.mjs``) is a generator, as in the releases whose account hub
is the default, that: what ``views/email.mjs`` calls, then
``ewsifyConfig`` and ``AccountConfig.replaceVariables`` (what the hub does
with the result before it shows it).  In 140 ESR (Debian 12's package) the
hub is off by default and its ``parallelAutoDiscovery`` asks Autodiscover
without a password, so a 401 there ends the whole lookup; the default
wizard's ``findConfig`` (``accountSetup.js``, not a module) is followed
step for step instead, with the same modules: the four priority-ordered
lookups and Autodiscover with the typed password. It returns the incoming and outgoing
servers Thunderbird would configure, with the lookup that produced them
(``subSource``, e.g. ``xml-from-isp-http``).
`exchange_autodiscover(...)` runs ``fetchConfigFromExchange`` from
``ExchangeAutoDiscover.sys.mjs`` alone (a promise, or in 140 ESR with
success and error callbacks) (the Microsoft Autodiscover POX
lookup, which the hub runs in parallel).

Thunderbird fetches autoconfig from fixed URLs on ports 80/443
(``http(s)://autoconfig.<domain>/mail/config-v1.1.xml``,
``http(s)://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``) and
Autodiscover from ``https://autodiscover.<domain>/``, ``https://<domain>/``
and ``http://autodiscover.<domain>/autodiscover/autodiscover.xml``. So each
lookup first sets Thunderbird's proxy prefs: plain HTTP goes to the proxy at
``http_proxy`` as absolute-form requests (``GET http://autoconfig.example.org
/mail/...``: the door's HTTP listener answers them itself), HTTPS as ``CONNECT
host:443`` to ``https_proxy`` (a `ConnectTunnel` to the door's TLS listener;
`trust_ca` makes Thunderbird accept the test certificate). Between lookups
both point at a closed port (bound for the instance's lifetime and never
listening, so no other server can take it), so nothing Thunderbird fetches on its own
(update checks, add-on lists) leaves the machine. The profile also turns off
the lookup in Mozilla's ISP database (``mailnews.auto_config_url`` empty),
a lower-priority source that cannot change what the door's answer gives.
Thunderbird's MX and SRV look-ups (``forMX``, ``_autodiscover._tcp``) use
the system resolver; they find nothing for example.org and lose to any
answer the door gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .marionette import Marionette

INSTALL_HINT = "thunderbird not installed: apt-get install thunderbird"
#: Debian's /usr/bin/thunderbird is a wrapper script; this is the application itself
DEBIAN_BINARY = "/usr/lib/thunderbird/thunderbird"
#: startup until the first window is idle: ~3 s alone, ~18 s on a loaded 2-core machine
START_TIMEOUT_S = 120.0
LOOKUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

PREFS: dict[str, object] = {
    # Marionette picks a free port and writes it to <profile>/MarionetteActivePort.
    "marionette.port": 0,
    # Manual proxy configuration; account_setup() sets host and ports per lookup.
    "network.proxy.type": 1,
    "network.proxy.share_proxy_settings": False,
    # No lookup in Mozilla's ISP database (live.thunderbird.net).
    "mailnews.auto_config_url": "",
    # The account hub's debug log, and the chrome console, go to thunderbird.log.
    "mail.setup.loglevel": "All",
    "devtools.console.stdout.chrome": True,
    # No first-run pages, update checks, telemetry or in-app notifications.
    "app.update.disabledForTesting": True,
    "app.update.checkInstallTime": False,
    "extensions.update.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "mail.provider.suppress_dialog_on_startup": True,
    "mail.shell.checkDefaultClient": False,
    "mailnews.start_page.enabled": False,
    "mail.inappnotifications.enabled": False,
}

#: Shared by the lookups below: point the proxy prefs at a port, clear the HTTP
#: cache (so no lookup sees an earlier answer), describe an AccountConfig.
PRELUDE = """
const setProxy = (httpPort, sslPort) => {
  for (const [kind, port] of [["http", httpPort], ["ssl", sslPort]]) {
    Services.prefs.setStringPref(`network.proxy.${kind}`, "127.0.0.1");
    Services.prefs.setIntPref(`network.proxy.${kind}_port`, port);
  }
};
// XPCOM constants do not enumerate: map the names Thunderbird uses to them.
const names = (iface, list) =>
  Object.fromEntries(list.filter(n => n in iface).map(n => [iface[n], n]));
const socketTypes = names(Ci.nsMsgSocketType, ["plain", "trySTARTTLS", "alwaysSTARTTLS", "SSL"]);
const authMethods = names(Ci.nsMsgAuthMethod, [
  "none", "old", "passwordCleartext", "passwordEncrypted", "GSSAPI", "NTLM",
  "External", "secure", "anything", "OAuth2",
]);
const server = s => s && {
  type: s.type,
  hostname: s.hostname,
  port: s.port,
  socketType: socketTypes[s.socketType] ?? String(s.socketType),
  username: s.username,
  auth: authMethods[s.auth] ?? String(s.auth),
};
const describe = config => config && {
  source: config.source,
  subSource: config.subSource,
  incoming: server(config.incoming),
  outgoing: server(config.outgoing),
  incomingAlternatives: config.incomingAlternatives.map(server),
  outgoingAlternatives: config.outgoingAlternatives.map(server),
};
const { AccountConfig } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/AccountConfig.sys.mjs"
);
const { AccountCreationUtils } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/AccountCreationUtils.sys.mjs"
);
const [address, password, httpPort, sslPort, closedPort, resolve] = arguments;
const lookup = async work => {
  Services.cache2.clear();
  setProxy(httpPort, sslPort);
  try {
    return await work();
  } catch (error) {
    return { error: `${error}`, code: error.code ?? null, stack: `${error.stack}` };
  } finally {
    setProxy(closedPort, closedPort);
  }
};
"""

ACCOUNT_SETUP_JS = (
    PRELUDE
    + """
const { FindConfig } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/FindConfig.sys.mjs"
);
// What accountSetup.js's findConfig (140 ESR) does, step for step, with the
// modules it uses: the four priority-ordered lookups and Autodiscover in
// parallel, then the first priority lookup that succeeded (an Exchange
// server from Autodiscover added as an alternative), else Autodiscover's.
// No guessConfig: a lookup that finds nothing returns null.
const legacyFindConfig = domain => new Promise(resolveConfig => {
  const { FetchConfig } = ChromeUtils.importESModule(
    "resource:///modules/accountcreation/FetchConfig.sys.mjs"
  );
  const { fetchConfigFromExchange } = ChromeUtils.importESModule(
    "resource:///modules/accountcreation/ExchangeAutoDiscover.sys.mjs"
  );
  const { ParallelAbortable, PriorityOrderAbortable, CancelledException } = AccountCreationUtils;
  const tasks = new ParallelAbortable();
  const priorityCall = tasks.addCall();
  const autodiscoverCall = tasks.addCall();
  tasks.addAllFinishedObserver(() => {
    const exchange = c => [c.incoming, ...c.incomingAlternatives].find(i => i.type == "exchange");
    if (priorityCall.succeeded) {
      const config = priorityCall.result;
      if (!exchange(config) && autodiscoverCall.succeeded) {
        const found = exchange(autodiscoverCall.result);
        if (found) {
          config.incomingAlternatives.push(found);
        }
      }
      resolveConfig(config);
    } else {
      resolveConfig(autodiscoverCall.succeeded ? autodiscoverCall.result : null);
    }
  });
  const queue = new PriorityOrderAbortable(
    priorityCall.successCallback(), priorityCall.errorCallback()
  );
  priorityCall.setAbortable(queue);
  for (const start of [
    (ok, fail) => FetchConfig.fromDisk(domain, ok, fail),
    (ok, fail) => FetchConfig.fromISP(domain, address, ok, fail),
    (ok, fail) => FetchConfig.fromDB(domain, ok, fail),
    (ok, fail) => FetchConfig.forMX(domain, address, ok, fail),
  ]) {
    const call = queue.addCall();
    call.setAbortable(start(call.successCallback(), call.errorCallback()));
  }
  const noRedirect = (host, ok, cancel) => {
    cancel(new CancelledException(`redirect to ${host} refused`));
    return new AccountCreationUtils.Abortable();
  };
  autodiscoverCall.setAbortable(fetchConfigFromExchange(
    domain, address, null, password, noRedirect,
    autodiscoverCall.successCallback(), autodiscoverCall.errorCallback()
  ));
});
lookup(async () => {
  const domain = address.split("@")[1];
  const find = FindConfig.parallelAutoDiscovery;
  let config;
  if (find.constructor.name === "AsyncGeneratorFunction") {
    // newer releases: a generator of configurations, the first is the hub's
    const discovery = find(domain, address, new AbortController().signal, password, undefined);
    ({ value: config } = await discovery.next());
  } else {
    // 140 ESR (Debian 12's): its account hub is off by default
    // (mail.accounthub.enabled) and its FindConfig asks Autodiscover without
    // the password; the default wizard, accountSetup.js's findConfig, runs
    // the same lookups with the password typed on its first page.
    config = await legacyFindConfig(domain);
  }
  if (!config || config.isRedirect) {
    return { error: `no configuration found: ${JSON.stringify(config)}` };
  }
  FindConfig.ewsifyConfig(config);
  AccountConfig.replaceVariables(config, "Test User", address, password);
  return describe(config);
}).then(resolve);
"""
)

EXCHANGE_JS = (
    PRELUDE
    + """
const { fetchConfigFromExchange } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/ExchangeAutoDiscover.sys.mjs"
);
lookup(async () => {
  const domain = address.split("@")[1];
  const refused = host => new Error(`redirect to ${host} refused`);
  let config;
  if (fetchConfigFromExchange.length >= 7) {
    // 140 ESR (Debian 12's): success and error callbacks; a redirect to
    // another domain asks confirmCallback, which says no
    config = await new Promise((resolve, reject) => {
      const refuse = (host, ok, cancel) => {
        cancel(refused(host));
        return new AccountCreationUtils.Abortable();
      };
      fetchConfigFromExchange(domain, address, null, password, refuse, resolve, reject);
    });
  } else {
    const refuseRedirect = host => Promise.reject(refused(host));
    config = await fetchConfigFromExchange(
      domain, address, new AbortController().signal, undefined, password, refuseRedirect
    );
  }
  AccountConfig.replaceVariables(config, "Test User", address, password);
  return describe(config);
}).then(resolve);
"""
)

TRUST_CA_JS = """
const [derBase64, resolve] = arguments;
const certdb = Cc["@mozilla.org/security/x509certdb;1"].getService(Ci.nsIX509CertDB);
certdb.addCertFromBase64(derBase64, "C,,");
resolve(true);
"""


def find_thunderbird() -> str | None:
    """Thunderbird: $REFD_THUNDERBIRD if set, else Debian's, else ``thunderbird`` on PATH."""
    override = os.environ.get("REFD_THUNDERBIRD")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    return shutil.which("thunderbird")


@dataclass(frozen=True)
class ServerSetting:
    """One server entry of Thunderbird's AccountConfig (AccountConfig.sys.mjs)."""

    type: str
    hostname: str
    port: int
    socket_type: str  # a name of Ci.nsMsgSocketType: plain, alwaysSTARTTLS, SSL
    username: str
    auth: str  # a name of Ci.nsMsgAuthMethod, e.g. passwordCleartext

    @classmethod
    def from_js(cls, value: dict[str, Any]) -> ServerSetting:
        return cls(
            type=value["type"],
            hostname=value["hostname"],
            port=value["port"],
            socket_type=value["socketType"],
            username=value["username"],
            auth=value["auth"],
        )


@dataclass(frozen=True)
class FoundConfig:
    """What a lookup found: the servers Thunderbird would set up, and where from."""

    source: str
    sub_source: str
    incoming: ServerSetting
    outgoing: ServerSetting | None
    incoming_alternatives: tuple[ServerSetting, ...]


class LookupFailed(AssertionError):
    """Thunderbird's lookup found nothing; carries its error and the console log."""


@dataclass
class ThunderbirdInstance:
    binary: str
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    marionette: Marionette | None = field(default=None, repr=False)
    version: str = ""
    #: seconds from exec to a Marionette session in the chrome context
    startup_s: float = 0.0
    #: bound, never listening: connections to it are refused
    closed: socket.socket | None = field(default=None, repr=False)

    @property
    def closed_port(self) -> int:
        assert self.closed is not None
        port: int = self.closed.getsockname()[1]
        return port

    @property
    def profile(self) -> Path:
        return self.directory / "profile"

    def log(self) -> str:
        """Thunderbird's output, without headless GTK's warnings about the missing screen."""
        try:
            text = (self.directory / "thunderbird.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        noise = ("Gtk-CRITICAL", "glib warning")
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if line.strip() and not any(mark in line for mark in noise)
        )

    def start(self) -> None:
        home = self.directory / "home"
        home.mkdir(parents=True)
        self.profile.mkdir()
        # Where the proxy points between lookups.
        self.closed = socket.socket()
        self.closed.bind(("127.0.0.1", 0))
        prefs = {
            **PREFS,
            "network.proxy.http": "127.0.0.1",
            "network.proxy.http_port": self.closed_port,
            "network.proxy.ssl": "127.0.0.1",
            "network.proxy.ssl_port": self.closed_port,
        }
        (self.profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
        )
        env = {
            **os.environ,
            "HOME": str(home),
            "MOZ_HEADLESS": "1",
            "MOZ_CRASHREPORTER_DISABLE": "1",
        }
        started = time.monotonic()
        with (self.directory / "thunderbird.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--headless",
                    "--marionette",
                    "-remote-allow-system-access",
                    "--no-remote",
                    "--profile",
                    str(self.profile),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            port = self._active_port(started + START_TIMEOUT_S)
            self.marionette = Marionette.connect(port, START_TIMEOUT_S)
            capabilities = self.marionette.new_session()
            self.marionette.chrome_context()
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"Thunderbird did not start: {exc}\n{self.log()[-3000:]}") from exc
        self.version = f"{capabilities['browserName']} {capabilities['browserVersion']}"
        self.startup_s = time.monotonic() - started

    def _active_port(self, deadline: float) -> int:
        path = self.profile / "MarionetteActivePort"
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(path.read_text())
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {path.name} after {START_TIMEOUT_S} s")
            time.sleep(0.05)

    def _run(
        self, script: str, address: str, password: str, http_proxy: int, https_proxy: int | None
    ) -> FoundConfig:
        assert self.marionette is not None
        ports = [http_proxy, https_proxy or self.closed_port, self.closed_port]
        found = self.marionette.execute_async(script, [address, password, *ports], LOOKUP_TIMEOUT_S)
        if "error" in found:
            raise LookupFailed(
                f"Thunderbird found no configuration for {address}: {found}\n{self.log()[-3000:]}"
            )
        return FoundConfig(
            source=found["source"],
            sub_source=found["subSource"],
            incoming=ServerSetting.from_js(found["incoming"]),
            outgoing=(
                ServerSetting.from_js(found["outgoing"])
                if found["outgoing"] and found["outgoing"]["hostname"]
                else None
            ),
            incoming_alternatives=tuple(
                ServerSetting.from_js(alt) for alt in found["incomingAlternatives"]
            ),
        )

    def account_setup(
        self,
        address: str,
        *,
        http_proxy: int,
        https_proxy: int | None = None,
        password: str = "",
    ) -> FoundConfig:
        """The account hub's lookup for ``address``.

        Its plain-HTTP requests go to the proxy at ``http_proxy``, its HTTPS
        CONNECTs to ``https_proxy`` (None: a closed port, so every HTTPS
        lookup fails at once).
        """
        return self._run(ACCOUNT_SETUP_JS, address, password, http_proxy, https_proxy)

    def exchange_autodiscover(
        self,
        address: str,
        *,
        http_proxy: int,
        https_proxy: int | None = None,
        password: str = "",
    ) -> FoundConfig:
        """Thunderbird's Microsoft Autodiscover (POX) lookup alone; proxies as above."""
        return self._run(EXCHANGE_JS, address, password, http_proxy, https_proxy)

    def trust_ca(self, ca_pem: bytes) -> None:
        """Add a CA certificate to the profile's NSS store, trusted for TLS servers."""
        assert self.marionette is not None
        der_b64 = "".join(
            line for line in ca_pem.decode("ascii").splitlines() if not line.startswith("-----")
        )
        self.marionette.execute_async(TRUST_CA_JS, [der_b64], LOOKUP_TIMEOUT_S)

    def stop(self) -> None:
        """End the session, then the process by PID, then its group. Idempotent."""
        if self.marionette is not None:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.marionette.delete_session()
            self.marionette.close()
            self.marionette = None
        if self.closed is not None:
            self.closed.close()
            self.closed = None
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        # Content and utility processes live in the group started for this instance.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def start_thunderbird(binary: str, directory: Path) -> ThunderbirdInstance:
    instance = ThunderbirdInstance(binary, directory)
    instance.start()
    return instance
