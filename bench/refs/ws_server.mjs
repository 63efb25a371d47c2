// Node.js `ws` broadcast reference server for bench/run.py: the server most teams would write.
//
// Same protocol as bench/refs/uws_server.py:
//   WebSocket /client/hubs/{hub}?group=G&user=U  subscribes to group G and user U (optional);
//   a client text message {"type":"sendToGroup","group":G,"data":...} is broadcast to G;
//   POST /api/hubs/{hub}/groups/{G}/:send and /api/hubs/{hub}/users/{U}/:send broadcast the body
//   (202); HEAD/GET /api/health answers 200.
// Each publication is serialized once and sent with ws.send() to every subscriber.
// A connection opened with ?echo=1 gets every frame it sends echoed back as it came (text or
// binary): the in-process counterpart of hubbub's echo through an upstream handler (scenario f).
//
// Usage: node bench/refs/ws_server.mjs PORT

import http from "node:http";
import { WebSocketServer } from "ws";

const port = Number(process.argv[2]);
const topics = new Map();

function subscribe(topic, ws) {
  let set = topics.get(topic);
  if (!set) {
    set = new Set();
    topics.set(topic, set);
  }
  set.add(ws);
}

function unsubscribe(topic, ws) {
  const set = topics.get(topic);
  if (set) {
    set.delete(ws);
    if (set.size === 0) topics.delete(topic);
  }
}

function broadcast(topic, text) {
  const set = topics.get(topic);
  if (!set) return;
  for (const ws of set) ws.send(text);
}

const server = http.createServer((req, res) => {
  const path = decodeURIComponent(req.url.split("?")[0]);
  if (path === "/api/health") {
    res.writeHead(200).end();
    return;
  }
  const parts = path.split("/"); // ['', 'api', 'hubs', hub, 'groups'|'users', name, ':send']
  if (req.method !== "POST" || parts.length !== 7 || parts[6] !== ":send") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const data = JSON.parse(Buffer.concat(chunks).toString());
    if (parts[4] === "groups") {
      const group = parts[5];
      broadcast("g:" + group, JSON.stringify({ type: "message", from: "group", group, dataType: "json", data }));
    } else {
      broadcast("u:" + parts[5], JSON.stringify({ type: "message", from: "server", dataType: "json", data }));
    }
    res.writeHead(202).end();
  });
});

const wss = new WebSocketServer({
  server,
  perMessageDeflate: false,
  handleProtocols: (protocols) => protocols.values().next().value ?? false,
});

wss.on("connection", (ws, req) => {
  const query = new URL(req.url, "http://localhost").searchParams;
  const group = query.get("group");
  const user = query.get("user");
  if (query.get("echo") !== null) {
    ws.on("message", (raw, isBinary) => ws.send(raw, { binary: isBinary }));
    return;
  }
  if (group) subscribe("g:" + group, ws);
  if (user) subscribe("u:" + user, ws);
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw.toString());
    if (msg.type === "sendToGroup") {
      const g = msg.group;
      broadcast("g:" + g, JSON.stringify({ type: "message", from: "group", group: g, dataType: "json", data: msg.data }));
    }
  });
  ws.on("close", () => {
    if (group) unsubscribe("g:" + group, ws);
    if (user) unsubscribe("u:" + user, ws);
  });
});

server.listen(port, "127.0.0.1", 511, () => console.log("ready"));
