"""Fuzzing `gateway.mqtt.dynsec`'s two readers: stored password hashes and the plugin's responses."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt import dynsec
from gateway.mqtt.dynsec import PasswordHash

B64 = st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode())
# `$`-separated parts near the stored form: the scheme and others, numbers and not, base64 and not.
HASH_PARTS = st.one_of(
    st.sampled_from(["pbkdf2-sha512", "PBKDF2-SHA512", "sha512-pbkdf2", "", "101", "-1", " 7", "1_0", "x"]),
    st.integers(-5, 10**6).map(str),
    B64,
    st.text(max_size=6),
)


@given(st.lists(HASH_PARTS, max_size=6).map("$".join) | st.text(max_size=40))
def test_any_stored_text_gives_a_password_hash_or_value_error(text: str) -> None:
    try:
        parsed = PasswordHash.decode(text)
    except ValueError:
        return
    assert text.startswith("pbkdf2-sha512$")
    assert "$" not in parsed.salt_b64 + parsed.hash_b64
    assert PasswordHash.decode(parsed.encode()) == parsed


@given(salt=B64, digest=B64, iterations=st.integers(1, 10**7))
def test_every_password_hash_reads_back_as_written(salt: str, digest: str, iterations: int) -> None:
    written = PasswordHash(salt_b64=salt, hash_b64=digest, iterations=iterations)
    assert PasswordHash.decode(written.encode()) == written


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=5,
)
RESPONSE_ITEMS = st.fixed_dictionaries(
    {},
    optional={
        "command": st.sampled_from(["createClient", "deleteRole"]) | JSON,
        "error": st.sampled_from(["Client not found", "Role not found", "Client already exists"]) | JSON,
        "correlationData": JSON,
    },
)


@settings(max_examples=60)
@given(st.fixed_dictionaries({}, optional={"responses": st.lists(RESPONSE_ITEMS | JSON, max_size=4) | JSON}))
def test_any_response_gives_a_list_of_problems(response: dict[str, object]) -> None:
    problems = dynsec.response_errors(response)  # type: ignore[arg-type]
    assert all(isinstance(problem, str) and problem for problem in problems)
    responses = response.get("responses")
    if not isinstance(responses, list):
        assert problems == ["malformed dynsec response"]
        return
    real = [
        item
        for item in responses
        if not isinstance(item, dict)
        or (
            isinstance(item.get("error"), str) and item["error"] not in ("Client not found", "Role not found")
        )
    ]
    assert len(problems) == len(real)
