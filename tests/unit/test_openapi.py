"""The OpenAPI document (`gateway.api.openapi`): a valid OpenAPI 3.1 document, in step with the
application's router both ways, with each route's role, and the DTO builders' output valid against
its schemas; and the docs page rendered from it."""

from __future__ import annotations

import html
import json
import re
from typing import Any, cast

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway.api import dto, errors, openapi
from gateway.api.app import create_app, endpoints
from gateway.api.health import Check, Health
from gateway.api.params import ASSET_EXPANDS, DEVICE_EXPANDS
from gateway.api.services import Services
from gateway.config import ApiConfig, RateLimitConfig
from gateway.model import (
    Blueprint,
    CommandExecution,
    CommandResponseState,
    CommunicationType,
    Connectivity,
    Device,
    DeviceType,
    ExecutionResponse,
    ExecutionState,
    JsonObject,
    LatestValue,
    Location,
    LogEntry,
    LogSeverity,
    Mismatch,
    MqttProtocol,
    Role,
    Site,
)

Doc = dict[str, Any]
ROLES = {(endpoint.method, endpoint.path): endpoint.minimum_role for endpoint in endpoints()}
DOC = openapi.document(version="9.9.9", server_url="http://gateway.test:8080", roles=ROLES)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in DOC["paths"].items() for method in item if method in METHODS
    }


def operation(method: str, path: str) -> Doc:
    found: Doc = DOC["paths"][path][method.lower()]
    return found


