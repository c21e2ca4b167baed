"""Configuration: a TOML document → frozen dataclasses, with every problem named by its dotted path.

`parse` is pure (the one exception: the set of IANA time zone names is read once from the system's
tz database and cached). It never stops at the first problem: it checks every key, collects every
problem as ``"dotted.path: message"`` and raises one `ConfigError` carrying them all, so that a user
fixes the file in one pass. Unknown sections and keys are errors, because a misspelt key that is
silently ignored is a setting that silently does not apply.

`load` is the thin shell: it reads the file and hands the table to `parse`. Every key, with its
default, is documented in ``config.example.toml``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias

MqttMode: TypeAlias = Literal["managed", "external"]


class ConfigError(Exception):
    """The configuration is unusable.

    `problems` lists every reason, each ``"dotted.path: message"``.
    """

    problems: tuple[str, ...]

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``[gateway]``: where state lives and how the single site is presented."""

    state_dir: Path  # absolute once `load` has parsed it
    site_name: str
    timezone: str  # an IANA name, e.g. "Europe/Berlin"


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """``[api.rate_limit]``: fixed-window request limits of the HTTP API; every count 0 = unlimited."""

    window: float  # seconds; length of one rate-limit window
    requests: int  # per window per API token
    anonymous_requests: int  # per window per client address, for requests without a valid token
    auth_failures: int  # unknown or revoked tokens per window per client address; then 429s


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """``[api]``: where the HTTP API (``/api/v3``, ``/api/assets/v1``) listens, and its rate limits."""

    host: str
    port: int
    rate_limit: RateLimitConfig


@dataclass(frozen=True, slots=True)
class ExternalBrokerConfig:
    """``[mqtt.external]``: a Mosquitto the user already runs; used only when mode = "external"."""

    host: str
    port: int
    username: str
    password_file: str  # "" = no password; otherwise an absolute path


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """``[mqtt]``: the broker devices connect to."""

    mode: MqttMode
    bind: str  # address the managed Mosquitto's device listeners bind to
    port: int  # plain MQTT, username/password devices
    tls_port: int  # MQTTS with client certificates; 0 = disabled
    # Extra DNS names for the MQTTS server certificate, lower-case, in the file's order, no
    # duplicates; "<mdns.hostname>.local", "localhost", advertised_host and the gateway's own IP
    # addresses are added by whoever issues the certificate, so they may or may not appear here.
    tls_hostnames: tuple[str, ...]
    advertised_host: str  # written into generated device configs; "" = primary LAN IPv4
    online_window: float  # seconds since the last message that still count as ONLINE
    device_rate_limit: int  # messages a second each device may send; 0 = unlimited
    flood_lockout: float  # seconds a device flooding past its rate is shut out at the broker
    mosquitto: str  # binary name (looked up in PATH) or absolute path
    dynsec_plugin: str  # absolute path to mosquitto_dynamic_security.so; "" = auto-detect
    external: ExternalBrokerConfig


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    """``[mdns]``: the ``<hostname>.local`` advertisement on the LAN."""

    enabled: bool
    hostname: str  # a single DNS label; advertised as "<hostname>.local"
    interfaces: tuple[str, ...]  # () = all LAN interfaces


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """``[retention]``: how long stored data is kept."""

    temporary_logs: float  # seconds to keep logs a device sent with `persist: false`
    telemetry_raw: float  # seconds to keep every telemetry value
    telemetry_1m: float  # seconds to keep the 1-minute rollups
    telemetry_1h: float  # seconds to keep the 1-hour rollups
    max_database_mb: int  # oldest telemetry goes first past this size; 0 = no limit
    timeline: float  # seconds to keep device timeline events


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    """``[commands]``: command executions."""

    timeout: float  # seconds until an execution with no final answer becomes TIMEOUT


TimeSyncProtocol: TypeAlias = Literal["NTP", "HTTP"]


