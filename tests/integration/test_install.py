"""scripts/install.sh and scripts/uninstall.sh, run for real into a scratch root (`--root`).

An integration test of the appliance install: every path install.sh lays down, with its owner and
mode; a venv whose launcher runs; the config made from config.example.toml; a re-install that keeps
what a user changed; `systemd-analyze verify` on the unit, as installed and as it is in the repo;
and what uninstall.sh removes and keeps, with and without --purge.

It needs root (the files belong to root and to the service's user; CI runs as root) and python3
with venv; pip installs the package's dependencies into the new venv (from the pip cache or the
registry), so the module takes some 30 s. What needs systemd as PID 1 (start, READY, the watchdog,
reboots, port 80 through the capability) is tests/e2e/test_systemd_service.py's.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import load

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
UNINSTALL = REPO / "scripts" / "uninstall.sh"
REPO_UNIT = REPO / "systemd" / "enapter-gateway.service"
USER = "enapter-gateway"
UNIT = Path("etc/systemd/system/enapter-gateway.service")
CONFIG = Path("etc/enapter-gateway/config.toml")
STATE = Path("var/lib/enapter-gateway")
OPT = Path("opt/enapter-gateway")
VENV = OPT / "venv"
LAUNCHER = VENV / "bin/enapter-gateway"
# What a Debian root holds before the install: systemd's own units, which `systemd-analyze verify
# --root` needs to resolve the unit's dependencies (multi-user.target, network-online.target...).
OS_UNITS = Path("usr/lib/systemd/system")
SCRIPT_TIMEOUT = 600.0  # pip may have to download the dependencies

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="install.sh makes files owned by root and by a system user: needs root"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One path as install.sh left it."""

    kind: str  # "dir", "file" or "link"
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Installed:
    """A scratch root that install.sh was run into, and what it looked like right afterwards."""

    root: Path
    output: str
    added: Mapping[str, Entry]  # every path it added, relative to root; the venv's insides left out
    config: bytes  # config.toml as first written