def schema_validator(name: str) -> Draft202012Validator:
    """A validator for `components/schemas/<name>` within the document."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def assert_valid(name: str, value: object) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator(name).iter_errors(value)]
    assert not problems, (name, problems)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC)
    assert DOC["info"]["version"] == "9.9.9"
    assert DOC["servers"] == [{"url": "http://gateway.test:8080", "description": "This gateway."}]


def test_every_route_of_the_application_is_documented_and_nothing_else() -> None:
    limits = RateLimitConfig(window=1.0, requests=0, anonymous_requests=0, auth_failures=0)
    # The router is all this test reads; nothing calls the handlers, so no services are needed.
    app = create_app(cast(Services, object()), ApiConfig(host="127.0.0.1", port=0, rate_limit=limits))
    routes = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}
    heads = {(method, path) for method, path in routes if method == "HEAD"}
    served = routes - heads
    assert served == documented()
    # HEAD is not documented operation by operation: every GET answers it, and nothing else does.
    assert {path for _, path in heads} == {path for method, path in served if method == "GET"}
    # The served document reads its roles from the same application.
    assert openapi.served_roles(app) == ROLES


def test_the_documented_operations_do_not_follow_the_roles_given() -> None:
    # Both directions of the test above rest on `document` not inventing operations for roles
    # it has no documentation for, and not dropping documented ones without a role.
    extra = {**ROLES, ("GET", "/api/v3/undocumented"): Role.READONLY}
    doc = openapi.document(version="1", server_url="http://x", roles=extra)
    assert "/api/v3/undocumented" not in doc["paths"]
    bare = openapi.document(version="1", server_url="http://x", roles={})
    assert {(m.upper(), p) for p, item in bare["paths"].items() for m in item} == documented()


def test_each_operation_states_its_role_and_its_auth_answers() -> None:
    for (method, path), role in ROLES.items():
        body = operation(method, path)
        responses = body["responses"]
        assert "429" in responses, (method, path)
        if role is None:
            assert body["security"] == []
            assert body[openapi.ROLE_EXTENSION] is None
            assert "401" not in responses, (method, path)
            assert "No token needed." in body["description"]
        else:
            assert "security" not in body  # the document-wide token requirement applies
            assert body[openapi.ROLE_EXTENSION] == role.value
            assert {"401", "403"} <= set(responses), (method, path)
            assert f"Needs the {role.value} role or higher." in body["description"]
    assert DOC["security"] == [{openapi.SECURITY_SCHEME: []}]
    scheme = DOC["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-Enapter-Auth-Token"}


def test_every_error_answer_is_the_envelope() -> None:
    for path, item in DOC["paths"].items():
        for method, body in item.items():
            for status, response in body["responses"].items():
                if int(status) < 400 or path == "/api/health":
                    continue
                ref = response["$ref"]
                resolved = DOC["components"]["responses"][ref.rsplit("/", 1)[-1]]
                assert resolved["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
                }, (method, path, status)
    for error in (
        errors.missing_token(),
        errors.not_found("Device"),
        errors.invalid_parameter("limit", "must be between 1 and 1000"),
        errors.too_many_requests(3),
    ):
        assert_valid("ErrorEnvelope", error.envelope())
    assert not schema_validator("ErrorEnvelope").is_valid({"errors": []})
    assert not schema_validator("ErrorEnvelope").is_valid({"errors": [{"code": "x"}]})


def test_operation_ids_are_unique_and_each_operation_has_one_tag_of_the_list() -> None:
    ids = [body["operationId"] for item in DOC["paths"].values() for body in item.values()]
    assert len(ids) == len(set(ids)) == len(ROLES)
    tags = {tag["name"] for tag in DOC["tags"]}
    for item in DOC["paths"].values():
        for body in item.values():
            assert len(body["tags"]) == 1
            assert body["tags"][0] in tags


def test_path_parameters_match_the_templates() -> None:
    for path, item in DOC["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for body in item.values():
            parameters = [
                DOC["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
                for p in body.get("parameters", ())
            ]
            assert {p["name"] for p in parameters if p["in"] == "path"} == names, path


# --- What the DTO builders emit, against the schemas ---------------------------------------------

SITE = Site(
    id="site-1", name="Home", timezone="Europe/Berlin", updated_at=0.0, location=Location("Lab", 52.5, None)
)
DEVICE = Device(
    id="dev-1",
    site_id="site-1",
    name="Peer",
    slug="peer",
    type=DeviceType.STANDALONE,
    blueprint_id="00000000-0000-0000-0000-000000000000",
    communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
    hardware_id="SABC",
    channel_id="s",
    upstream_id=None,
    created_at=1_700_000_000.0,
    updated_at=1_700_000_000.25,
)
GATEWAY = Device(
    id="gw",
    site_id="site-1",
    name="Gateway",
    slug="gateway",
    type=DeviceType.GATEWAY,
    blueprint_id="00000000-0000-0000-0000-000000000000",
    communication_type=None,
    hardware_id=None,
    channel_id=None,
    upstream_id=None,
    created_at=0.0,
    updated_at=0.0,
)


def view(device: Device) -> dto.DeviceView:
    return dto.DeviceView(
        device=device,
        properties={"vendor": "x", "nested": {"a": [1, None]}},
        connectivity=Connectivity.ONLINE,
        raised_alert_names=["overheat"],
        manifest={"blueprint_spec": "device/1.0", "telemetry": {}},
        implemented_profiles=("lib.energy.battery",),
        alert_details=dto.alert_details(None, ["overheat"]),
        mismatches=[(Mismatch("telemetry", "rpm", "not declared"), 3, 1_700_000_000.0)],
    )


@pytest.mark.parametrize("device", [DEVICE, GATEWAY], ids=["standalone", "gateway"])
@pytest.mark.parametrize("expand", [frozenset(), DEVICE_EXPANDS], ids=["bare", "every-expand"])
def test_device_objects_conform_with_every_expand(device: Device, expand: frozenset[str]) -> None:
    body = dto.device(view(device), role=Role.OWNER, expand=expand, site_record=SITE)
    assert_valid("Device", body)
    assert set(expand) <= set(body)
    assert_valid("DeviceList", {"devices": [body], "total_count": 1})
    assert_valid("AssetDevice", dto.asset_device(view(device), expand=expand & ASSET_EXPANDS))


def test_a_field_the_document_does_not_know_fails_validation() -> None:
    body = dto.device(view(DEVICE), role=Role.OWNER, expand=frozenset(), site_record=SITE)
    assert not schema_validator("Device").is_valid({**body, "surprise": 1})
    assert not schema_validator("Device").is_valid({**body, "type": "UNDEFINED_DEVICE_TYPE"})
    del body["authorized_role"]
    assert not schema_validator("Device").is_valid(body)


def test_sites_executions_logs_configs_and_telemetry_conform() -> None:
    assert_valid("SiteEnvelope", {"site": dto.site(SITE, Role.READONLY)})
    assert_valid("Site", dto.site(Site(id="s", name="n", timezone="UTC", updated_at=0.0), Role.VENDOR))
    responses = (
        ExecutionResponse(CommandResponseState.IN_PROGRESS, {"step": 1}, 1_700_000_001.0),
        ExecutionResponse(CommandResponseState.SUCCEEDED, {"sum": 3}, 1_700_000_002.5),
    )
    execution = CommandExecution(
        id="e1",
        device_id="dev-1",
        name="plus",
        manifest_name="add",
        arguments={"a": 1},
        ephemeral=False,
        state=ExecutionState.SUCCESS,
        created_at=1_700_000_000.0,
        responses=responses,
    )
    for with_log in (False, True):
        assert_valid("ExecutionEnvelope", {"execution": dto.execution(execution, with_log=with_log)})
    fresh = CommandExecution(
        id="e2",
        device_id="dev-1",
        name="x",
        manifest_name="x",
        arguments={},
        ephemeral=True,
        state=ExecutionState.NEW,
        created_at=1.5,
    )
    assert_valid("ExecutionList", {"executions": [dto.execution(fresh, with_log=True)], "total_count": 1})
    entry = LogEntry(timestamp=1_700_000_000.9, message="hot", severity=LogSeverity.WARNING, persist=False)
    assert_valid("LogList", {"logs": [dto.log_entry(entry, 1_700_000_001.0)], "total_count": 1})
    time_sync = dto.TimeSync(protocol="NTP", host="10.0.0.1", port=123)
    password: JsonObject = {"username": "SABC", "password": "secret"}
    certificate: JsonObject = {"private_key": "k", "certificate": "c", "ca_chain": "ca"}
    for protocol, credentials in ((MqttProtocol.MQTT, password), (MqttProtocol.MQTTS, certificate)):
        config = dto.communication_config(
            host="10.0.0.1",
            port=1883,
            protocol=protocol,
            credentials=credentials,
            hardware_id="SABC",
            channel_id="s",
            time_sync=time_sync,
        )
        assert_valid("ConfigEnvelope", {"config": config})
    # A password config that claims to be MQTTS fits neither credentials shape.
    wrong = dto.communication_config(
        host="h",
        port=1,
        protocol=MqttProtocol.MQTTS,
        credentials={"username": "u", "password": "p"},
        hardware_id="h",
        channel_id="c",
        time_sync=time_sync,
    )
    assert not schema_validator("CommunicationConfig").is_valid(wrong)
    values = {
        "v": LatestValue(value=1.5, timestamp=100.0),
        "old": LatestValue(value=["a"], timestamp=1.0),
        "on": LatestValue(value=True, timestamp=100.25),
    }
    per_device = dto.latest_telemetry(values, ["v", "old", "on", "missing"], now=110.0, relevance=30.0)
    assert_valid("DeviceTelemetry", {"telemetry": per_device})
    assert_valid(
        "LatestTelemetry",
        {"telemetry": {"dev-1": per_device, "nothing": {"x": {"warning": "Device is not found."}}}},
    )
    assert_valid(
        "V1Now",
        {
            "devices": {"dev-1": dto.current_values(values, [])},
            "errors": [dto.not_found_problem("Device x not found.", device="x")],
        },
    )
    blueprint = Blueprint(id="b1", digest="d", name="bp", manifest={}, created_at=1_700_000_000.123456)
    assert_valid("BlueprintEnvelope", {"blueprint": dto.blueprint(blueprint)})


def test_the_health_document_conforms() -> None:
    healthy = Health((Check("store"), Check("broker"), Check("ingest")))
    assert_valid("Health", healthy.document())
    sick = Health((Check("store"), Check("broker", "mosquitto is not running"), Check("ingest", "down")))
    assert_valid("Health", sick.document())


# --- The docs page -------------------------------------------------------------------------------


def test_the_docs_page_shows_every_operation_with_its_role_and_nothing_external() -> None:
    page = openapi.render_html(DOC)
    assert page.startswith("<!DOCTYPE html>")
    for path, item in DOC["paths"].items():
        for method, body in item.items():
            assert f'id="{body["operationId"]}"' in page
            badge = f'<span class="m {method}">{method.upper()}</span>'
            shown = f'{badge} <span class="path">{html.escape(path)}</span>'
            assert shown in page
    assert page.count("role INSTALLER or higher") == sum(
        1 for role in ROLES.values() if role is Role.INSTALLER
    )
    assert page.count('<span class="role">no token</span>') == sum(
        1 for role in ROLES.values() if role is None
    )
    for tag in DOC["tags"]:
        assert f">{tag['name']}</h2>" in page
    for name in DOC["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    # Offline on a LAN: no scripts, no stylesheets or images from elsewhere.
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_the_docs_page_escapes_what_it_shows() -> None:
    hostile = openapi.document(version="1<b>", server_url='http://x"><script>alert(1)</script>', roles=ROLES)
    page = openapi.render_html(hostile)
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "1&lt;b&gt;" in page
    ids = re.findall(r'id="([^"]*)"', page)
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", value) for value in ids), [v for v in ids if " " in v]


def test_the_document_is_plain_json_and_deterministic() -> None:
    again = openapi.document(
        version="9.9.9", server_url="http://gateway.test:8080", roles=dict(reversed(ROLES.items()))
    )
    assert json.dumps(again, sort_keys=False) == json.dumps(DOC, sort_keys=False)
    assert json.loads(json.dumps(DOC)) == DOC