@dataclass(frozen=True, slots=True)
class TimeSyncConfig:
    """``[time_sync]``: the time source generated device configs name (`time_sync_*`)."""

    protocol: TimeSyncProtocol
    host: str  # "" = the host generated configs give for the broker (the gateway itself)
    port: int


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration file."""

    gateway: GatewayConfig
    api: ApiConfig
    mqtt: MqttConfig
    mdns: MdnsConfig
    retention: RetentionConfig
    commands: CommandsConfig
    time_sync: TimeSyncConfig


def parse(data: Mapping[str, object], *, base_dir: Path) -> Config:
    """Validate a TOML document (as `tomllib` returns it) and build a `Config`.

    Missing keys take their defaults. Relative paths are resolved against `base_dir`, the directory
    of the config file, so that the result does not depend on the working directory (systemd starts
    the daemon in ``/``). Raises `ConfigError` listing every problem found.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"(top level): expected a table, got {_show(data)}"])
    root = _Table(data, "", problems)

    table = root.table("gateway")
    gateway = GatewayConfig(
        state_dir=base_dir / _string(table, "state_dir", ".state", _path_value),
        site_name=_string(table, "site_name", "Gateway Site", _not_blank),
        timezone=_string(table, "timezone", "UTC", _iana_timezone),
    )
    table.finish()

    api_table = root.table("api")
    api = ApiConfig(
        host=_string(api_table, "host", "0.0.0.0", _host),
        port=_port(api_table, "port", 8080),
        rate_limit=_rate_limit(api_table.table("rate_limit")),
    )
    api_table.finish()

    table = root.table("mqtt")
    mode = _mode(table, "mode", "managed")
    port = _port(table, "port", 1883)
    tls_port = _port(table, "tls_port", 8883, allow_zero=True)
    # api.host and mqtt.bind both default to every address, so equal ports would fight for the
    # same socket; the rule is kept simple: ports must differ whatever the addresses.
    if api_table.valid("port") and table.valid("port") and port == api.port:
        table.problem("port", f"{port} is already api.port")
    if table.valid("tls_port") and tls_port != 0:
        if api_table.valid("port") and tls_port == api.port:
            table.problem("tls_port", f"{tls_port} is already api.port")
        elif table.valid("port") and tls_port == port:
            table.problem("tls_port", f"{tls_port} is already mqtt.port")
    mqtt = MqttConfig(
        mode=mode,
        bind=_string(table, "bind", "0.0.0.0", _host),
        port=port,
        tls_port=tls_port,
        tls_hostnames=_hostnames(table, "tls_hostnames"),
        advertised_host=_string(table, "advertised_host", "", _optional_host),
        online_window=_seconds(table, "online_window", 90.0),
        device_rate_limit=_count(table, "device_rate_limit", 100),
        flood_lockout=_seconds(table, "flood_lockout", 60.0),
        # A relative path to a program or plugin means "next to the config file"; a bare program
        # name is looked up in PATH, as a shell would.
        mosquitto=_program(_string(table, "mosquitto", "mosquitto", _path_value), base_dir),
        dynsec_plugin=_optional_file(_string(table, "dynsec_plugin", "", _optional_path), base_dir),
        external=_external(table.table("external"), mode, base_dir),
    )
    table.finish()

    table = root.table("mdns")
    mdns = MdnsConfig(
        enabled=_bool(table, "enabled", True),
        hostname=_string(table, "hostname", "enapter-gateway", _dns_label),
        interfaces=_interfaces(table, "interfaces"),
    )
    table.finish()

    table = root.table("retention")
    retention = RetentionConfig(
        temporary_logs=_seconds(table, "temporary_logs", 3600.0),
        telemetry_raw=_seconds(table, "telemetry_raw", 7 * _DAY),
        telemetry_1m=_seconds(table, "telemetry_1m", 90 * _DAY),
        telemetry_1h=_seconds(table, "telemetry_1h", 3650 * _DAY),
        max_database_mb=_count(table, "max_database_mb", 2048),
        timeline=_seconds(table, "timeline", 90 * _DAY),
    )
    table.finish()

    table = root.table("commands")
    # python-sdk's HTTP client waits 5 s for an answer (httpx's default); a blocking
    # execute_command must answer before that, TIMEOUT included.
    commands = CommandsConfig(timeout=_seconds(table, "timeout", 4.0))
    table.finish()

    table = root.table("time_sync")
    time_sync = TimeSyncConfig(
        protocol=_time_sync_protocol(table, "protocol", "NTP"),
        host=_string(table, "host", "", _optional_host),
        port=_port(table, "port", 123),
    )
    table.finish()

    root.finish(kind="section")

    if problems:
        raise ConfigError(problems)
    return Config(
        gateway=gateway,
        api=api,
        mqtt=mqtt,
        mdns=mdns,
        retention=retention,
        commands=commands,
        time_sync=time_sync,
    )


def default_config(*, base_dir: Path) -> Config:
    """The configuration an empty file gives: every key at its default."""
    return parse({}, base_dir=base_dir)


def load(path: Path) -> Config:
    """Read and parse the TOML file at `path`; relative paths in it are taken from its directory.

    A missing or unreadable file and a TOML syntax error are reported as a `ConfigError` too, with
    the file's path in place of a dotted path.
    """
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: not valid UTF-8 (line {line})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError([f"{path}: invalid TOML: nested too deeply"]) from None
    return parse(data, base_dir=path.absolute().parent)


# --- Reading tables ----------------------------------------------------------------------------

_MISSING: Final = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def _key(path: str, key: object) -> str:
    """The dotted path of `key` inside the table at `path`, quoting the key as TOML would."""
    text = key if isinstance(key, str) else str(key)
    if not _BARE_KEY.fullmatch(text):
        text = json.dumps(text, ensure_ascii=False)
    return f"{path}.{text}" if path else text