def run(*command: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured (stdout and stderr together), without raising on failure."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )


def clean_environment() -> dict[str, str]:
    """This process's environment without what would make a venv import from elsewhere."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }


def entries(root: Path) -> dict[str, Entry]:
    """Every path under `root` (relative), not descending into a venv."""
    found: dict[str, Entry] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory, name)
            info = path.lstat()
            kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode) else "file"
            found[str(path.relative_to(root))] = Entry(
                kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
            )
        if Path(directory) == root / OPT and "venv" in dirs:
            dirs.remove("venv")
    return found


def account(root: Path, database: str, name: str = USER) -> list[str] | None:
    """The fields of `name`'s line in root/etc/<database> (passwd, group, shadow, gshadow)."""
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def ids(root: Path) -> tuple[int, int]:
    """The service user's uid and gid in root/etc/passwd."""
    fields = account(root, "passwd")
    assert fields is not None
    return int(fields[2]), int(fields[3])


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given (systemd allows repeats), comments skipped."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def seed_os_units(root: Path) -> None:
    """Give `root` the systemd units the OS ships, as on the Raspberry Pi."""
    host_units = Path("/") / OS_UNITS
    if host_units.is_dir():
        shutil.copytree(host_units, root / OS_UNITS, symlinks=True)


def package_version() -> str:
    """The version pyproject.toml gives the package."""
    with (REPO / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    assert isinstance(version, str)
    return version


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """install.sh run once, into a scratch root holding what the OS would."""
    root = tmp_path_factory.mktemp("root")
    seed_os_units(root)
    before = entries(root)
    result = run(INSTALL, "--root", root)
    assert result.returncode == 0, result.stdout
    after = entries(root)
    added = {path: entry for path, entry in after.items() if path not in before}
    return Installed(root=root, output=result.stdout, added=added, config=(root / CONFIG).read_bytes())


def test_install_lays_down_these_paths_with_these_owners_and_modes(installed: Installed) -> None:
    uid, gid = ids(installed.root)
    root_owned = {
        "etc": Entry("dir", 0o755, 0, 0),
        "etc/passwd": Entry("file", 0o644, 0, 0),
        "etc/group": Entry("file", 0o644, 0, 0),
        "etc/shadow": Entry("file", 0o640, 0, 0),
        "etc/gshadow": Entry("file", 0o640, 0, 0),
        "etc/systemd": Entry("dir", 0o755, 0, 0),
        "etc/systemd/system": Entry("dir", 0o755, 0, 0),
        str(UNIT): Entry("file", 0o644, 0, 0),
        "opt": Entry("dir", 0o755, 0, 0),
        str(OPT): Entry("dir", 0o755, 0, 0),
        str(OPT / "README.md"): Entry("file", 0o644, 0, 0),
        str(OPT / "config.example.toml"): Entry("file", 0o644, 0, 0),
        str(VENV): Entry("dir", 0o755, 0, 0),
        "var": Entry("dir", 0o755, 0, 0),
        "var/lib": Entry("dir", 0o755, 0, 0),
    }
    # The config is the gateway's to read and root's to change; the state is the gateway's alone.
    service_owned = {
        "etc/enapter-gateway": Entry("dir", 0o750, 0, gid),
        str(CONFIG): Entry("file", 0o640, 0, gid),
        str(STATE): Entry("dir", 0o700, uid, gid),
    }
    # useradd's backups of the account files (passwd-, group-...) are its business.
    added = {path: entry for path, entry in installed.added.items() if not path.endswith("-")}
    assert added == root_owned | service_owned
    assert (installed.root / UNIT).read_bytes() == REPO_UNIT.read_bytes()
    assert (installed.root / OPT / "README.md").read_bytes() == (REPO / "README.md").read_bytes()
    example = (REPO / "config.example.toml").read_bytes()
    assert (installed.root / OPT / "config.example.toml").read_bytes() == example


def test_the_service_user_is_a_system_account_without_login_or_home(installed: Installed) -> None:
    passwd = account(installed.root, "passwd")
    group = account(installed.root, "group")
    shadow = account(installed.root, "shadow")
    assert passwd is not None
    assert group is not None
    assert shadow is not None
    uid, gid = ids(installed.root)
    assert uid < 1000  # a system uid (Debian's SYS_UID_MAX is 999)
    assert int(group[2]) == gid
    assert passwd[5:] == ["/nonexistent", "/usr/sbin/nologin"]
    assert shadow[1].startswith(("!", "*"))  # no password: locked


def test_the_venv_belongs_to_root_and_the_service_can_read_it(installed: Installed) -> None:
    venv = installed.root / VENV
    checked = 0
    for directory, dirs, files in os.walk(venv):
        for name in [*dirs, *files]:
            info = (Path(directory) / name).lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            checked += 1
            # Readable (and, for directories and programs, usable) by others, writable by root only:
            # the service cannot change its own code.
            wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(info.st_mode) else 0)
            assert info.st_mode & wanted == wanted, Path(directory) / name
            assert info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) == 0, Path(directory) / name
            assert info.st_uid == 0, Path(directory) / name
    assert checked > 100


