"""Legacy-unicast mDNS address queries and their answers (RFC 6762 §6.7), as bytes.

The Enapter SDK resolves `*.local` hosts with dnspython, which sends a one-shot query from an
ephemeral port to 224.0.0.251:5353 and accepts only a plain unicast-DNS answer. python-zeroconf
answers it too, but attaches an NSEC record with a compressed name (legal in mDNS, not in unicast
DNS), which dnspython >= 2.9.1 rejects without a word (`mdns-legacy-unicast.md`). This module builds
an answer dnspython accepts: the ID and question echoed, one A record, TTL 10 s, nothing else.
Pure: no sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

MDNS_PORT = 5353
# RFC 6762 §6.7: legacy-unicast answers SHOULD carry a TTL no greater than ten seconds.
LEGACY_TTL_S = 10

_HEADER = struct.Struct("!6H")
_QUESTION_TAIL = struct.Struct("!HH")
_ANSWER = struct.Struct("!HHIH")  # type, class, TTL, data length
_TYPE_A = 1
_TYPE_ANY = 255
_CLASS_IN = 1
_UNICAST_RESPONSE_BIT = 0x8000  # the top bit of a question's class (RFC 6762 §5.4)
_FLAG_RESPONSE = 0x8000
_OPCODE_MASK = 0x7800
_FLAG_AUTHORITATIVE = 0x0400
_FLAG_RECURSION_DESIRED = 0x0100
_POINTER_TO_QUESTION_NAME = b"\xc0\x0c"  # the question's name starts right after the 12-byte header
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class AddressQuery:
    """A one-question query for the A record (or ANY) of a name."""

    id: int
    recursion_desired: bool
    name: str  # lower case, without the trailing dot
    question: bytes  # the question section as it came, echoed in the answer


def parse_address_query(data: bytes) -> AddressQuery | None:
    """The A/ANY question of a standard query with exactly one question; None for anything else.

    Never raises: whatever arrives on the multicast group is either this or ignored.
    """
    if len(data) < _HEADER.size:
        return None
    query_id, flags, questions, _answers, _authority, _additional = _HEADER.unpack_from(data)
    if flags & (_FLAG_RESPONSE | _OPCODE_MASK) or questions != 1:
        return None
    labels: list[str] = []
    offset = _HEADER.size
    while True:
        if offset >= len(data):
            return None
        length = data[offset]
        offset += 1
        if length == 0:
            break
        # A compression pointer (0xC0) or a reserved label type: the only name in a one-question
        # query cannot point anywhere, so this is not a query we answer.
        if length > 63 or offset + length > len(data):
            return None
        label = data[offset : offset + length]
        offset += length
        try:
            labels.append(label.decode("ascii").lower())
        except UnicodeDecodeError:
            return None
    if offset + _QUESTION_TAIL.size > len(data) or offset > _MAX_NAME_LENGTH + _HEADER.size:
        return None
    qtype, qclass = _QUESTION_TAIL.unpack_from(data, offset)
    if qtype not in (_TYPE_A, _TYPE_ANY) or qclass & ~_UNICAST_RESPONSE_BIT != _CLASS_IN:
        return None
    end = offset + _QUESTION_TAIL.size
    return AddressQuery(
        id=query_id,
        recursion_desired=bool(flags & _FLAG_RECURSION_DESIRED),
        name=".".join(labels),
        question=data[_HEADER.size : end],
    )


def address_answer(query: AddressQuery, address: IPv4Address) -> bytes:
    """The answer to `query`: its ID and question, and one A record for `address`."""
    flags = _FLAG_RESPONSE | _FLAG_AUTHORITATIVE
    if query.recursion_desired:
        flags |= _FLAG_RECURSION_DESIRED
    return b"".join(
        (
            _HEADER.pack(query.id, flags, 1, 1, 0, 0),
            query.question,
            _POINTER_TO_QUESTION_NAME,
            # No cache-flush bit: that is for multicast answers only (RFC 6762 §10.2).
            _ANSWER.pack(_TYPE_A, _CLASS_IN, LEGACY_TTL_S, 4),
            address.packed,
        )
    )