class _Table:
    """One table of the document: hands out its values and remembers which keys were read."""

    def __init__(self, data: Mapping[str, object], path: str, problems: list[str]) -> None:
        self._data = data
        self._path = path
        self._problems = problems
        self._known: list[str] = []
        self._bad: set[str] = set()

    def take(self, key: str) -> object:
        """The value at `key`, or `_MISSING`; marks `key` as known."""
        self._known.append(key)
        return self._data.get(key, _MISSING)

    def problem(self, key: str, message: str, *, index: int | None = None) -> None:
        """Record a problem with the value at `key` (or with item `index` of that array)."""
        self._bad.add(key)
        where = _key(self._path, key) if index is None else f"{_key(self._path, key)}[{index}]"
        self._problems.append(f"{where}: {message}")

    def valid(self, key: str) -> bool:
        """Whether no problem has been recorded for `key`."""
        return key not in self._bad

    def table(self, key: str) -> _Table:
        """The sub-table at `key`; empty if absent or (recording a problem) not a table."""
        value = self.take(key)
        path = _key(self._path, key)
        if value is _MISSING:
            return _Table({}, path, self._problems)
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a table, got {_show(value)}")
            # Read defaults from an empty table so that the rest of the file is still checked.
            return _Table({}, path, [])
        return _Table(value, path, self._problems)

    def finish(self, *, kind: str = "key") -> None:
        """Report every key of the table that nothing read."""
        for key, value in self._data.items():
            if key in self._known:
                continue
            what = "section" if kind == "section" and isinstance(value, Mapping) else "key"
            message = f"unknown {what}"
            close = difflib.get_close_matches(str(key), self._known, n=1)
            if close:
                message += f' (did you mean "{close[0]}"?)'
            self._problems.append(f"{_key(self._path, key)}: {message}")