def test_the_venv_runs_the_installed_package(installed: Installed) -> None:
    environment = clean_environment()
    launcher = installed.root / LAUNCHER
    version = subprocess.run(
        [launcher, "--version"], capture_output=True, text=True, env=environment, cwd="/", check=True
    )
    assert version.stdout == f"enapter-gateway {package_version()}\n"
    # From the venv's own site-packages, not from the checkout.
    where = subprocess.run(
        [installed.root / VENV / "bin/python", "-c", "import gateway, aiohttp; print(gateway.__file__)"],
        capture_output=True,
        text=True,
        env=environment,
        cwd="/",
        check=True,
    )
    assert where.stdout.startswith(str(installed.root / VENV / "lib")), where.stdout
    check = subprocess.run(
        [launcher, "check-config", installed.root / CONFIG],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert f"{installed.root / CONFIG}: ok" in installed.output  # install.sh checked it too


def test_the_config_is_the_example_with_port_80_and_the_state_under_var_lib(installed: Installed) -> None:
    config = load(installed.root / CONFIG)
    assert config.api.port == 80
    assert config.gateway.state_dir == Path("/var/lib/enapter-gateway")
    # Nothing else changed: not [mqtt]'s port = 1883, nor [mqtt.external]'s.
    example = tomllib.loads((REPO / "config.example.toml").read_text())
    written = tomllib.loads(installed.config.decode())
    example["api"]["port"] = 80
    example["gateway"]["state_dir"] = "/var/lib/enapter-gateway"
    assert written == example
    assert config.mqtt.port == 1883
    # The example's note about running from a checkout would be wrong here.
    assert ".state/" not in installed.config.decode()


def test_the_unit_runs_what_install_sh_laid_down(installed: Installed) -> None:
    settings = unit_settings((installed.root / UNIT).read_text())
    program, *arguments = settings["Service.ExecStart"][0].split()
    assert (installed.root / program.lstrip("/")) == installed.root / LAUNCHER
    assert os.access(installed.root / LAUNCHER, os.X_OK)
    assert arguments[:1] == ["run"]
    config = Path(arguments[arguments.index("--config") + 1])
    assert installed.root / config.relative_to("/") == installed.root / CONFIG
    assert settings["Service.User"] == [USER]
    assert settings["Service.Group"] == [USER]
    assert Path("var/lib", *settings["Service.StateDirectory"]) == STATE
    assert Path("etc", *settings["Service.ConfigurationDirectory"]) == CONFIG.parent
    assert settings["Service.StateDirectoryMode"] == ["0700"]
    assert settings["Service.ConfigurationDirectoryMode"] == ["0750"]  # what install.sh makes


def test_the_unit_has_what_the_appliance_needs() -> None:
    settings = unit_settings(REPO_UNIT.read_text())
    assert settings["Service.Type"] == ["notify"]
    assert settings["Service.NotifyAccess"] == ["main"]
    assert settings["Service.WatchdogSec"] == ["30"]
    assert settings["Service.Restart"] == ["on-failure"]
    assert settings["Service.RestartPreventExitStatus"] == ["78"]  # gateway.cli.EX_CONFIG
    assert settings["Service.AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["Service.CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["Service.ProtectSystem"] == ["strict"]
    assert settings["Install.WantedBy"] == ["multi-user.target"]
    # The managed Mosquitto, devices on the LAN and mDNS multicast need these; logs go to journald.
    families = " ".join(settings["Service.RestrictAddressFamilies"]).split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families)
    for absent in ("PrivateNetwork", "IPAddressDeny", "StandardOutput", "StandardError", "DynamicUser"):
        assert f"Service.{absent}" not in settings


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt: systemd)"
)


@needs_analyze
def test_systemd_analyze_verifies_the_unit_as_installed(installed: Installed, tmp_path: Path) -> None:
    # --root: the unit, its ExecStart program and the units it names are all looked up in the root.
    verified = run("systemd-analyze", "verify", f"--root={installed.root}", f"/{UNIT}")
    assert (verified.returncode, verified.stdout) == (0, "")  # warnings would show in the output
    # The same check in a root without the venv fails: it is not just parsing the file.
    bare = tmp_path / "bare"
    seed_os_units(bare)
    (bare / UNIT).parent.mkdir(parents=True)
    shutil.copy(REPO_UNIT, bare / UNIT)
    failed = run("systemd-analyze", "verify", f"--root={bare}", f"/{UNIT}")
    assert failed.returncode != 0
    assert f"/{LAUNCHER} is not executable" in failed.stdout


def mount_namespaces() -> bool:
    """Whether this process may make a private mount namespace."""
    if shutil.which("unshare") is None:
        return False
    return run("unshare", "--mount", "true").returncode == 0


@needs_analyze
def test_systemd_analyze_verifies_the_repos_unit_file(installed: Installed) -> None:
    """Literally `systemd-analyze verify systemd/enapter-gateway.service`, in the checkout.

    verify checks that ExecStart's program exists, at /opt/enapter-gateway/...: in a private mount
    namespace the scratch root's /opt is bound there, so the host's /opt stays as it is.
    """
    if not mount_namespaces():
        pytest.skip("no private mount namespace here (unshare --mount needs CAP_SYS_ADMIN)")
    script = 'mount --bind "$0" /opt && exec systemd-analyze verify systemd/enapter-gateway.service'
    verified = run(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, installed.root / "opt"
    )
    assert (verified.returncode, verified.stdout) == (0, "")


@pytest.fixture
def restore_config(installed: Installed) -> Iterator[None]:
    """Put the config back as install.sh wrote it, whatever a test did to it."""
    yield
    config = installed.root / CONFIG
    config.write_bytes(installed.config)
    os.chown(config, 0, ids(installed.root)[1])
    config.chmod(0o640)


