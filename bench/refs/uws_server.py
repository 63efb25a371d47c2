"""uWebSockets pub/sub reference server (via socketify), for ``bench/run.py``.

It speaks the small protocol the harness uses for every reference server:

* WebSocket ``/client/hubs/{hub}?group=G&user=U``: the connection subscribes to group ``G`` and
  to user ``U`` (both optional). The first offered subprotocol is accepted.
* A client text message ``{"type":"sendToGroup","group":G,"data":...}`` is published to ``G``.
* A connection opened with ``?echo=1`` gets every frame it sends echoed back as it came: the
  in-process counterpart of hubbub's echo through an upstream handler (scenario f).
* ``POST /api/hubs/{hub}/groups/{G}/:send`` and ``POST /api/hubs/{hub}/users/{U}/:send``
  publish the request body; the answer is 202. ``HEAD/GET /api/health`` answers 200.

Every publication is the same envelope hubbub sends:
``{"type":"message","from":"group","group":G,"dataType":"json","data":...}`` for group sends
(REST or client), ``{"type":"message","from":"server","dataType":"json","data":...}`` for user
sends, built once and handed to uWS's topic publish.

Usage: ``python bench/refs/uws_server.py PORT``
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from socketify import App, AppListenOptions, CompressOptions, OpCode

MAX_BACKPRESSURE = 4 * 1024 * 1024


def group_envelope(group: str, data: bytes) -> bytes:
    head = b'{"type":"message","from":"group","group":' + json.dumps(group).encode()
    return head + b',"dataType":"json","data":' + data + b"}"


def server_envelope(data: bytes) -> bytes:
    return b'{"type":"message","from":"server","dataType":"json","data":' + data + b"}"


def main() -> None:
    port = int(sys.argv[1])
    app = App()
    in_flight: set[Any] = set()

    def upgrade(res: Any, req: Any, context: Any) -> None:
        key = req.get_header("sec-websocket-key")
        offered = req.get_header("sec-websocket-protocol") or ""
        protocol = offered.split(",")[0].strip()
        query = parse_qs(urlsplit(req.get_full_url()).query)
        group = query.get("group", [""])[0]
        user = query.get("user", [""])[0]
        echo = "echo" in query
        data = (group, user, echo) if group or user or echo else None
        res.upgrade(key, protocol, "", context, data)

    def on_open(ws: Any) -> None:
        data = ws.get_user_data()
        if data is None:
            return
        group, user, _ = data
        if group:
            ws.subscribe("g:" + group)
        if user:
            ws.subscribe("u:" + user)

    def on_message(ws: Any, message: str | bytes, opcode: Any) -> None:
        data = ws.get_user_data()
        if data is not None and data[2]:
            ws.send(message, opcode)
            return
        raw = message.encode() if isinstance(message, str) else message
        msg = json.loads(raw)
        if msg.get("type") == "sendToGroup":
            group = msg["group"]
            data = json.dumps(msg.get("data"), separators=(",", ":")).encode()
            app.publish("g:" + group, group_envelope(group, data), OpCode.TEXT)

    app.ws(
        "/*",
        {
            "compression": CompressOptions.DISABLED,
            "max_payload_length": 1024 * 1024,
            "max_backpressure": MAX_BACKPRESSURE,
            "idle_timeout": 120,
            "send_pings_automatically": True,
            "upgrade": upgrade,
            "open": on_open,
            "message": on_message,
        },
    )

    def health(res: Any, req: Any) -> None:
        res.end("")

    def send(res: Any, req: Any) -> None:
        parts = unquote(req.get_url()).split("/")
        # ['', 'api', 'hubs', hub, 'groups'|'users', name, ':send']
        if len(parts) != 7 or parts[6] != ":send" or parts[4] not in ("groups", "users"):
            res.write_status(404).end("")
            return
        topic = ("g:" if parts[4] == "groups" else "u:") + parts[5]
        group = parts[5] if parts[4] == "groups" else None
        chunks: list[bytes] = []

        def on_data(res: Any, chunk: bytes | None, is_end: bool) -> None:
            if chunk:
                chunks.append(chunk)
            if is_end:
                body = b"".join(chunks)
                envelope = group_envelope(group, body) if group else server_envelope(body)
                app.publish(topic, envelope, OpCode.TEXT)
                res.write_status(202).end("")
                in_flight.discard(res)

        # socketify's native callbacks reach the response through a handle: keep it alive.
        in_flight.add(res)
        res.on_aborted(in_flight.discard)
        res.on_data(on_data)

    app.get("/api/health", health)
    app.head("/api/health", health)
    app.post("/api/*", send)
    app.listen(
        AppListenOptions(port=port, host="127.0.0.1"), lambda config: print("ready", flush=True)
    )
    app.run()


if __name__ == "__main__":
    main()
