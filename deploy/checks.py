"""Checks of deploy/ that no off-the-shelf validator makes; run by deploy/validate.

    python deploy/checks.py kubernetes            cross-file consistency + PodMonitor shape
    python deploy/checks.py configmap DIR         write the ConfigMap's files (+ a test cert) to DIR
    python deploy/checks.py dashboard OUT.yml     dashboard shape; its PromQL as rules for promtool
    python deploy/checks.py metric-names          rules and dashboard use only refd's metrics
    python deploy/checks.py docker-context DIR    build the wheel from the Docker build context
    python deploy/checks.py smoke DIR             refd on DIR's config, haproxy.cfg in front

Each prints one line per thing checked and exits non-zero at the first failure.
Run from the repository root with the project's virtualenv Python.
"""

# Subprocesses here run fixed commands (pip, refd, haproxy) of the checks themselves,
# and "0.0.0.0" is compared, never bound.
# ruff: noqa: S603, S104

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"

# The metrics contract: name -> (type, label names). rules.yml, the dashboard
# and the smoke test hold the daemon to exactly this.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "refd_referrals_total": ("counter", frozenset({"kind", "command", "server"})),
    "refd_connections_total": ("counter", frozenset({"listener"})),
    "refd_connections_active": ("gauge", frozenset({"listener"})),
    "refd_commands_total": ("counter", frozenset({"command", "result"})),
    "refd_command_duration_seconds": ("histogram", frozenset({"command"})),
    "refd_auth_total": ("counter", frozenset({"source", "result"})),
    "refd_auth_duration_seconds": ("histogram", frozenset({"source"})),
    "refd_limit_hits_total": ("counter", frozenset({"limit"})),
    "refd_tls_handshake_failures_total": ("counter", frozenset({"listener"})),
    "refd_config_reloads_total": ("counter", frozenset({"result"})),
    "refd_config_last_reload_success_timestamp_seconds": ("gauge", frozenset()),
    "refd_config_last_reload_successful": ("gauge", frozenset()),
    "refd_config_info": ("gauge", frozenset({"sha256"})),
    "refd_build_info": ("gauge", frozenset({"version"})),
}

DASHBOARD_TITLES = (
    "Referrals by server and kind",
    "Authentication results",
    "Active connections",
    "Command latency p50 / p99",
    "Limit hits",
    "Config reloads",
)


class CheckFailed(Exception):
    pass


def check(ok: object, what: str) -> None:
    """One line per check: 'ok: ...', or stop with 'FAIL: ...'."""
    if not ok:
        raise CheckFailed(what)
    print(f"  ok: {what}")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- kubernetes ------------------------------------------------------------