@pytest.mark.usefixtures("restore_config")
def test_a_reinstall_keeps_the_users_config_and_data_and_mends_owners(installed: Installed) -> None:
    root = installed.root
    uid, gid = ids(root)
    config = root / CONFIG
    edited = installed.config.replace(b'site_name = "Gateway Site"', b'site_name = "The shed"')
    assert edited != installed.config
    config.write_bytes(edited)
    os.chown(config, 0, 0)
    config.chmod(0o600)  # the service could no longer read it
    database = root / STATE / "gateway.db"
    database.write_bytes(b"the history")
    # As after uninstall.sh (the user removed, the data kept) and a user made again with a new uid.
    for path in (root / STATE, database):
        os.chown(path, 4242, 4242)

    result = run(INSTALL, "--root", root)

    assert result.returncode == 0, result.stdout
    assert f"keeping the existing {config}" in result.stdout
    assert config.read_bytes() == edited
    assert load(config).gateway.site_name == "The shed"
    assert database.read_bytes() == b"the history"
    after = entries(root)
    for path in (CONFIG, CONFIG.parent, STATE, UNIT, OPT, VENV):
        assert after[str(path)] == installed.added[str(path)], path
    assert (database.stat().st_uid, database.stat().st_gid) == (uid, gid)
    for accounts in ("passwd", "group"):
        lines = (root / "etc" / accounts).read_text().splitlines()
        assert sum(line.startswith(f"{USER}:") for line in lines) == 1, accounts
    assert ids(root) == (uid, gid)
    assert (root / UNIT).read_bytes() == REPO_UNIT.read_bytes()
    assert subprocess.run([root / LAUNCHER, "--version"], capture_output=True, check=False).returncode == 0


@pytest.mark.usefixtures("restore_config")
def test_a_reinstall_stops_at_a_config_with_problems(installed: Installed) -> None:
    config = installed.root / CONFIG
    broken = installed.config.replace(b'hostname = "enapter-gateway"', b'hostname = "-bad-"')
    assert broken != installed.config
    config.write_bytes(broken)
    result = run(INSTALL, "--root", installed.root)
    assert result.returncode != 0
    assert "config error: mdns.hostname" in result.stdout
    assert f"{config} has problems" in result.stdout
    assert "skipping systemctl" not in result.stdout  # it stopped before the systemd step


def copy_without_venv(installed: Installed, destination: Path) -> Path:
    """A copy of the installed root; the venv only as an empty directory (uninstall.sh does not
    look inside it, and a copied venv would still run the original's Python)."""

    def skip_venv(directory: str, names: list[str]) -> list[str]:
        return names if Path(directory) == installed.root / VENV else []

    shutil.copytree(installed.root, destination, symlinks=True, ignore=skip_venv)
    return destination


@pytest.mark.parametrize("purge", [False, True])
def test_uninstall_removes_the_install_and_keeps_config_and_data_unless_purged(
    installed: Installed, tmp_path: Path, purge: bool
) -> None:
    root = copy_without_venv(installed, tmp_path / "root")
    # What `systemctl enable` makes on a running system (install.sh --root does not run it).
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / UNIT.name).symlink_to(f"/{UNIT}")
    # What `systemctl edit enapter-gateway` makes: configuration, like config.toml.
    drop_in = root / f"{UNIT}.d" / "override.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("[Service]\nEnvironment=TZ=UTC\n")
    config = (root / CONFIG).read_bytes()
    (root / STATE / "gateway.db").write_bytes(b"the history")

    result = run(UNINSTALL, "--root", root, *(["--purge"] if purge else []))

    assert result.returncode == 0, result.stdout
    for gone in (UNIT, wants / UNIT.name, OPT):
        assert not (root / gone).exists(), gone
    assert not (wants / UNIT.name).is_symlink()
    for database in ("passwd", "group", "shadow", "gshadow"):
        assert account(root, database) is None, database
    assert (root / OS_UNITS).is_dir() == (Path("/") / OS_UNITS).is_dir()  # the OS's stay
    if purge:
        assert not (root / CONFIG.parent).exists()
        assert not (root / STATE).exists()
        assert not drop_in.parent.exists()
    else:
        assert (root / CONFIG).read_bytes() == config
        assert drop_in.read_text() == "[Service]\nEnvironment=TZ=UTC\n"
        assert (root / STATE / "gateway.db").read_bytes() == b"the history"
        assert f"keeping {root / CONFIG.parent} (--purge removes it)" in result.stdout

    again = run(UNINSTALL, "--root", root, *(["--purge"] if purge else []))
    assert again.returncode == 0, again.stdout
