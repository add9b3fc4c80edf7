"""``refd config -c FILE``: the configuration in force, defaults filled in.

The output is itself a config: loading it back gives the same configuration
(a fixed point), and it names every key the loader knows at the levels it
prints, so a new key cannot be missing from it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from refd.config.loader import DaemonConfig, load_config
from refd.effective import REDACTED, redact
from tests.test_schema import CONFIG, ROUTING, loader_keys

ROOT = Path(__file__).resolve().parents[1]


def refd_config(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "refd", "config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def without_lines(config: DaemonConfig) -> DaemonConfig:
    auth = config.auth
    if dataclasses.is_dataclass(auth) and any(f.name == "line" for f in dataclasses.fields(auth)):
        auth = dataclasses.replace(auth, line=0)
    ad = config.autodiscovery
    if ad is not None:
        ad = dataclasses.replace(ad, line=0)
    return dataclasses.replace(config, file=Path(), tls_line=0, auth=auth, autodiscovery=ad)


def test_a_small_config_with_every_default(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    (tmp_path / "users.passwd").write_text("alice:{PLAIN}secret\n")
    cfg = tmp_path / "refd.yaml"
    cfg.write_text(CONFIG)
    out = refd_config(cfg).splitlines()
    assert out[:6] == [
        f"# refd effective configuration of {cfg}",
        "# (every default filled in, paths absolute, secrets redacted)",
        "hostname: localhost",
        f"routing: {tmp_path / 'routing.yaml'}",
        "auth:",
        "  source: passwd-file",
    ]
    for line in (
        "  failure_delay_s: 2.0",
        "  max_line_bytes: 8192",
        "  idle_timeout_s: 1800.0",
        "- 127.0.0.0/8",
        "workers: 1",
        "  level: info",
    ):
        assert line in out
    assert "{PLAIN}" not in "\n".join(out)


def test_the_output_loads_back_to_the_same_config(tmp_path: Path) -> None:
    for source in (ROOT / "config" / "refd.yaml", ROOT / "refd" / "demo" / "refd.yaml"):
        first = refd_config(source)
        copy = tmp_path / "effective.yaml"
        copy.write_text(first)
        assert without_lines(load_config(copy)) == without_lines(load_config(source))
        # A fixed point: printing the printed config changes nothing but its name.
        assert refd_config(copy).splitlines()[1:] == first.splitlines()[1:]


def test_every_key_the_loader_knows_is_printed(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    cfg = tmp_path / "refd.yaml"
    cfg.write_text(CONFIG)
    printed = refd_config(cfg)
    top = {line.split(":")[0] for line in printed.splitlines() if line[:1].isalpha()}
    # tls, metrics, sibling and autodiscovery are printed when configured; the rest always.
    assert top | {"tls", "metrics", "sibling", "autodiscovery"} == loader_keys(
        tmp_path, "config", CONFIG + "zzz_unknown: 1\n"
    )
    after = printed.split("limits:\n")[1].split("\n")
    limits = after[: next(i for i, ln in enumerate(after) if not ln.startswith("  "))]
    limit_keys = {ln.split(":")[0].strip() for ln in limits}
    assert limit_keys == loader_keys(tmp_path, "config", CONFIG + "limits: {zzz_unknown: 1}\n")


AUTODISCOVERY = CONFIG + (
    "autodiscovery:\n"
    "  listeners: [{address: 127.0.0.1, port: 1180}]\n"
    "  hosts: [Autoconfig.Example.NET, '[::1]']\n"
    "  require_auth: autodiscover\n"
)


def test_the_autodiscovery_section_is_printed_whole(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(ROUTING)
    cfg = tmp_path / "ad.yaml"  # loader_keys writes refd.yaml
    cfg.write_text(AUTODISCOVERY)
    printed = refd_config(cfg)
    section = printed.split("autodiscovery:\n")[1].splitlines()
    assert section[:8] == [
        "  listeners:",
        "  - name: http0",
        "    address: 127.0.0.1",
        "    port: 1180",
        "    tls: none",
        "    proxy_protocol: false",
        "  per_user: true",
        "  require_auth:",
    ]
    keys = {ln.split(":")[0].strip() for ln in section if ln.startswith("  ") and ln[2] not in " -"}
    assert keys == loader_keys(
        tmp_path, "config", AUTODISCOVERY.replace("  listeners:", "  zzz_unknown: 1\n  listeners:")
    )
    limits = {ln.split(":")[0].strip() for ln in section if ln.startswith("    ") and "_" in ln}
    assert limits >= loader_keys(tmp_path, "config", AUTODISCOVERY + "  limits: {zzz_unknown: 1}\n")
    copy = tmp_path / "effective.yaml"
    copy.write_text(printed)
    assert without_lines(load_config(copy)) == without_lines(load_config(cfg))
    assert load_config(cfg).autodiscovery.policy.hosts == ("autoconfig.example.net", "::1")  # type: ignore[union-attr]


def test_secrets_are_redacted() -> None:
    assert redact(
        {
            "store": {"url": "redis://refd:s3cret@127.0.0.1:6379/0", "password": "s3cret"},
            "ldap": [{"bind_password": "x", "api_key": "y", "token": "z"}],
            "limits": {"max_password_bytes": 511},
            "auth": {"passwd_file": "/etc/refd/users.passwd"},
        }
    ) == {
        "store": {"url": f"redis://refd:{REDACTED}@127.0.0.1:6379/0", "password": REDACTED},
        "ldap": [{"bind_password": REDACTED, "api_key": REDACTED, "token": REDACTED}],
        "limits": {"max_password_bytes": 511},
        "auth": {"passwd_file": "/etc/refd/users.passwd"},
    }