def _subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def kubernetes() -> None:
    docs = {load_yaml(p)["kind"]: load_yaml(p) for p in sorted(K8S.glob("*.yaml"))}
    check(
        set(docs) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor"},
        f"one manifest per kind: {', '.join(sorted(docs))}",
    )
    cm, dep, svc, pdb, pm = (
        docs[k] for k in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor")
    )
    conf = yaml.safe_load(cm["data"]["refd.yaml"])
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (ctr,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}

    check(dep["spec"]["replicas"] >= 2, f"Deployment runs {dep['spec']['replicas']} replicas")
    check(
        _subset(dep["spec"]["selector"]["matchLabels"], labels),
        "Deployment selector matches its pod labels",
    )
    check(_subset(svc["spec"]["selector"], labels), "Service selects the refd pods")
    check(_subset(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects the refd pods")
    check(
        0 < pdb["spec"]["minAvailable"] < dep["spec"]["replicas"],
        "PDB minAvailable leaves room for one voluntary disruption",
    )

    # Ports: ConfigMap listeners <-> container ports <-> Service <-> probes.
    listeners = {lst["name"]: lst for lst in conf["listeners"]}
    for name, lst in listeners.items():
        check(
            ports.get(name) == lst["port"] and lst["address"] in ("0.0.0.0", "::"),
            f"listener {name} ({lst['address']}:{lst['port']}) is container port {name}",
        )
    check(
        ports.get("metrics") == conf["metrics"]["port"] and conf["metrics"]["address"] == "0.0.0.0",
        f"metrics endpoint 0.0.0.0:{conf['metrics']['port']} is container port metrics",
    )
    check(all(p >= 1024 for p in ports.values()), "container ports are unprivileged (>= 1024)")
    svc_ports = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
    check(svc_ports == {143: "imap", 993: "imaps"}, "Service maps 143 -> imap, 993 -> imaps")
    check(
        svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local",
        "Service is a LoadBalancer with externalTrafficPolicy: Local",
    )
    check(
        not any(lst.get("proxy_protocol") for lst in listeners.values()),
        "no PROXY protocol listener (client addresses come from externalTrafficPolicy: Local)",
    )
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = ctr[probe]["httpGet"]
        check(get["path"] == path and get["port"] == "metrics", f"{probe} GETs {path} on metrics")

    # Shutdown: preStop sleep, then refd's grace, inside the pod's grace.
    sleep_s = int(ctr["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace_s = float(conf.get("shutdown_grace_s", 10))
    check(
        spec["terminationGracePeriodSeconds"] > sleep_s + grace_s,
        f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} > "
        f"preStop {sleep_s} s + shutdown_grace_s {grace_s:g} s",
    )

    # Security.
    psc, csc = spec["securityContext"], ctr["securityContext"]
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    check(
        psc["runAsNonRoot"] and dockerfile_user and psc["runAsUser"] == int(dockerfile_user[1]),
        f"pods run as non-root uid {psc['runAsUser']}, the Dockerfile's USER",
    )
    check(
        csc["readOnlyRootFilesystem"]
        and csc["allowPrivilegeEscalation"] is False
        and csc["capabilities"] == {"drop": ["ALL"]},
        "container: read-only root, no privilege escalation, every capability dropped",
    )

    # The config directory: the whole ConfigMap (+ TLS Secret), no subPath.
    (mount,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/etc/refd"]
    check(
        "subPath" not in mount and mount.get("readOnly"), "/etc/refd is a read-only directory mount"
    )
    (vol,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    sources = vol["projected"]["sources"]
    files = set()
    for src in sources:
        if "configMap" in src:
            check(
                src["configMap"]["name"] == cm["metadata"]["name"],
                f"volume uses ConfigMap {cm['metadata']['name']}",
            )
            files |= set(cm["data"])
        else:
            files |= {item["path"] for item in src["secret"]["items"]}
    named = {conf["routing"], conf["auth"]["passwd_file"], conf["tls"]["cert"], conf["tls"]["key"]}
    check(
        named <= files, f"every file refd.yaml names is in the volume: {', '.join(sorted(named))}"
    )

    # PodMonitor: no schema ships for the CRD, so its required fields here.
    check(
        pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["metadata"].get("name"),
        "PodMonitor is monitoring.coreos.com/v1 with a name",
    )
    known = {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector", "podTargetLabels"}
    check(set(pm["spec"]) <= known, f"PodMonitor spec keys {sorted(pm['spec'])} are known ones")
    check(
        _subset(pm["spec"]["selector"]["matchLabels"], labels), "PodMonitor selects the refd pods"
    )
    check(
        labels.get(pm["spec"]["jobLabel"]) == "refd",
        f'PodMonitor jobLabel {pm["spec"]["jobLabel"]} gives job="refd" (rules.yml)',
    )
    endpoints = pm["spec"]["podMetricsEndpoints"]
    check(
        endpoints
        and all(e["port"] in ports and e.get("path", "/metrics") == "/metrics" for e in endpoints),
        "PodMonitor scrapes /metrics on a named container port",
    )


# --- configmap files -------------------------------------------------------


def configmap(out: Path) -> None:
    cm = load_yaml(K8S / "configmap.yaml")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in cm["data"].items():
        (out / name).write_text(text, encoding="utf-8")
    # The TLS Secret's files, as the projected volume would add them.
    ca = trustme.CA()
    cert = ca.issue_cert("imap.example.org", "127.0.0.1")
    (out / "tls.crt").write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    (out / "tls.key").write_bytes(cert.private_key_pem.bytes())
    check(True, f"ConfigMap files {', '.join(cm['data'])} + test tls.crt/tls.key in {out}")


# --- dashboard --------------------------------------------------------------


def dashboard(rules_out: Path) -> None:
    path = DEPLOY / "prometheus" / "grafana-dashboard.json"
    dash = json.loads(path.read_text(encoding="utf-8"))
    check(37 <= dash["schemaVersion"] <= 41, f"schemaVersion {dash['schemaVersion']}")
    check(dash.get("uid") and dash.get("title"), f"uid {dash['uid']!r}, title {dash['title']!r}")
    panels = dash["panels"]
    titles = [p["title"] for p in panels]
    missing = [t for t in DASHBOARD_TITLES if t not in titles]
    check(not missing, f"{len(panels)} panels, including {', '.join(DASHBOARD_TITLES)}")
    check(len({p["id"] for p in panels}) == len(panels), "panel ids are unique")
    variables = {v["name"] for v in dash["templating"]["list"]}
    exprs = []
    for p in panels:
        g = p["gridPos"]
        used = {v for t in p["targets"] for v in re.findall(r"\$\{?(\w+)", t["expr"])}
        undefined = used - variables - {"__rate_interval"}
        check(
            g["x"] + g["w"] <= 24 and p["targets"] and not undefined,
            f"panel {p['title']!r}: on the grid, {len(p['targets'])} queries, "
            + (f"undefined variables {sorted(undefined)}" if undefined else "variables defined"),
        )
        exprs += [t["expr"] for t in p["targets"]]
    latency = next(p for p in panels if p["title"] == "Command latency p50 / p99")
    check(
        all(
            "histogram_quantile" in t["expr"]
            and "refd_command_duration_seconds_bucket" in t["expr"]
            for t in latency["targets"]
        ),
        "latency panel: histogram_quantile over refd_command_duration_seconds_bucket",
    )
    # promtool has no expression checker, but it parses recording rules: one
    # rule per query, with Grafana's variables replaced by concrete values.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": e.replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    rules_out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check(True, f"{len(rules)} dashboard queries written to {rules_out} for promtool")


# --- metric names -----------------------------------------------------------


def _names_in(text: str) -> set[str]:
    names = set()
    for name in re.findall(r"\brefd_[a-z0-9_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in METRICS and METRICS[base][0] == "histogram" else name)
    return names


def metric_names() -> None:
    rules = DEPLOY / "prometheus" / "rules.yml"
    exprs = [r["expr"] for g in load_yaml(rules)["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "prometheus" / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    results = {"ok", "no", "bad", "success", "failure", "unavailable"}
    for what, texts in (("rules.yml", exprs), ("grafana-dashboard.json", queries)):
        used = set().union(*(_names_in(t) for t in texts))
        unknown = sorted(used - set(METRICS))
        check(
            not unknown,
            f"{what} uses {len(used)} refd metrics, all in the contract {unknown or ''}",
        )
        values = {
            v for t in texts for m in re.findall(r'result=~?"([^"]+)"', t) for v in m.split("|")
        }
        check(values <= results, f"{what}: result label values {sorted(values)} are refd's")
    check(
        all('job="refd"' in e for e in exprs),
        'every alert selects job="refd" (scrape.yml job_name, PodMonitor jobLabel)',
    )
    scrape = load_yaml(DEPLOY / "prometheus" / "scrape.yml")
    check(
        [c["job_name"] for c in scrape["scrape_configs"]] == ["refd"],
        "scrape.yml's job_name is refd",
    )


# --- docker build context ---------------------------------------------------


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore lines as (exclude?, regex), Docker's matching rules in short."""
    out = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i : j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        out.append((not negate, re.compile(rx + "$")))
    return out


def docker_context(out: Path) -> None:
    """Build the wheel from exactly what the Docker build context would hold.

    No Docker daemon is needed: the context is the repository minus what
    .dockerignore excludes, and the image's build stage runs `pip install .`
    on it. A file the build needs but .dockerignore leaves out fails here.
    """
    patterns = _dockerignore_patterns()

    def excluded(rel: str) -> bool:
        # The last matching line wins; a line matching a parent directory
        # applies to everything below it.
        parts = rel.split("/")
        paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for exclude, rx in patterns:
            if any(rx.match(p) for p in paths):
                verdict = exclude
        return verdict

    context = out / "context"
    kept = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != ".git"]  # Docker walks it too; it is ignored
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(ROOT).as_posix()
            if not excluded(rel):
                kept.append(rel)
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, context / rel)
    tops = sorted({f.split("/")[0] for f in kept})
    check(
        {"pyproject.toml", "README.md", "refd"} <= set(tops) and "tests" not in tops,
        f"build context: {len(kept)} files under {', '.join(tops)}",
    )
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(context)]
    build = subprocess.run(pip, check=False, capture_output=True, text=True)
    check(build.returncode == 0, f"pip builds the package from that context{build.stderr[-2000:]}")
    (wheel,) = out.glob("refd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = z.read(entry).decode()
    check(
        {"refd/cli.py", "refd/demo/refd.yaml"} <= names and "refd = refd.cli:main" in scripts,
        f"{wheel.name}: the package, its demo config and the refd entry point",
    )


# --- smoke: refd on the ConfigMap's config, haproxy.cfg in front ------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def _wait(
    what: str, cond: Any, timeout_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise CheckFailed(f"{proc.args!r} exited ({proc.returncode}) while waiting for {what}")
        with contextlib.suppress(OSError):
            if value := cond():
                return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for {what}")
        time.sleep(0.1)


def _metrics(port: int) -> dict[str, Any]:
    status, text = _http(port, "/metrics")
    if status != 200:
        raise CheckFailed(f"/metrics answered {status}")
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], name: str, **labels: str) -> float:
    fam = fams.get(name.removesuffix("_total"))
    if fam is None:
        return 0.0
    return sum(
        float(s.value)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


class _Imap:
    def __init__(self, port: int, *, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")

    def line(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def command(self, tag: str, text: str) -> str:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        while not (line := self.line()).startswith(f"{tag} "):
            if not line:
                raise CheckFailed(f"connection closed before the answer to {text!r}")
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _haproxy_config(hp_imap: int, hp_imaps: int, imap: int, imaps: int, sock: Path) -> str:
    """deploy/haproxy/haproxy.cfg, pointed at this machine; each edit must apply."""
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    edits = [  # (regex, replacement): each must match
        (r"^global$", f"global\n    stats socket {sock} level user"),
        (r"\bmaxconn 20000$", "maxconn 1000"),  # fits any descriptor limit
        (r"\bbind :143$", f"bind 127.0.0.1:{hp_imap}"),
        (r"\bbind :993$", f"bind 127.0.0.1:{hp_imaps}"),
        (r"\binter 5s\b", "inter 300ms"),
    ]
    for rx, new in edits:
        text, n = re.subn(rx, new, text, flags=re.M)
        if n == 0:
            raise CheckFailed(f"haproxy.cfg no longer matches {rx!r}")
    text, n143 = re.subn(r"10\.0\.0\.1\d:143\b", f"127.0.0.1:{imap}", text)
    text, n993 = re.subn(r"10\.0\.0\.1\d:993\b", f"127.0.0.1:{imaps}", text)
    if n143 < 2 or n993 < 2:
        raise CheckFailed("haproxy.cfg: expected two refd servers per backend")
    return text


def _server_states(sock: Path) -> dict[str, tuple[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = data.decode().lstrip("# ").splitlines()
    head = rows[0].split(",")
    out = {}
    for row in rows[1:]:
        f = dict(zip(head, row.split(","), strict=False))
        if f.get("svname", "").startswith("refd"):
            out[f"{f['pxname']}/{f['svname']}"] = (f["status"], f["check_status"])
    return out


@contextlib.contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Smoke:
    """refd on a loopback copy of the ConfigMap's config, haproxy.cfg in front.

    The copy differs only where it must: loopback addresses on free ports,
    and PROXY protocol from 127.0.0.0/8 on both listeners, as a door behind
    haproxy.cfg is configured. haproxy.cfg is used as written, but for its
    bind addresses, server addresses, check interval and maxconn.
    """

    def __init__(self, src: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.work = tmp / "etc-refd"
        shutil.copytree(src, self.work)
        self.conf = yaml.safe_load((self.work / "refd.yaml").read_text())
        imap, imaps, self.metrics = _free_port(), _free_port(), _free_port()
        ports = {"imap": imap, "imaps": imaps}
        for lst in self.conf["listeners"]:
            lst.update(address="127.0.0.1", port=ports[lst["name"]], proxy_protocol=True)
        self.conf["metrics"] = {"address": "127.0.0.1", "port": self.metrics}
        self.conf["proxy_networks"] = ["127.0.0.0/8"]
        self.write_conf()
        self.hp_imap, self.hp_imaps, self.hp_sock = _free_port(), _free_port(), tmp / "hp.sock"
        hp_conf = _haproxy_config(self.hp_imap, self.hp_imaps, imap, imaps, self.hp_sock)
        (tmp / "haproxy.cfg").write_text(hp_conf)
        self.refd_log, self.hp_log = tmp / "refd.log", tmp / "haproxy.log"

    def write_conf(self) -> None:
        (self.work / "refd.yaml").write_text(yaml.safe_dump(self.conf, sort_keys=False))

    def servers(self) -> dict[str, tuple[str, str]]:
        return _server_states(self.hp_sock)

    def run(self) -> None:
        refd = str(Path(sys.executable).parent / "refd")
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        conf_file = str(self.work / "refd.yaml")
        out = subprocess.run(
            [refd, "check", conf_file], check=False, capture_output=True, text=True
        )
        check(
            out.returncode == 0, f"refd check on the smoke copy: {out.stdout}{out.stderr}".strip()
        )
        try:
            with _process([refd, "serve", "-c", conf_file], self.refd_log) as door:
                self.endpoints(door)
                with _process(
                    [haproxy, "-db", "-f", str(self.tmp / "haproxy.cfg")], self.hp_log
                ) as hp:
                    self.through_haproxy(door, hp)
                    self.reload_and_drain(door, hp)
                    self.stop(door)
            check(_run(self.healthcheck) != 0, "HEALTHCHECK fails once refd is gone")
        except CheckFailed:
            for log in (self.refd_log, self.hp_log):
                if log.exists():
                    print(f"--- {log.name} ---\n{log.read_text()[-4000:]}")
            raise

    def endpoints(self, door: subprocess.Popen[bytes]) -> None:
        m = self.metrics
        _wait("/healthz", lambda: _http(m, "/healthz")[0] == 200, proc=door)
        check(True, "refd serve on the ConfigMap's config: /healthz 200")
        check(_http(m, "/readyz")[0] == 200, "/readyz 200 (listeners bound, table loaded)")
        check(_http(m, "/nonexistent")[0] == 404, "other paths 404")
        # The Dockerfile's HEALTHCHECK command, verbatim but for the port.
        hc = re.search(r"^\s*CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
        check(hc, "Dockerfile has a HEALTHCHECK CMD in exec form")
        assert hc is not None
        self.healthcheck = [a.replace(":9143/", f":{m}/") for a in json.loads(hc[1])]
        self.healthcheck[0] = sys.executable
        check(_run(self.healthcheck) == 0, "HEALTHCHECK passes")

    def through_haproxy(self, door: subprocess.Popen[bytes], hp: subprocess.Popen[bytes]) -> None:
        def all_up() -> dict[str, tuple[str, str]] | None:
            states = self.servers()
            return states if all(st == ("UP", "L7OK") for st in states.values()) else None

        states = _wait("haproxy's checks (tcp-check, PROXY v2, check-ssl)", all_up, proc=hp)
        check(len(states) == 4, f"haproxy.cfg checks pass: {', '.join(sorted(states))} UP, L7OK")

        c = _Imap(self.hp_imap)
        check(c.line().startswith("* OK"), "IMAP through haproxy (PROXY v2): greeting * OK")
        answer = c.command("a1", "LOGIN alice@example.org secret")
        referral = "a1 NO [REFERRAL imap://alice%40example.org;AUTH=*@mail1.example.org/]"
        check(answer.startswith(referral), f"LOGIN gets the ConfigMap's referral: {answer}")
        check(c.command("a2", "LOGOUT").startswith("a2 OK"), "LOGOUT")
        c.close()
        t = _Imap(self.hp_imaps, tls=True)
        check(t.line().startswith("* OK"), "implicit TLS through haproxy: greeting * OK")
        t.close()

        fams = _metrics(self.metrics)
        for name, (kind, labels) in METRICS.items():
            fam = fams.get(name.removesuffix("_total") if kind == "counter" else name)
            check(fam is not None and fam.type == kind, f"/metrics has {name} ({kind})")
            assert fam is not None
            for s in fam.samples:
                got = set(s.labels) - {"le"}
                if got != labels:
                    raise CheckFailed(f"{s.name} has labels {sorted(got)}, not {sorted(labels)}")
        check(True, "every sample carries exactly the contract's label names")
        login = {"kind": "login", "command": "LOGIN", "server": "mail1"}
        check(
            _value(fams, "refd_referrals_total", **login) >= 1,
            'refd_referrals_total{kind="login",command="LOGIN",server="mail1"} counted',
        )
        src = self.conf["auth"]["source"]
        check(
            _value(fams, "refd_auth_total", source=src, result="success") >= 1,
            f'refd_auth_total{{source="{src}",result="success"}} counted',
        )
        check(
            _value(fams, "refd_commands_total", command="LOGOUT", result="ok") >= 2,
            "haproxy's health checks log out cleanly (refd_commands_total LOGOUT ok)",
        )
        check(
            _value(fams, "refd_limit_hits_total", limit="proxy_header") == 0,
            'no PROXY header problems (refd_limit_hits_total{limit="proxy_header"} is 0)',
        )

    def reload_and_drain(self, door: subprocess.Popen[bytes], hp: subprocess.Popen[bytes]) -> None:
        # SIGHUP: what `systemctl reload` and a changed ConfigMap end in.
        m = self.metrics
        door.send_signal(signal.SIGHUP)
        _wait(
            "a successful reload",
            lambda: _value(_metrics(m), "refd_config_reloads_total", result="success") >= 1,
            proc=door,
        )
        check(True, 'SIGHUP reloads: refd_config_reloads_total{result="success"} 1')
        # drain: true, reloaded: /readyz turns 503, so Kubernetes stops routing
        # here, and haproxy's check (greeting "* OK") fails, so haproxy does too.
        for drain, ready, status in ((True, 503, "DOWN"), (False, 200, "UP")):
            self.conf["drain"] = drain
            self.write_conf()
            door.send_signal(signal.SIGHUP)
            _wait(f"/readyz {ready}", lambda r=ready: _http(m, "/readyz")[0] == r, proc=door)
            _wait(
                f"haproxy to mark every door {status}",
                lambda st=status: all(v[0] == st for v in self.servers().values()),
                proc=hp,
            )
            check(True, f"drain: {str(drain).lower()}, SIGHUP: /readyz {ready}, doors {status}")

    def stop(self, door: subprocess.Popen[bytes]) -> None:
        # SIGTERM with a session open: BYE, then exit within shutdown_grace_s.
        s = _Imap(self.hp_imap)
        s.line()
        start = time.monotonic()
        door.send_signal(signal.SIGTERM)
        bye = s.line()
        check(bye.startswith("* BYE"), f"SIGTERM: the open session gets {bye!r}")
        s.close()
        grace = float(self.conf.get("shutdown_grace_s", 10))
        try:
            rc = door.wait(timeout=grace + 2)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"refd still runs {grace + 2:g} s after SIGTERM") from None
        took = time.monotonic() - start
        check(rc == 0, f"refd exited 0 after {took:.1f} s (shutdown_grace_s {grace:g})")


def _run(args: list[str]) -> int:
    return subprocess.run(args, check=False, capture_output=True).returncode


def smoke(src: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="refd-smoke-") as tmp:
        Smoke(src, Path(tmp)).run()


def main(argv: list[str]) -> int:
    with_dir = {"configmap": configmap, "dashboard": dashboard, "docker-context": docker_context}
    with_dir |= {"smoke": smoke}
    plain = {"kubernetes": kubernetes, "metric-names": metric_names}
    name = argv[1] if len(argv) > 1 else ""
    if not ((name in plain and len(argv) == 2) or (name in with_dir and len(argv) == 3)):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if name in plain:
            plain[name]()
        else:
            with_dir[name](Path(argv[2]))
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError, IndexError) as e:
        print(f"FAIL: {argv[1]}: unexpected shape: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv))
