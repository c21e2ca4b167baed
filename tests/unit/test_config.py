"""Tests for `gateway.config`: defaults, the example file, and every problem named by its path."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    ApiConfig,
    CommandsConfig,
    Config,
    ConfigError,
    ExternalBrokerConfig,
    GatewayConfig,
    MdnsConfig,
    MqttConfig,
    RateLimitConfig,
    RetentionConfig,
    TimeSyncConfig,
    default_config,
    load,
    parse,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
BASE = Path("/etc/enapter-gateway")


def problems_of(data: dict[str, object]) -> tuple[str, ...]:
    """The problems `parse` reports for `data` (failing the test if it accepts it)."""
    with pytest.raises(ConfigError) as caught:
        parse(data, base_dir=BASE)
    return caught.value.problems


# --- Defaults and the example file -------------------------------------------------------------


def test_defaults() -> None:
    assert default_config(base_dir=BASE) == Config(
        gateway=GatewayConfig(state_dir=BASE / ".state", site_name="Gateway Site", timezone="UTC"),
        api=ApiConfig(
            host="0.0.0.0",
            port=8080,
            rate_limit=RateLimitConfig(window=60.0, requests=1200, anonymous_requests=120, auth_failures=20),
        ),
        mqtt=MqttConfig(
            mode="managed",
            bind="0.0.0.0",
            port=1883,
            tls_port=8883,
            tls_hostnames=(),
            advertised_host="",
            online_window=90.0,
            device_rate_limit=100,
            flood_lockout=60.0,
            mosquitto="mosquitto",
            dynsec_plugin="",
            external=ExternalBrokerConfig(host="127.0.0.1", port=1883, username="", password_file=""),
        ),
        mdns=MdnsConfig(enabled=True, hostname="enapter-gateway", interfaces=()),
        retention=RetentionConfig(
            temporary_logs=3600.0,
            telemetry_raw=604800.0,
            telemetry_1m=7776000.0,
            telemetry_1h=315360000.0,
            max_database_mb=2048,
            timeline=7776000.0,
        ),
        commands=CommandsConfig(timeout=4.0),
        time_sync=TimeSyncConfig(protocol="NTP", host="", port=123),
    )


def test_example_parses_to_the_defaults() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert parse(data, base_dir=REPO) == default_config(base_dir=REPO)
    assert load(EXAMPLE) == default_config(base_dir=REPO)


def test_example_sets_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    sections: dict[tuple[str, ...], type[Any]] = {
        ("gateway",): GatewayConfig,
        ("api",): ApiConfig,
        ("api", "rate_limit"): RateLimitConfig,
        ("mqtt",): MqttConfig,
        ("mqtt", "external"): ExternalBrokerConfig,
        ("mdns",): MdnsConfig,
        ("retention",): RetentionConfig,
        ("time_sync",): TimeSyncConfig,
    }
    for parts, section in sections.items():
        table: object = data
        for part in parts:
            assert isinstance(table, dict)
            table = table[part]
        assert isinstance(table, dict)
        for field in dataclasses.fields(section):
            assert field.name in table, f"{'.'.join(parts)}.{field.name} missing from the example"


def test_example_documents_each_default_above_its_key() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    assignments = [i for i, line in enumerate(lines) if re.match(r"\w+ = ", line)]
    assert len(assignments) == 37  # every key of every section
    for index in assignments:
        value = lines[index].split(" = ", 1)[1]
        assert lines[index - 1].startswith(f"# Default: {value}"), lines[index]
        # ... and a line explaining what the key does, above the default.
        assert lines[index - 2].startswith("# ")
        assert not lines[index - 2].startswith("# Default:")


def test_empty_sections_are_defaults() -> None:
    data: dict[str, object] = {
        "gateway": {},
        "api": {"rate_limit": {}},
        "mqtt": {"external": {}},
        "mdns": {},
        "retention": {},
        "commands": {},
        "time_sync": {},
    }
    assert parse(data, base_dir=BASE) == default_config(base_dir=BASE)


def test_every_key_set() -> None:
    config = parse(
        {
            "gateway": {
                "state_dir": "/var/lib/enapter-gateway",
                "site_name": "Plant",
                "timezone": "Europe/Berlin",
            },
            "api": {
                "host": "127.0.0.1",
                "port": 80,
                "rate_limit": {
                    "window": 1,
                    "requests": 0,
                    "anonymous_requests": 5,
                    "auth_failures": 3,
                },
            },
            "mqtt": {
                "mode": "external",
                "bind": "192.168.1.2",
                "port": 11883,
                "tls_port": 0,
                "tls_hostnames": ["Gateway.Example.LAN", "gw-2", "mqtt.plant-7.internal"],
                "advertised_host": "gw.lan",
                "online_window": 30,
                "device_rate_limit": 0,
                "flood_lockout": 5,
                "mosquitto": "/usr/sbin/mosquitto",
                "dynsec_plugin": "/opt/dynsec.so",
                "external": {
                    "host": "broker.lan",
                    "port": 1884,
                    "username": "admin",
                    "password_file": "secrets/admin",
                },
            },
            "mdns": {"enabled": False, "hostname": "gw-1", "interfaces": ["eth0", "wlan0"]},
            "retention": {
                "temporary_logs": 60,
                "telemetry_raw": 120,
                "telemetry_1m": 3600,
                "telemetry_1h": 86400.5,
                "max_database_mb": 0,
                "timeline": 7200,
            },
            "commands": {"timeout": 2},
            "time_sync": {"protocol": "http", "host": "time.lan", "port": 80},
        },
        base_dir=BASE,
    )
    assert config.gateway == GatewayConfig(
        state_dir=Path("/var/lib/enapter-gateway"), site_name="Plant", timezone="Europe/Berlin"
    )
    assert config.api == ApiConfig(
        host="127.0.0.1",
        port=80,
        rate_limit=RateLimitConfig(window=1.0, requests=0, anonymous_requests=5, auth_failures=3),
    )
    assert isinstance(config.api.rate_limit.window, float)
    assert config.mqtt == MqttConfig(
        mode="external",
        bind="192.168.1.2",
        port=11883,
        tls_port=0,
        tls_hostnames=("gateway.example.lan", "gw-2", "mqtt.plant-7.internal"),
        advertised_host="gw.lan",
        online_window=30.0,
        device_rate_limit=0,
        flood_lockout=5.0,
        mosquitto="/usr/sbin/mosquitto",
        dynsec_plugin="/opt/dynsec.so",
        external=ExternalBrokerConfig(
            host="broker.lan",
            port=1884,
            username="admin",
            password_file=str(BASE / "secrets/admin"),
        ),
    )
    assert isinstance(config.mqtt.online_window, float)
    assert config.mdns == MdnsConfig(enabled=False, hostname="gw-1", interfaces=("eth0", "wlan0"))
    assert config.retention == RetentionConfig(
        temporary_logs=60.0,
        telemetry_raw=120.0,
        telemetry_1m=3600.0,
        telemetry_1h=86400.5,
        max_database_mb=0,
        timeline=7200.0,
    )
    assert config.commands == CommandsConfig(timeout=2.0)
    assert config.time_sync == TimeSyncConfig(protocol="HTTP", host="time.lan", port=80)


# --- Paths ---------------------------------------------------------------------------------------


def test_relative_state_dir_is_taken_from_the_file_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "gateway.toml"
    path.write_text('[gateway]\nstate_dir = "../var/state"\n', encoding="utf-8")
    assert load(path).gateway.state_dir == tmp_path / "etc" / "../var/state"


def test_load_gives_absolute_paths_for_a_relative_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gateway.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    state_dir = load(Path("gateway.toml")).gateway.state_dir
    assert state_dir.is_absolute()
    assert state_dir == tmp_path / ".state"


def test_absolute_state_dir_is_kept() -> None:
    config = parse({"gateway": {"state_dir": "/srv/state"}}, base_dir=BASE)
    assert config.gateway.state_dir == Path("/srv/state")


def test_program_and_plugin_paths() -> None:
    mqtt = parse(
        {"mqtt": {"mosquitto": "bin/mosquitto", "dynsec_plugin": "lib/dynsec.so"}},
        base_dir=BASE,
    ).mqtt
    assert mqtt.mosquitto == str(BASE / "bin/mosquitto")
    assert mqtt.dynsec_plugin == str(BASE / "lib/dynsec.so")
    # A bare program name stays a name, for PATH lookup.
    assert parse({"mqtt": {"mosquitto": "mosquitto2"}}, base_dir=BASE).mqtt.mosquitto == ("mosquitto2")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"gateway": {"state_dir": "~/state"}},
            "gateway.state_dir: '~' is not expanded; give an absolute path or one relative to "
            "the config file",
        ),
        ({"gateway": {"state_dir": ""}}, "gateway.state_dir: must not be empty"),
        (
            {"mqtt": {"external": {"password_file": "a\0b"}}},
            "mqtt.external.password_file: must not contain a NUL character",
        ),
    ],
)
def test_bad_paths(data: dict[str, object], expected: str) -> None:
    assert problems_of(data) == (expected,)


# --- One bad value, one problem naming its path -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"mqtt": {"port": "abc"}}, 'mqtt.port: expected an integer 1..65535, got "abc"'),
        ({"mqtt": {"port": 0}}, "mqtt.port: expected an integer 1..65535, got 0"),
        ({"api": {"port": 65536}}, "api.port: expected an integer 1..65535, got 65536"),
        ({"api": {"port": 8080.0}}, "api.port: expected an integer 1..65535, got 8080.0"),
        # bool is an int in Python; `true` must not pass for port 1.
        ({"api": {"port": True}}, "api.port: expected an integer 1..65535, got true"),
        (
            {"mqtt": {"tls_port": -1}},
            "mqtt.tls_port: expected an integer 0..65535 (0 = disabled), got -1",
        ),
        (
            {"mqtt": {"external": {"port": "1883"}}},
            'mqtt.external.port: expected an integer 1..65535, got "1883"',
        ),
        ({"mdns": {"enabled": 1}}, "mdns.enabled: expected true or false, got 1"),
        (
            {"retention": {"temporary_logs": 0}},
            "retention.temporary_logs: expected a number of seconds > 0, got 0",
        ),
        ({"mdns": {"enabled": "true"}}, 'mdns.enabled: expected true or false, got "true"'),
        ({"gateway": {"site_name": 5}}, "gateway.site_name: expected a string, got 5"),
        ({"gateway": {"site_name": "  "}}, "gateway.site_name: must not be empty"),
        ({"api": {"host": ["a"]}}, "api.host: expected a string, got an array"),
        ({"api": {"host": ""}}, 'api.host: expected a host name or IP address, got ""'),
        (
            {"mqtt": {"bind": "0.0.0.0 "}},
            'mqtt.bind: expected a host name or IP address, got "0.0.0.0 "',
        ),
        (
            {"gateway": {"timezone": "Mars/Olympus"}},
            'gateway.timezone: expected an IANA time zone name such as "Europe/Berlin", got "Mars/Olympus"',
        ),
        (
            {"gateway": {"timezone": "localtime"}},
            'gateway.timezone: expected an IANA time zone name such as "Europe/Berlin", got "localtime"',
        ),
        (
            {"gateway": {"timezone": "/etc/localtime"}},
            'gateway.timezone: expected an IANA time zone name such as "Europe/Berlin", got "/etc/localtime"',
        ),
        (
            {"mqtt": {"mode": "embedded"}},
            'mqtt.mode: expected "managed" or "external", got "embedded"',
        ),
        (
            {"mqtt": {"online_window": 0}},
            "mqtt.online_window: expected a number of seconds > 0, got 0",
        ),
        (
            {"mqtt": {"online_window": -1.5}},
            "mqtt.online_window: expected a number of seconds > 0, got -1.5",
        ),
        (
            {"mqtt": {"online_window": float("inf")}},
            "mqtt.online_window: expected a number of seconds > 0, got inf",
        ),
        (
            {"mqtt": {"online_window": 10**400}},  # TOML integers are unbounded; no float holds this
            "mqtt.online_window: expected a number of seconds > 0, got 1" + "0" * 39 + "…",
        ),
        (
            {"mqtt": {"online_window": True}},
            "mqtt.online_window: expected a number of seconds > 0, got true",
        ),
        (
            {"mqtt": {"mode": "external"}},
            'mqtt.external.username: required when mqtt.mode = "external"',
        ),
        (
            {"mqtt": {"mode": "external", "external": {"username": ""}}},
            'mqtt.external.username: required when mqtt.mode = "external"',
        ),
        (
            {"mdns": {"hostname": "-gw"}},
            "mdns.hostname: expected a DNS label (1-63 letters, digits or hyphens, not starting "
            'or ending with a hyphen), got "-gw"',
        ),
        (
            {"mdns": {"interfaces": "eth0"}},
            'mdns.interfaces: expected an array of interface names, got "eth0"',
        ),
        ({"mdns": {"interfaces": ["eth0", 3]}}, "mdns.interfaces[1]: expected a string, got 3"),
        (
            {"mdns": {"interfaces": ["eth0", "eth0"]}},
            'mdns.interfaces[1]: duplicate interface "eth0"',
        ),
        (
            {"api": {"rate_limit": {"requests": -1}}},
            "api.rate_limit.requests: expected an integer >= 0 (0 = unlimited), got -1",
        ),
        (
            {"api": {"rate_limit": {"requests": 10.0}}},
            "api.rate_limit.requests: expected an integer >= 0 (0 = unlimited), got 10.0",
        ),
        (
            {"api": {"rate_limit": {"anonymous_requests": True}}},
            "api.rate_limit.anonymous_requests: expected an integer >= 0 (0 = unlimited), got true",
        ),
        (
            {"api": {"rate_limit": {"auth_failures": "20"}}},
            'api.rate_limit.auth_failures: expected an integer >= 0 (0 = unlimited), got "20"',
        ),
        (
            {"api": {"rate_limit": {"window": 0}}},
            "api.rate_limit.window: expected a number of seconds > 0, got 0",
        ),
        (
            {"api": {"rate_limit": {"window": float("nan")}}},
            "api.rate_limit.window: expected a number of seconds > 0, got nan",
        ),
        (
            {"mqtt": {"tls_hostnames": "gw.lan"}},
            'mqtt.tls_hostnames: expected an array of DNS host names, got "gw.lan"',
        ),
        ({"mqtt": {"tls_hostnames": ["gw.lan", 3]}}, "mqtt.tls_hostnames[1]: expected a string, got 3"),
        (
            {"mqtt": {"tls_hostnames": ["gw.lan", "GW.LAN"]}},
            'mqtt.tls_hostnames[1]: duplicate host name "GW.LAN"',
        ),
        (
            {"mqtt": {"tls_hostnames": ["gw.lan", "10.0.0.2"]}},
            'mqtt.tls_hostnames[1]: expected a DNS host name, not an IP address, got "10.0.0.2"',
        ),
        (
            {"mqtt": {"tls_hostnames": ["*.lan"]}},
            "mqtt.tls_hostnames[0]: expected a DNS host name (DNS labels of letters, digits or "
            'hyphens joined by dots; no wildcard), got "*.lan"',
        ),
        ({"time_sync": {"protocol": "PTP"}}, 'time_sync.protocol: expected "NTP" or "HTTP", got "PTP"'),
        ({"time_sync": {"protocol": 123}}, 'time_sync.protocol: expected "NTP" or "HTTP", got 123'),
        ({"time_sync": {"host": "a b"}}, 'time_sync.host: expected a host name or IP address, got "a b"'),
        ({"time_sync": {"port": 0}}, "time_sync.port: expected an integer 1..65535, got 0"),
        ({"mqtt": {"port": 8080}}, "mqtt.port: 8080 is already api.port"),
        ({"mqtt": {"tls_port": 8080}}, "mqtt.tls_port: 8080 is already api.port"),
        ({"mqtt": {"tls_port": 1883}}, "mqtt.tls_port: 1883 is already mqtt.port"),
        ({"api": {"port": 1883}}, "mqtt.port: 1883 is already api.port"),
    ],
)
def test_bad_value_is_named_by_its_path(data: dict[str, object], expected: str) -> None:
    assert problems_of(data) == (expected,)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ()),
        (["localhost"], ("localhost",)),
        (["b.lan", "A.lan", "gw"], ("b.lan", "a.lan", "gw")),  # lower-cased, order kept
        (["0gw.10.lan", "x-1.example"], ("0gw.10.lan", "x-1.example")),  # digits, but not an address
        (["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61], None),  # 253 characters
    ],
)
def test_good_tls_hostnames(names: list[str], expected: tuple[str, ...] | None) -> None:
    mqtt = parse({"mqtt": {"tls_hostnames": names}}, base_dir=BASE).mqtt
    assert mqtt.tls_hostnames == (expected if expected is not None else tuple(names))


@pytest.mark.parametrize(
    "name",
    [
        "",
        "gw.",
        ".gw",
        "gw..lan",
        "-gw.lan",
        "gw-.lan",
        "gw_1.lan",
        "gät.lan",
        "gw lan",
        "gw.lan\n",
        "*.example.lan",
        "x" * 64 + ".lan",
        "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62,  # 254 characters
        "::1",
        "[fe80::1]",
        "192.168.1.2",
        "10.2",
        "gw.lan:8883",
    ],
)
def test_bad_tls_hostnames(name: str) -> None:
    (problem,) = problems_of({"mqtt": {"tls_hostnames": ["ok.lan", name]}})
    assert problem.startswith("mqtt.tls_hostnames[1]: expected a DNS host name")


@pytest.mark.parametrize("label", ["a", "gw-1", "X" * 63, "0gateway"])
def test_good_hostnames(label: str) -> None:
    assert parse({"mdns": {"hostname": label}}, base_dir=BASE).mdns.hostname == label


@pytest.mark.parametrize("label", ["", "gw-", "x" * 64, "gw.local", "gw_1", "gät", "gw\n"])
def test_bad_hostnames(label: str) -> None:
    (problem,) = problems_of({"mdns": {"hostname": label}})
    assert problem.startswith("mdns.hostname: expected a DNS label")


def test_tls_port_zero_disables_the_collision_check() -> None:
    config = parse({"mqtt": {"tls_port": 0}, "api": {"port": 1884}}, base_dir=BASE)
    assert config.mqtt.tls_port == 0


def test_external_credentials_not_required_in_managed_mode() -> None:
    assert parse({"mqtt": {"mode": "managed"}}, base_dir=BASE).mqtt.external.username == ""


def test_no_collision_reported_against_a_port_that_is_itself_wrong() -> None:
    # mqtt.port falls back to its default 1883 internally; that must not raise a second,
    # misleading problem about tls_port.
    assert problems_of({"mqtt": {"port": "x", "tls_port": 1883}}) == (
        'mqtt.port: expected an integer 1..65535, got "x"',
    )


# --- Unknown keys and sections, and sections that are not tables -------------------------------


def test_unknown_keys_and_sections() -> None:
    problems = problems_of(
        {
            "mqtt": {"prot": 1883, "external": {"pasword_file": "x"}},
            "metrics": {"enabled": True},
            "debug": True,
            "api": {"bind": "::", "a.b": 1, "rate_limit": {"request": 5}},
        }
    )
    assert set(problems) == {
        'api.rate_limit.request: unknown key (did you mean "requests"?)',
        'mqtt.prot: unknown key (did you mean "port"?)',
        'mqtt.external.pasword_file: unknown key (did you mean "password_file"?)',
        "metrics: unknown section",
        "debug: unknown key",
        "api.bind: unknown key",
        'api."a.b": unknown key',
    }


@pytest.mark.parametrize("section", ["gateway", "api", "mqtt", "mdns", "retention", "time_sync"])
def test_section_that_is_not_a_table(section: str) -> None:
    assert problems_of({section: 5}) == (f"{section}: expected a table, got 5",)


def test_external_section_that_is_not_a_table() -> None:
    assert problems_of({"mqtt": {"external": "127.0.0.1"}}) == (
        'mqtt.external: expected a table, got "127.0.0.1"',
    )


def test_rate_limit_section_that_is_not_a_table() -> None:
    assert problems_of({"api": {"rate_limit": 100}}) == ("api.rate_limit: expected a table, got 100",)


def test_rate_limit_zero_means_unlimited_and_is_accepted() -> None:
    limits = {"requests": 0, "anonymous_requests": 0, "auth_failures": 0}
    rate_limit = parse({"api": {"rate_limit": limits}}, base_dir=BASE).api.rate_limit
    assert rate_limit == RateLimitConfig(window=60.0, requests=0, anonymous_requests=0, auth_failures=0)


# --- Several problems at once -------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "gateway": {"timezone": "Nowhere", "state_dir": 3},
            "api": "8080",
            "mqtt": {
                "port": "abc",
                "tls_hostnames": ["ok", "1.2.3.4"],
                "online_window": 0,
                "mode": "external",
                "colour": "red",
            },
            "mdns": {"enabled": "yes", "interfaces": [1, 2]},
            "extra": {},
        }
    )
    assert [problem.split(":", 1)[0] for problem in problems] == [
        "gateway.state_dir",
        "gateway.timezone",
        "api",
        "mqtt.port",
        "mqtt.tls_hostnames[1]",
        "mqtt.online_window",
        "mqtt.external.username",
        "mqtt.colour",
        "mdns.enabled",
        "mdns.interfaces[0]",
        "mdns.interfaces[1]",
        "extra",
    ]


def test_config_error_message_lists_every_problem() -> None:
    error = ConfigError(["a.b: one", "c: two"])
    assert error.problems == ("a.b: one", "c: two")
    assert str(error) == "a.b: one\nc: two"


# --- load() --------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == (f"{path}: no such file",)


def test_load_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[mqtt]\nport = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 2" in problem


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[gateway]\nsite_name = "Caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == (f"{path}: not valid UTF-8 (line 2)",)


def test_load_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path}: cannot read: ")


def test_load_reports_value_problems(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[mqtt]\nport = "abc"\nprot = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == (
        'mqtt.port: expected an integer 1..65535, got "abc"',
        'mqtt.prot: unknown key (did you mean "port"?)',
    )


# --- Any input: a Config or a ConfigError --------------------------------------------------------

KNOWN_KEYS = [
    "protocol",
    "state_dir",
    "site_name",
    "timezone",
    "host",
    "port",
    "mode",
    "bind",
    "tls_port",
    "advertised_host",
    "online_window",
    "mosquitto",
    "dynsec_plugin",
    "external",
    "username",
    "password_file",
    "enabled",
    "hostname",
    "interfaces",
    "rate_limit",
    "window",
    "requests",
    "anonymous_requests",
    "auth_failures",
    "tls_hostnames",
]
SECTIONS = ["gateway", "api", "mqtt", "mdns", "retention", "commands", "time_sync"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["managed", "external", "UTC", "eth0", "", "~", "a/b", "gw.lan", "GW.lan", "10.0.0.1"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
tables = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=5), json_values, max_size=6)
documents = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=5), tables | json_values, max_size=5)


@settings(deadline=None)  # the first call reads the tz database
@given(documents)
def test_any_document_gives_a_config_or_a_config_error(data: dict[str, object]) -> None:
    try:
        config = parse(data, base_dir=BASE)
    except ConfigError as error:
        problems = error.problems
    else:
        assert isinstance(config, Config)
        assert config.gateway.state_dir.is_absolute()
        assert 1 <= config.api.port <= 65535
        assert config.mqtt.online_window > 0
        rate_limit = config.api.rate_limit
        assert rate_limit.window > 0
        assert min(rate_limit.requests, rate_limit.anonymous_requests, rate_limit.auth_failures) >= 0
        names = config.mqtt.tls_hostnames
        assert len(set(names)) == len(names)
        assert all(name == name.lower() and not name.split(".")[-1].isdigit() for name in names)
        return
    assert problems
    for problem in problems:
        path, sep, message = problem.partition(": ")
        assert sep
        assert path
        assert message


valid_tables = st.fixed_dictionaries(
    {},
    optional={
        "port": st.integers(1, 65535),
        "tls_port": st.integers(0, 65535),
        "online_window": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6),
        "mode": st.just("managed"),
        "advertised_host": st.sampled_from(["", "gw.lan", "10.0.0.2"]),
    },
)


@given(valid_tables, st.integers(1, 65535))
def test_valid_mqtt_values_are_kept(mqtt: dict[str, object], api_port: int) -> None:
    ports = [api_port, mqtt.get("port", 1883), mqtt.get("tls_port", 8883)]
    nonzero = [port for port in ports if port != 0]
    data: dict[str, object] = {"mqtt": mqtt, "api": {"port": api_port}}
    if len(set(nonzero)) < len(nonzero):
        assert all("is already" in problem for problem in problems_of(data))
        return
    config = parse(data, base_dir=BASE)
    assert config.api.port == api_port
    for key, value in mqtt.items():
        assert getattr(config.mqtt, key) == value


rate_limit_tables = st.fixed_dictionaries(
    {},
    optional={
        "window": st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6),
        "requests": st.integers(0, 2**63 - 1),
        "anonymous_requests": st.integers(0, 10**6),
        "auth_failures": st.integers(0, 10**6),
    },
)


@given(rate_limit_tables)
def test_valid_rate_limit_values_are_kept(rate_limit: dict[str, object]) -> None:
    config = parse({"api": {"rate_limit": rate_limit}}, base_dir=BASE).api.rate_limit
    for key, value in rate_limit.items():
        assert getattr(config, key) == value
