"""Every size and count limit of the service, in one place (client-protocols.md §4, §10).

Where the service documents a limit, the value is the service's; where it does not, the value
is ours and says so. Transport tuning (read buffers, flush timing) stays with its transport.
"""

from __future__ import annotations

__all__ = [
    "ACK_CACHE_SIZE",
    "HOLD_BYTES",
    "MAX_FILTER_CLAUSES",
    "MAX_FILTER_DEPTH",
    "MAX_GROUP_NAME_LENGTH",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_INT32",
    "MAX_LANE_HEAD_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_PAGE_SIZE",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_STARS",
    "MAX_REST_BODY_BYTES",
    "MAX_TTL_SECONDS",
    "MAX_UNACKED_BYTES",
    "MAX_UNACKED_MESSAGES",
    "MAX_URL_BYTES",
]

# -- messages ---------------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 1024 * 1024
"""One client message may be at most 1 MB (§10); a bigger one closes 1009."""
MAX_REST_BODY_BYTES = 1024 * 1024
"""Largest REST message body (the service's limit is undocumented; 1 MB like client messages)."""
MAX_TTL_SECONDS = 300
"""Largest ``messageTtlSeconds`` of the REST sends."""
MAX_INT32 = 2**31 - 1
"""Largest ``top`` of a listing and ``minutesToExpire`` of a token: the SDKs' int32 values."""

# -- HTTP requests (the sizes are explained in hubbub.server.limits) ---------------------------

MAX_URL_BYTES = 64 * 1024
"""Longest request target (path and query)."""
MAX_HEADER_BYTES = 96 * 1024
"""Longest header, name and value: ``Authorization`` for a URL of :data:`MAX_URL_BYTES` is 88 kB."""
MAX_HEADERS = 64
"""Most headers in one request (the SDKs send about 10; aiohttp's default is 128)."""
MAX_HEAD_BYTES = 160 * 1024
"""Longest request head, request line and every header together (what a client can make a
connection hold before it is authenticated): a URL of :data:`MAX_URL_BYTES` and its 88 kB
``Authorization`` fit, with room for the other headers."""
MAX_LANE_HEAD_BYTES = 16 * 1024
"""Longest request head the REST fast lane reads; a longer one is aiohttp's to judge. Below the
size limits above, so the lane never serves a request too long for aiohttp (it does not count
headers, though: a send with more than :data:`MAX_HEADERS` small ones is the lane's)."""
HOLD_BYTES = 64 * 1024
"""What a connection may send while its upgrade waits for the ``connect`` event, before the
server stops reading from it (as much as aiohttp keeps behind an upgrade request)."""

# -- reliable sessions (§4) -------------------------------------------------------------------

MAX_UNACKED_MESSAGES = 1000
"""Unacknowledged messages a reliable session keeps; one more makes it unrecoverable."""
MAX_UNACKED_BYTES = 16 * 1024 * 1024
"""Unacknowledged bytes a reliable session keeps; more makes it unrecoverable."""
ACK_CACHE_SIZE = 4096
"""Processed ackIds remembered per connection for ``Duplicate`` (spec: size unconfirmed)."""

# -- names, roles, filters --------------------------------------------------------------------

MAX_GROUP_NAME_LENGTH = 1024
"""Longest group name (§10); longer literal roles can never match and are ignored."""
MAX_PATTERN_LENGTH = 1024
"""Longest accepted role pattern, as long as the longest group name (§7)."""
MAX_PATTERN_STARS = 5
"""Most ``*`` characters in one role pattern; each ``*`` of a ``**`` counts (§7)."""
MAX_FILTER_CLAUSES = 100
"""Most atomic predicates an OData filter may hold (rest-api.md §6 "Size limit": about 100)."""
MAX_FILTER_DEPTH = 32
"""Deepest nesting of parentheses, ``not`` and function calls in a filter (ours; bounds
parser recursion)."""

# -- listings ---------------------------------------------------------------------------------

MAX_PAGE_SIZE = 200
"""Largest ``maxpagesize`` of a paged listing (rest-api.md §4.6), and its default."""