def _show(value: object) -> str:
    """A short TOML-like rendering of a bad value for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "…"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "…", ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"  # TOML dates and times


# --- Sections and typed values -----------------------------------------------------------------


def _external(table: _Table, mode: MqttMode, base_dir: Path) -> ExternalBrokerConfig:
    config = ExternalBrokerConfig(
        host=_string(table, "host", "127.0.0.1", _host),
        port=_port(table, "port", 1883),
        username=_string(table, "username", "", _no_nul),
        password_file=_optional_file(_string(table, "password_file", "", _optional_path), base_dir),
    )
    if mode == "external" and not config.username and table.valid("username"):
        table.problem("username", 'required when mqtt.mode = "external"')
    table.finish()
    return config


def _rate_limit(table: _Table) -> RateLimitConfig:
    config = RateLimitConfig(
        window=_seconds(table, "window", 60.0),
        requests=_count(table, "requests", 1200),
        anonymous_requests=_count(table, "anonymous_requests", 120),
        auth_failures=_count(table, "auth_failures", 20),
    )
    table.finish()
    return config


def _program(value: str, base_dir: Path) -> str:
    return str(base_dir / value) if "/" in value else value


def _optional_file(value: str, base_dir: Path) -> str:
    return str(base_dir / value) if value else ""


# A check returns None when the string is acceptable, else the problem ("must not be empty").
_Check: TypeAlias = Callable[[str], "str | None"]


def _string(table: _Table, key: str, default: str, check: _Check) -> str:
    value = table.take(key)
    if value is _MISSING:
        return default
    if not isinstance(value, str):
        table.problem(key, f"expected a string, got {_show(value)}")
        return default
    problem = check(value)
    if problem is not None:
        table.problem(key, problem)
        return default
    return value


def _bool(table: _Table, key: str, default: bool) -> bool:
    value = table.take(key)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        table.problem(key, f"expected true or false, got {_show(value)}")
        return default
    return value


def _port(table: _Table, key: str, default: int, *, allow_zero: bool = False) -> int:
    value = table.take(key)
    if value is _MISSING:
        return default
    low = 0 if allow_zero else 1
    # bool is an int in Python but `true` is not a port number.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        disabled = " (0 = disabled)" if allow_zero else ""
        table.problem(key, f"expected an integer {low}..65535{disabled}, got {_show(value)}")
        return default
    return value


def _count(table: _Table, key: str, default: int) -> int:
    """A per-window limit: an integer >= 0, where 0 means unlimited."""
    value = table.take(key)
    if value is _MISSING:
        return default
    # bool is an int in Python, and 1.0 is not an integer in TOML.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        table.problem(key, f"expected an integer >= 0 (0 = unlimited), got {_show(value)}")
        return default
    return value


def _seconds(table: _Table, key: str, default: float) -> float:
    value = table.take(key)
    if value is _MISSING:
        return default
    seconds = math.nan
    if isinstance(value, float):
        seconds = value
    # A TOML integer may be too large for a float; no sane window is anywhere near 2**53 s.
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        table.problem(key, f"expected a number of seconds > 0, got {_show(value)}")
        return default
    return seconds


def _mode(table: _Table, key: str, default: MqttMode) -> MqttMode:
    value = table.take(key)
    if value is _MISSING:
        return default
    if value == "managed":
        return "managed"
    if value == "external":
        return "external"
    table.problem(key, f'expected "managed" or "external", got {_show(value)}')
    return default


def _time_sync_protocol(table: _Table, key: str, default: TimeSyncProtocol) -> TimeSyncProtocol:
    value = table.take(key)
    if value is _MISSING:
        return default
    # Any case, as the SDK upper-cases what it reads (enapter-device-protocol.md §1.9).
    upper = value.upper() if isinstance(value, str) else None
    if upper == "NTP":
        return "NTP"
    if upper == "HTTP":
        return "HTTP"
    table.problem(key, f'expected "NTP" or "HTTP", got {_show(value)}')
    return default


def _interfaces(table: _Table, key: str) -> tuple[str, ...]:
    value = table.take(key)
    if value is _MISSING:
        return ()
    if not isinstance(value, list):
        table.problem(key, f"expected an array of interface names, got {_show(value)}")
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            table.problem(key, f"expected a string, got {_show(item)}", index=index)
        elif not item or _has_space_or_nul(item):
            message = f'expected an interface name such as "eth0", got {_show(item)}'
            table.problem(key, message, index=index)
        elif item in names:
            table.problem(key, f"duplicate interface {_show(item)}", index=index)
        else:
            names.append(item)
    return tuple(names)


def _hostnames(table: _Table, key: str) -> tuple[str, ...]:
    value = table.take(key)
    if value is _MISSING:
        return ()
    if not isinstance(value, list):
        table.problem(key, f"expected an array of DNS host names, got {_show(value)}")
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            table.problem(key, f"expected a string, got {_show(item)}", index=index)
            continue
        problem = _dns_name(item)
        if problem is not None:
            table.problem(key, problem, index=index)
        # DNS names are case-insensitive, so "GW.lan" repeats "gw.lan".
        elif item.lower() in names:
            table.problem(key, f"duplicate host name {_show(item)}", index=index)
        else:
            names.append(item.lower())
    return tuple(names)


# --- String checks -----------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)


def _has_space_or_nul(value: str) -> bool:
    return "\0" in value or any(ch.isspace() for ch in value)


def _no_nul(value: str) -> str | None:
    return "must not contain a NUL character" if "\0" in value else None


def _not_blank(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return _no_nul(value)


def _host(value: str) -> str | None:
    if not value or _has_space_or_nul(value):
        return f"expected a host name or IP address, got {_show(value)}"
    return None


def _optional_host(value: str) -> str | None:
    return _host(value) if value else None


def _path_value(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value.startswith("~"):
        # Nothing expands "~" here (and systemd services often have no HOME).
        return "'~' is not expanded; give an absolute path or one relative to the config file"
    return _no_nul(value)


def _optional_path(value: str) -> str | None:
    return _path_value(value) if value else None


def _dns_label(value: str) -> str | None:
    if _DNS_LABEL.fullmatch(value):
        return None
    return (
        "expected a DNS label (1-63 letters, digits or hyphens, not starting or ending with a "
        f"hyphen), got {_show(value)}"
    )


def _dns_name(value: str) -> str | None:
    # RFC 1123 host names: DNS labels joined by dots, at most 253 characters. A certificate's DNS
    # name matches no IP address, and a name whose last label is all digits reads as one
    # ("10.0.0.2", and "10.2" to inet_aton), so those are refused rather than silently useless.
    labels = value.split(".")
    if len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels):
        if not labels[-1].isdigit():
            return None
        return f"expected a DNS host name, not an IP address, got {_show(value)}"
    return (
        "expected a DNS host name (DNS labels of letters, digits or hyphens joined by dots; no "
        f"wildcard), got {_show(value)}"
    )


@functools.cache
def _iana_timezones() -> frozenset[str]:
    # Reads the tz database once (~0.1 s); the names cannot change while the process runs.
    # Debian's zoneinfo directory also holds "localtime", a link to the host's zone, not a name.
    return frozenset(zoneinfo.available_timezones()) - {"localtime"}


def is_iana_timezone(name: str) -> bool:
    """Whether `name` is an IANA time zone name (from the OS, or the tzdata package)."""
    return name in _iana_timezones()


def _iana_timezone(value: str) -> str | None:
    if is_iana_timezone(value):
        return None
    return f'expected an IANA time zone name such as "Europe/Berlin", got {_show(value)}'
