// Drives a hubbub node with the official Azure Web PubSub JavaScript SDKs
// (@azure/web-pubsub for REST, @azure/web-pubsub-client for WebSocket clients)
// and prints ONE JSON line of observations to stdout.
//
// Usage:
//   node scenarios.mjs [--connection-string CS] [--secondary-connection-string CS]
//                      [--hub HUB] <scenario>... | all
//   node scenarios.mjs --list
//
// The connection strings and hub can also come from HUBBUB_CONNECTION_STRING,
// HUBBUB_SECONDARY_CONNECTION_STRING and HUBBUB_HUB. With one scenario the hub is
// used as given; with several, every scenario gets its own hub `<hub>_<scenario>`
// so that scenarios running side by side never see each other's connections.
//
// Output: {"results": {"<scenario>": {"ok": true, "obs": {...}} |
//                                    {"ok": false, "error": "...", "steps": [...]}},
//          "unexpected": [...], "elapsedMs": N}
// Exit status: 0 when every scenario finished, 1 when one failed or timed out,
// 2 on a usage error, 3 when the runner itself crashed.

import process from "node:process";
import { isDeepStrictEqual } from "node:util";
import { WebPubSubServiceClient, odata } from "@azure/web-pubsub";
// WebPubSubClient's default protocol is json.reliable.webpubsub.azure.v1
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

const SCENARIO_TIMEOUT_MS = Number(process.env.HUBBUB_SCENARIO_TIMEOUT_MS ?? 20000);
const WAIT_MS = Number(process.env.HUBBUB_WAIT_MS ?? 8000);
const CONCURRENCY = Number(process.env.HUBBUB_NODE_CONCURRENCY ?? 8);

// Errors nobody awaited (SDK background tasks, event handlers). Reported, never fatal.
const unexpected = [];
process.on("unhandledRejection", (reason) => {
  unexpected.push(`unhandledRejection: ${describe(reason)}`);
});
process.on("uncaughtException", (err) => {
  unexpected.push(`uncaughtException: ${describe(err)}`);
});

// ---------------------------------------------------------------------------------------------
// helpers

function describe(err) {
  if (err instanceof Error) {
    const status = err.statusCode !== undefined ? ` (status ${err.statusCode})` : "";
    const detail = err.errorDetail ? ` ${JSON.stringify(err.errorDetail)}` : "";
    return `${err.name}: ${err.message}${status}${detail}`;
  }
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function b64(bytes) {
  return Buffer.from(bytes).toString("base64");
}

function decodeJwt(token) {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

/** Outcome of a REST call: {ok:true[, value]} or {ok:false, error, statusCode}. */
async function rest(promise) {
  try {
    const value = await promise;
    // operations without a response body resolve to undefined or to an object of undefineds
    const empty = value === undefined || JSON.stringify(value) === "{}";
    return empty ? { ok: true } : { ok: true, value };
  } catch (err) {
    const out = { ok: false, error: err?.name ?? String(err) };
    if (err?.statusCode !== undefined) {
      out.statusCode = err.statusCode;
    }
    return out;
  }
}

/** Outcome of a WebPubSubClient call: {ok:true, isDuplicated} or {ok:false, error, errorDetail}. */
async function op(promise) {
  try {
    const value = await promise;
    return { ok: true, isDuplicated: value?.isDuplicated ?? null };
  } catch (err) {
    return {
      ok: false,
      error: err?.name ?? String(err),
      errorDetail: err?.errorDetail?.name ?? null,
    };
  }
}

/** Normalised data message as the SDK surfaced it (binary → base64 of the ArrayBuffer). */
function dataMessage(m) {
  const out = { from: m.from };
  if (m.from === "group") {
    out.group = m.group;
    out.fromUserId = m.fromUserId ?? null;
  }
  out.dataType = m.dataType;
  if (m.data instanceof ArrayBuffer) {
    out.data = b64(new Uint8Array(m.data));
  } else {
    out.data = m.data;
  }
  out.sequenceId = m.sequenceId ?? null;
  return out;
}

function withoutSeq(ev) {
  const { event: _event, sequenceId: _seq, ...rest } = ev;
  return rest;
}

class Peer {
  constructor(ctx, label, url, options = {}) {
    this.ctx = ctx;
    this.label = label;
    this.url = url;
    this.events = [];
    this.cursor = 0;
    this.connectionId = null;
    this.userId = null;
    this.ids = [];
    this.closeCodes = [];
    this.listeners = new Set();
    // Failing acks must surface at once: no message retries unless a scenario asks for them.
    this.client = new WebPubSubClient(url, { messageRetryOptions: { maxRetries: 0 }, ...options });
    const c = this.client;
    c.on("connected", (e) => {
      this.connectionId = e.connectionId;
      this.userId = e.userId ?? null;
      ctx.labels.set(e.connectionId, label);
      this.push({ event: "connected", connectionId: e.connectionId, userId: e.userId ?? null });
    });
    c.on("disconnected", (e) => {
      // WebSocket close code of the socket whose close made the SDK give up (diagnostic; private field)
      this.closeCodes.push(this.client._lastCloseEvent?.code ?? null);
      this.push({
        event: "disconnected",
        connectionId: e.connectionId ?? null,
        message: e.message?.message ?? null,
      });
    });
    c.on("stopped", () => this.push({ event: "stopped" }));
    c.on("server-message", (e) => this.push({ event: "message", ...dataMessage(e.message) }));
    c.on("group-message", (e) => this.push({ event: "message", ...dataMessage(e.message) }));
    c.on("rejoin-group-failed", (e) => {
      this.push({ event: "rejoin-group-failed", group: e.group, error: describe(e.error) });
    });
  }

  push(ev) {
    this.events.push(ev);
    for (const listener of [...this.listeners]) {
      listener();
    }
  }

  /** Resolve with {event, index} of the first event at or after `from` matching `pred`. */
  waitFor(what, pred, { from = 0, timeoutMs = WAIT_MS } = {}) {
    return new Promise((resolve, reject) => {
      let timer;
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      const check = () => {
        for (let i = from; i < this.events.length; i++) {
          if (pred(this.events[i])) {
            cleanup();
            resolve({ event: this.events[i], index: i });
            return true;
          }
        }
        return false;
      };
      timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `${this.label}: no ${what} within ${timeoutMs} ms; last events: ` +
              JSON.stringify(this.events.slice(-8)),
          ),
        );
      }, timeoutMs);
      if (!check()) {
        this.listeners.add(check);
      }
    });
  }

  async start() {
    const from = this.events.length;
    await this.client.start();
    const { event } = await this.waitFor("connected event", (e) => e.event === "connected", {
      from,
    });
    return event;
  }

  stop() {
    try {
      this.client.stop();
    } catch {
      // already stopped
    }
  }

  /** Connected/disconnected/stopped events, connection ids replaced by c1, c2, ... */
  lifecycle() {
    return this.events
      .filter((e) => e.event !== "message")
      .map((e) => {
        if (!("connectionId" in e)) {
          return e;
        }
        return { ...e, connectionId: this.alias(e.connectionId) };
      });
  }

  alias(connectionId) {
    if (connectionId === null) {
      return null;
    }
    let i = this.ids.indexOf(connectionId);
    if (i < 0) {
      this.ids.push(connectionId);
      i = this.ids.length - 1;
    }
    return `c${i + 1}`;
  }

  messages() {
    return this.events.filter((e) => e.event === "message");
  }

  /** The underlying `ws` socket's negotiated subprotocol (diagnostic only). */
  subprotocol() {
    return this.client._wsClient?._socket?.protocol ?? null;
  }
}

class Context {
  constructor(name, hub, cs, secondaryCs) {
    this.name = name;
    this.hub = hub;
    this.cs = cs;
    this.secondaryCs = secondaryCs;
    this.service = serviceClient(cs, hub);
    this.peers = [];
    this.labels = new Map();
    this.steps = [];
    this.barriers = 0;
  }

  step(text) {
    this.steps.push(text);
  }

  /** Mint a token with the server SDK, connect a WebPubSubClient with it, wait for `connected`. */
  async peer(label, tokenOptions = {}, clientOptions = {}) {
    this.step(`connect ${label}`);
    const token = await this.service.getClientAccessToken(tokenOptions);
    const p = new Peer(this, label, token.url, clientOptions);
    this.peers.push(p);
    await p.start();
    return p;
  }

  label(connectionId) {
    return this.labels.get(connectionId) ?? `unknown:${connectionId}`;
  }

  /**
   * Send a unique text marker to each peer's connection and wait until each got it. Returns,
   * per peer label, the data messages received since the previous barrier (marker excluded),
   * without sequence ids. REST sends to one connection are delivered in order, so anything
   * sent before the barrier and not in the list was not delivered.
   */
  async barrier(peers) {
    this.barriers += 1;
    const marker = `__barrier_${this.barriers}__`;
    this.step(`barrier ${this.barriers}`);
    await Promise.all(
      peers.map((p) => this.service.sendToConnection(p.connectionId, marker, { contentType: "text/plain" })),
    );
    const out = {};
    await Promise.all(
      peers.map(async (p) => {
        const { index } = await p.waitFor(
          `barrier marker ${marker}`,
          (e) => e.event === "message" && e.dataType === "text" && e.data === marker,
          { from: p.cursor },
        );
        out[p.label] = p.events
          .slice(p.cursor, index)
          .filter((e) => e.event === "message")
          .map(withoutSeq);
        p.cursor = index + 1;
      }),
    );
    return out;
  }

  /** Poll `fn` until it returns `expected` (deep equal) or the time is up; return the last value. */
  async eventually(fn, expected, timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    let value = await fn();
    while (!isDeepStrictEqual(value, expected) && Date.now() < deadline) {
      await sleep(50);
      value = await fn();
    }
    return value;
  }

  async listGroup(group, options = {}) {
    const pager = await this.service.group(group).listConnections(options);
    const pages = [];
    for await (const page of pager.byPage()) {
      pages.push(page.map((m) => ({ connection: this.label(m.connectionId), userId: m.userId ?? null })));
    }
    return pages;
  }

  /** Every member id of `group` as listed through `service` (used with a wrongly keyed client). */
  async listGroupWith(service, group) {
    const out = [];
    for await (const m of await service.group(group).listConnections()) {
      out.push(m.connectionId);
    }
    return out;
  }

  async members(group) {
    const pages = await this.listGroup(group);
    return pages
      .flat()
      .map((m) => m.connection)
      .sort();
  }

  close() {
    for (const p of this.peers) {
      p.stop();
    }
  }
}

// core-rest-pipeline refuses plain-http endpoints unless the client opts in; hubbub under test
// listens on http://127.0.0.1.
const SERVICE_OPTIONS = { allowInsecureConnection: true };

function serviceClient(cs, hub) {
  return new WebPubSubServiceClient(cs, hub, SERVICE_OPTIONS);
}

const ALL_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

// ---------------------------------------------------------------------------------------------
// scenarios: server SDK (WebPubSubServiceClient)

const scenarios = {};

scenarios.token_connect = async (ctx) => {
  const token = await ctx.service.getClientAccessToken({
    userId: "alice",
    roles: ["webpubsub.joinLeaveGroup.room", "webpubsub.sendToGroup"],
    groups: ["lobby"],
    expirationTimeInMinutes: 30,
  });
  const claims = decodeJwt(token.token);
  const obs = {
    hub: ctx.hub,
    baseUrl: token.baseUrl,
    urlIsBasePlusToken: token.url === `${token.baseUrl}?access_token=${token.token}`,
    claims: {
      aud: claims.aud,
      sub: claims.sub ?? null,
      role: claims.role ?? null,
      groups: claims["webpubsub.group"] ?? null,
      lifetimeSeconds: claims.exp - claims.iat,
    },
  };
  ctx.step("start client");
  const p = new Peer(ctx, "alice", token.url);
  ctx.peers.push(p);
  const connected = await p.start();
  obs.connected = {
    userId: connected.userId,
    connectionIdIsNonEmptyString:
      typeof connected.connectionId === "string" && connected.connectionId.length > 0,
  };
  obs.subprotocol = p.subprotocol();
  ctx.step("token group and roles");
  obs.lobbyExists = await ctx.service.groupExists("lobby");
  await ctx.service.group("lobby").sendToAll({ hello: "lobby" });
  obs.joinRoom = await op(p.client.joinGroup("room"));
  obs.joinOther = await op(p.client.joinGroup("other"));
  obs.sendToRoom = await op(p.client.sendToGroup("room", "hi room", "text"));
  obs.messages = (await ctx.barrier([p])).alice;
  obs.canJoinRoom = await ctx.service.hasPermission(p.connectionId, "joinLeaveGroup", {
    targetName: "room",
  });
  obs.canJoinOther = await ctx.service.hasPermission(p.connectionId, "joinLeaveGroup", {
    targetName: "other",
  });
  obs.userExists = await ctx.service.userExists("alice");
  return obs;
};

scenarios.send_to_all = async (ctx) => {
  const a = await ctx.peer("a", { userId: "u1" });
  const b = await ctx.peer("b", { userId: "u2" });
  const c = await ctx.peer("c", {});
  const s = ctx.service;
  ctx.step("sends");
  const sends = {
    json: await rest(s.sendToAll({ kind: "json", n: [1, 2, 3], nested: { ok: true }, none: null })),
    text: await rest(s.sendToAll("plain text ✓", { contentType: "text/plain" })),
    buffer: await rest(s.sendToAll(Buffer.from([0, 1, 2, 253, 254, 255]))),
    arrayBuffer: await rest(s.sendToAll(new Uint8Array([9, 8, 7]).buffer)),
    jsonString: await rest(s.sendToAll("a json string")),
    jsonNumber: await rest(s.sendToAll(42)),
    excluded: await rest(s.sendToAll({ step: "excluded" }, { excludedConnections: [b.connectionId] })),
    excludedTwo: await rest(
      s.sendToAll({ step: "excluded-two" }, { excludedConnections: [a.connectionId, c.connectionId] }),
    ),
    filterUser: await rest(s.sendToAll({ step: "filter-u1" }, { filter: odata`userId eq ${"u1"}` })),
    filterNull: await rest(s.sendToAll({ step: "filter-null" }, { filter: odata`userId eq ${null}` })),
  };
  const received = await ctx.barrier([a, b, c]);
  return { sends, received };
};

scenarios.send_to_user = async (ctx) => {
  const a1 = await ctx.peer("a1", { userId: "alice" });
  const a2 = await ctx.peer("a2", { userId: "alice" });
  const b = await ctx.peer("b", { userId: "bob" });
  const s = ctx.service;
  ctx.step("sends");
  const sends = {
    json: await rest(s.sendToUser("alice", { to: "alice" })),
    text: await rest(s.sendToUser("bob", "hi bob", { contentType: "text/plain" })),
    binary: await rest(s.sendToUser("alice", Buffer.from("bin"))),
    unknownUser: await rest(s.sendToUser("nobody", { to: "nobody" })),
    filtered: await rest(
      s.sendToUser("alice", { step: "filtered" }, { filter: odata`connectionId ne ${a1.connectionId}` }),
    ),
  };
  const received = await ctx.barrier([a1, a2, b]);
  return { sends, received };
};

scenarios.send_to_connection = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" });
  const b = await ctx.peer("b", { userId: "alice" });
  const s = ctx.service;
  ctx.step("sends");
  const sends = {
    json: await rest(s.sendToConnection(a.connectionId, { to: "a" })),
    text: await rest(s.sendToConnection(b.connectionId, "text for b", { contentType: "text/plain" })),
    binary: await rest(s.sendToConnection(a.connectionId, new Uint8Array([1, 2, 3]).buffer)),
    unknownConnection: await rest(s.sendToConnection("no-such-connection", { to: "nobody" })),
  };
  const received = await ctx.barrier([a, b]);
  return { sends, received };
};

scenarios.group_send = async (ctx) => {
  const a = await ctx.peer("a", { userId: "u1", groups: ["g"] });
  const b = await ctx.peer("b", { userId: "u2", groups: ["g"] });
  const c = await ctx.peer("c", { userId: "u3", groups: ["g"] });
  const d = await ctx.peer("d", { userId: "u4", groups: ["other"] });
  const g = ctx.service.group("g");
  ctx.step("sends");
  const sends = {
    json: await rest(g.sendToAll({ hello: "g" })),
    text: await rest(g.sendToAll("text to g", { contentType: "text/plain" })),
    binary: await rest(g.sendToAll(Buffer.from([1, 2]))),
    excluded: await rest(
      g.sendToAll({ step: "excluded" }, { excludedConnections: [b.connectionId, c.connectionId] }),
    ),
    filterUser: await rest(g.sendToAll({ step: "filter-u1" }, { filter: odata`userId eq ${"u1"}` })),
    filterNonMember: await rest(
      g.sendToAll({ step: "filter-u4" }, { filter: odata`userId eq ${"u4"}` }),
    ),
    filterAndExcluded: await rest(
      g.sendToAll(
        { step: "filter-and-excluded" },
        { filter: odata`userId ne ${"u1"}`, excludedConnections: [c.connectionId] },
      ),
    ),
    emptyGroup: await rest(ctx.service.group("empty").sendToAll({ step: "empty" })),
  };
  const received = await ctx.barrier([a, b, c, d]);
  return { sends, received };
};

scenarios.group_users = async (ctx) => {
  const a1 = await ctx.peer("a1", { userId: "alice" });
  const a2 = await ctx.peer("a2", { userId: "alice" });
  const b = await ctx.peer("b", { userId: "bob" });
  const team = ctx.service.group("team");
  const obs = {};
  obs.existsBefore = await ctx.service.groupExists("team");
  obs.addAlice = await rest(team.addUser("alice"));
  obs.existsAfterAdd = await ctx.service.groupExists("team");
  obs.membersAfterAdd = await ctx.members("team");
  await team.sendToAll({ n: 1 });
  obs.afterAdd = await ctx.barrier([a1, a2, b]);
  obs.removeAlice = await rest(team.removeUser("alice"));
  obs.existsAfterRemove = await ctx.service.groupExists("team");
  await team.sendToAll({ n: 2 });
  obs.afterRemove = await ctx.barrier([a1, a2, b]);
  obs.addGhost = await rest(team.addUser("ghost"));
  obs.removeGhost = await rest(team.removeUser("ghost"));
  return obs;
};

scenarios.group_connections = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" });
  const b = await ctx.peer("b", { userId: "bob" });
  const g = ctx.service.group("g");
  const obs = {};
  obs.addA = await rest(g.addConnection(a.connectionId));
  obs.addAAgain = await rest(g.addConnection(a.connectionId));
  await g.sendToAll({ n: 1 });
  obs.phase1 = await ctx.barrier([a, b]);
  obs.addB = await rest(g.addConnection(b.connectionId));
  obs.members = await ctx.members("g");
  await g.sendToAll({ n: 2 });
  obs.phase2 = await ctx.barrier([a, b]);
  obs.removeA = await rest(g.removeConnection(a.connectionId));
  await g.sendToAll({ n: 3 });
  obs.phase3 = await ctx.barrier([a, b]);
  obs.addUnknown = await rest(g.addConnection("no-such-connection"));
  obs.removeUnknown = await rest(g.removeConnection("no-such-connection"));
  return obs;
};

scenarios.exists = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice", groups: ["g"] }, { protocol: WebPubSubJsonProtocol() });
  const s = ctx.service;
  const obs = {
    userAlice: await s.userExists("alice"),
    userNobody: await s.userExists("nobody"),
    connectionA: await s.connectionExists(a.connectionId),
    connectionUnknown: await s.connectionExists("no-such-connection"),
    groupG: await s.groupExists("g"),
    groupUnknown: await s.groupExists("no-such-group"),
  };
  ctx.step("remove from group");
  await s.group("g").removeConnection(a.connectionId);
  obs.groupGAfterRemove = await s.groupExists("g");
  ctx.step("stop client");
  const id = a.connectionId;
  a.stop();
  await a.waitFor("stopped", (e) => e.event === "stopped");
  obs.connectionAAfterStop = await ctx.eventually(() => s.connectionExists(id), false);
  obs.userAliceAfterStop = await ctx.eventually(() => s.userExists("alice"), false);
  return obs;
};

scenarios.close_connection = async (ctx) => {
  const r = await ctx.peer("r", { userId: "rel" }, { autoReconnect: false });
  const j = await ctx.peer("j", { userId: "json" }, { autoReconnect: false, protocol: WebPubSubJsonProtocol() });
  const k = await ctx.peer("k", { userId: "keep" });
  const s = ctx.service;
  const obs = {};
  obs.closeR = await rest(s.closeConnection(r.connectionId, { reason: "bye reliable" }));
  obs.closeJ = await rest(s.closeConnection(j.connectionId, { reason: "bye json" }));
  obs.closeUnknown = await rest(s.closeConnection("no-such-connection", { reason: "nobody" }));
  await r.waitFor("stopped", (e) => e.event === "stopped");
  await j.waitFor("stopped", (e) => e.event === "stopped");
  obs.r = r.lifecycle();
  obs.j = j.lifecycle();
  obs.k = k.lifecycle();
  obs.closeCodes = { r: [...r.closeCodes], j: [...j.closeCodes] };
  obs.existsR = await ctx.eventually(() => s.connectionExists(r.connectionId), false);
  obs.existsJ = await ctx.eventually(() => s.connectionExists(j.connectionId), false);
  obs.existsK = await s.connectionExists(k.connectionId);
  obs.kStillReceives = (await ctx.barrier([k])).k;
  return obs;
};

scenarios.close_user_connections = async (ctx) => {
  const a1 = await ctx.peer("a1", { userId: "alice" }, { autoReconnect: false });
  const a2 = await ctx.peer("a2", { userId: "alice" }, { autoReconnect: false });
  const b = await ctx.peer("b", { userId: "bob" }, { autoReconnect: false });
  const s = ctx.service;
  const obs = {};
  obs.close = await rest(s.closeUserConnections("alice", { reason: "alice is out" }));
  obs.closeUnknown = await rest(s.closeUserConnections("nobody", { reason: "nobody" }));
  await a1.waitFor("stopped", (e) => e.event === "stopped");
  await a2.waitFor("stopped", (e) => e.event === "stopped");
  obs.a1 = a1.lifecycle();
  obs.a2 = a2.lifecycle();
  obs.b = b.lifecycle();
  obs.aliceExists = await ctx.eventually(() => s.userExists("alice"), false);
  obs.bobExists = await s.userExists("bob");
  return obs;
};

scenarios.close_all_connections = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" }, { autoReconnect: false });
  const b = await ctx.peer("b", {}, { autoReconnect: false });
  const c = await ctx.peer("c", { userId: "carol" }, { autoReconnect: false, protocol: WebPubSubJsonProtocol() });
  const s = ctx.service;
  const obs = {};
  obs.close = await rest(s.closeAllConnections({ reason: "maintenance" }));
  for (const p of [a, b, c]) {
    await p.waitFor("stopped", (e) => e.event === "stopped");
    obs[p.label] = p.lifecycle();
  }
  obs.existsA = await ctx.eventually(() => s.connectionExists(a.connectionId), false);
  obs.existsB = await ctx.eventually(() => s.connectionExists(b.connectionId), false);
  obs.existsC = await ctx.eventually(() => s.connectionExists(c.connectionId), false);
  return obs;
};

scenarios.group_close_all = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice", groups: ["g"] }, { autoReconnect: false });
  const b = await ctx.peer("b", { userId: "bob", groups: ["g", "h"] }, { autoReconnect: false });
  const c = await ctx.peer("c", { userId: "carol", groups: ["h"] }, { autoReconnect: false });
  const s = ctx.service;
  const obs = {};
  obs.close = await rest(s.group("g").closeAllConnections({ reason: "group closed" }));
  obs.closeEmpty = await rest(s.group("empty").closeAllConnections({ reason: "nobody" }));
  await a.waitFor("stopped", (e) => e.event === "stopped");
  await b.waitFor("stopped", (e) => e.event === "stopped");
  obs.a = a.lifecycle();
  obs.b = b.lifecycle();
  obs.c = c.lifecycle();
  obs.groupG = await ctx.eventually(() => s.groupExists("g"), false);
  obs.membersH = await ctx.eventually(() => ctx.members("h"), ["c"]);
  obs.existsC = await s.connectionExists(c.connectionId);
  return obs;
};

scenarios.permissions = async (ctx) => {
  const a = await ctx.peer("a", { userId: "pa" });
  const s = ctx.service;
  const id = a.connectionId;
  const has = (perm, targetName) => s.hasPermission(id, perm, { targetName });
  const obs = {};
  obs.canJoinGBefore = await has("joinLeaveGroup", "g");
  obs.joinGBefore = await op(a.client.joinGroup("g"));
  obs.grantJoinG = await rest(s.grantPermission(id, "joinLeaveGroup", { targetName: "g" }));
  obs.canJoinG = await has("joinLeaveGroup", "g");
  obs.canJoinH = await has("joinLeaveGroup", "h");
  obs.joinG = await op(a.client.joinGroup("g"));
  obs.joinH = await op(a.client.joinGroup("h"));
  obs.canSendGBefore = await has("sendToGroup", "g");
  obs.sendGBefore = await op(a.client.sendToGroup("g", "before grant", "text"));
  obs.grantSendG = await rest(s.grantPermission(id, "sendToGroup", { targetName: "g" }));
  obs.canSendG = await has("sendToGroup", "g");
  obs.sendG = await op(a.client.sendToGroup("g", "after grant", "text"));
  obs.revokeSendG = await rest(s.revokePermission(id, "sendToGroup", { targetName: "g" }));
  obs.canSendGAfterRevoke = await has("sendToGroup", "g");
  obs.sendGAfterRevoke = await op(a.client.sendToGroup("g", "after revoke", "text"));
  obs.revokeJoinG = await rest(s.revokePermission(id, "joinLeaveGroup", { targetName: "g" }));
  obs.canJoinGAfterRevoke = await has("joinLeaveGroup", "g");
  obs.leaveGAfterRevoke = await op(a.client.leaveGroup("g"));
  obs.stillMemberOfG = await ctx.members("g");
  obs.messages = (await ctx.barrier([a])).a;
  obs.grantUnknown = await rest(
    s.grantPermission("no-such-connection", "sendToGroup", { targetName: "g" }),
  );
  obs.revokeUnknown = await rest(
    s.revokePermission("no-such-connection", "sendToGroup", { targetName: "g" }),
  );
  obs.hasUnknown = await rest(
    s.hasPermission("no-such-connection", "sendToGroup", { targetName: "g" }),
  );
  return obs;
};

scenarios.remove_from_all_groups = async (ctx) => {
  const groups = ["g1", "g2"];
  const a = await ctx.peer("a", { userId: "alice", groups });
  const b = await ctx.peer("b", { userId: "bob", groups });
  const c = await ctx.peer("c", { userId: "carol", groups });
  const s = ctx.service;
  const sendBoth = async (n) => {
    await s.group("g1").sendToAll({ g: 1, n });
    await s.group("g2").sendToAll({ g: 2, n });
  };
  const obs = {};
  obs.removeConnection = await rest(s.removeConnectionFromAllGroups(a.connectionId));
  await sendBoth(1);
  obs.phase1 = await ctx.barrier([a, b, c]);
  obs.removeUser = await rest(s.removeUserFromAllGroups("bob"));
  await sendBoth(2);
  obs.phase2 = await ctx.barrier([a, b, c]);
  obs.membersG1 = await ctx.members("g1");
  obs.membersG2 = await ctx.members("g2");
  obs.removeUnknownUser = await rest(s.removeUserFromAllGroups("ghost"));
  obs.removeUnknownConnection = await rest(s.removeConnectionFromAllGroups("no-such-connection"));
  return obs;
};

scenarios.list_connections = async (ctx) => {
  const members = [];
  for (let i = 0; i < 4; i++) {
    members.push(await ctx.peer(`p${i}`, { userId: `u${i}`, groups: ["big"] }));
  }
  members.push(await ctx.peer("anon", { groups: ["big"] }));
  await ctx.peer("outsider", { userId: "out", groups: ["other"] });
  const obs = {};
  const pages = await ctx.listGroup("big", { maxPageSize: 2 });
  obs.pageSizes = pages.map((page) => page.length);
  obs.paged = pages.flat().sort((x, y) => x.connection.localeCompare(y.connection));
  obs.unpagedCount = (await ctx.listGroup("big")).flat().length;
  const topped = await ctx.listGroup("big", { top: 3, maxPageSize: 2 });
  obs.topPageSizes = topped.map((page) => page.length);
  obs.toppedDistinct = new Set(topped.flat().map((m) => m.connection)).size;
  obs.emptyGroup = await ctx.listGroup("nobody-here");
  const iterated = [];
  for await (const m of await ctx.service.group("big").listConnections({ maxPageSize: 3 })) {
    iterated.push(ctx.label(m.connectionId));
  }
  obs.iterated = iterated.sort();
  return obs;
};

scenarios.add_remove_connections_to_groups = async (ctx) => {
  const a1 = await ctx.peer("a1", { userId: "alice" });
  const a2 = await ctx.peer("a2", { userId: "alice" });
  const b = await ctx.peer("b", { userId: "bob" });
  const c = await ctx.peer("c", {});
  const s = ctx.service;
  const obs = {};
  obs.addAlice = await rest(s.addConnectionsToGroups(["ga", "gb"], odata`userId eq ${"alice"}`));
  obs.membersGa = await ctx.members("ga");
  obs.membersGb = await ctx.members("gb");
  await s.group("ga").sendToAll({ to: "ga", n: 1 });
  await s.group("gb").sendToAll({ to: "gb", n: 1 });
  obs.phase1 = await ctx.barrier([a1, a2, b, c]);
  obs.removeA1 = await rest(
    s.removeConnectionsFromGroups(["ga"], odata`connectionId eq ${a1.connectionId}`),
  );
  obs.addAnonymous = await rest(s.addConnectionsToGroups(["gc"], odata`userId eq ${null}`));
  obs.addInGroup = await rest(s.addConnectionsToGroups(["gd"], `'gb' in groups and userId ne 'nobody'`));
  obs.membersGaAfter = await ctx.members("ga");
  obs.membersGbAfter = await ctx.members("gb");
  obs.membersGc = await ctx.members("gc");
  obs.membersGd = await ctx.members("gd");
  await s.group("ga").sendToAll({ to: "ga", n: 2 });
  await s.group("gc").sendToAll({ to: "gc", n: 2 });
  obs.phase2 = await ctx.barrier([a1, a2, b, c]);
  obs.addNoMatch = await rest(s.addConnectionsToGroups(["ge"], odata`userId eq ${"nobody"}`));
  obs.groupGe = await s.groupExists("ge");
  return obs;
};

scenarios.wrong_key = async (ctx) => {
  const key = /AccessKey=([^;]*)/.exec(ctx.cs)[1];
  const wrongKey = key.split("").reverse().join("") + "x";
  const badCs = ctx.cs.replace(`AccessKey=${key}`, `AccessKey=${wrongKey}`);
  const bad = serviceClient(badCs, ctx.hub);
  const obs = {};
  obs.sendToAll = await rest(bad.sendToAll({ x: 1 }));
  obs.sendToUser = await rest(bad.sendToUser("u", "t", { contentType: "text/plain" }));
  obs.userExists = await rest(bad.userExists("u"));
  obs.groupExists = await rest(bad.groupExists("g"));
  obs.addUser = await rest(bad.group("g").addUser("u"));
  obs.closeAll = await rest(bad.closeAllConnections({ reason: "nope" }));
  obs.listConnections = await rest(ctx.listGroupWith(bad, "g"));
  ctx.step("client with a token signed by the wrong key");
  const token = await bad.getClientAccessToken({ userId: "mallory" });
  const client = new WebPubSubClient(token.url, { autoReconnect: false });
  try {
    await client.start();
    obs.clientStart = { ok: true };
    client.stop();
  } catch (err) {
    obs.clientStart = { ok: false, mentions401: /401/.test(describe(err)) };
  }
  obs.goodKeyStillWorks = await rest(ctx.service.sendToAll({ x: 1 }));
  return obs;
};

scenarios.secondary_key = async (ctx) => {
  const second = serviceClient(ctx.secondaryCs, ctx.hub);
  const token = await second.getClientAccessToken({ userId: "sec" });
  const p = new Peer(ctx, "sec", token.url);
  ctx.peers.push(p);
  const connected = await p.start();
  const obs = { userId: connected.userId };
  obs.send = await rest(second.sendToUser("sec", { via: "secondary" }));
  obs.userExists = await rest(second.userExists("sec"));
  obs.received = (await ctx.barrier([p])).sec;
  return obs;
};

scenarios.names_and_escaping = async (ctx) => {
  const user = "Zoë O'Brien+1";
  const group = "chat room #1 ü";
  const a = await ctx.peer("a", { userId: user, groups: [group] });
  const b = await ctx.peer("b", { userId: "plain" });
  const s = ctx.service;
  const obs = { connectedUserId: a.userId };
  obs.userExists = await s.userExists(user);
  obs.groupExists = await s.groupExists(group);
  obs.members = await ctx.members(group);
  obs.sendToUser = await rest(s.sendToUser(user, { to: "user" }));
  obs.sendToGroup = await rest(s.group(group).sendToAll({ to: "group" }));
  // odata`` doubles the apostrophe inside the quoted literal
  obs.filter = odata`userId eq ${user}`;
  obs.sendFiltered = await rest(s.sendToAll({ to: "filtered" }, { filter: obs.filter }));
  obs.addPlainToGroup = await rest(s.group(group).addUser("plain"));
  obs.membersAfterAdd = await ctx.members(group);
  await s.group(group).sendToAll({ to: "group", n: 2 });
  obs.received = await ctx.barrier([a, b]);
  return obs;
};

scenarios.payloads = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice", roles: ALL_ROLES });
  const s = ctx.service;
  const bigText = "x".repeat(300 * 1024);
  const bigBinary = new Uint8Array(200 * 1024).map((_, i) => i % 251);
  const obs = {};
  obs.ttl = await rest(s.sendToAll({ ttl: 60 }, { messageTtlSeconds: 60 }));
  obs.bigText = await rest(s.sendToConnection(a.connectionId, bigText, { contentType: "text/plain" }));
  obs.bigBinary = await rest(s.sendToConnection(a.connectionId, Buffer.from(bigBinary)));
  obs.emptyText = await rest(s.sendToConnection(a.connectionId, "", { contentType: "text/plain" }));
  obs.join = await op(a.client.joinGroup("g"));
  obs.clientBig = await op(a.client.sendToGroup("g", bigBinary.slice(0, 150 * 1024).buffer, "binary"));
  const received = (await ctx.barrier([a])).a;
  obs.received = received.map((m) => ({
    from: m.from,
    dataType: m.dataType,
    length: typeof m.data === "string" ? m.data.length : null,
    matches:
      (m.dataType === "text" && (m.data === bigText || m.data === "")) ||
      (m.dataType === "binary" &&
        (m.data === b64(bigBinary) || m.data === b64(bigBinary.slice(0, 150 * 1024)))) ||
      (m.dataType === "json" && m.data?.ttl === 60),
  }));
  return obs;
};

scenarios.token_validation = async (ctx) => {
  const tryStart = async (url) => {
    const client = new WebPubSubClient(url, { autoReconnect: false });
    try {
      await client.start();
      client.stop();
      return { ok: true };
    } catch (err) {
      const text = describe(err);
      return { ok: false, status: /\b(\d{3})\b/.exec(text)?.[1] ?? text };
    }
  };
  const s = ctx.service;
  const obs = {};
  const expired = await s.getClientAccessToken({ userId: "late", expirationTimeInMinutes: -1 });
  obs.expiredTokenExpIsPast = decodeJwt(expired.token).exp < Date.now() / 1000;
  obs.expired = await tryStart(expired.url);
  const other = await serviceClient(ctx.cs, `${ctx.hub}_other`).getClientAccessToken({ userId: "x" });
  obs.otherHubToken = await tryStart(`${other.baseUrl.replace(/_other$/, "")}?access_token=${other.token}`);
  const blank = await s.getClientAccessToken({ userId: "x", groups: ["   "] });
  obs.whitespaceGroup = await tryStart(blank.url);
  const fine = await s.getClientAccessToken({ userId: "x", expirationTimeInMinutes: 1 });
  obs.oneMinute = await tryStart(fine.url);
  return obs;
};

// ---------------------------------------------------------------------------------------------
// scenarios: client SDK (WebPubSubClient)

scenarios.client_wildcard_roles = async (ctx) => {
  const a = await ctx.peer("a", {
    userId: "alice",
    roles: ["webpubsub.joinLeaveGroups.chat-*", "webpubsub.sendToGroups.team.**"],
  });
  const obs = {};
  obs.joinChat1 = await op(a.client.joinGroup("chat-1"));
  obs.joinChatDot = await op(a.client.joinGroup("chat.1"));
  obs.joinOther = await op(a.client.joinGroup("other"));
  obs.sendTeamDeep = await op(a.client.sendToGroup("team.a.b", "deep", "text"));
  obs.sendTeam = await op(a.client.sendToGroup("team", "bare", "text"));
  obs.sendChat1 = await op(a.client.sendToGroup("chat-1", "no send role", "text"));
  obs.members = await ctx.members("chat-1");
  return obs;
};

scenarios.client_connected = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" });
  const b = await ctx.peer("b", {});
  const s = ctx.service;
  const obs = {
    a: a.lifecycle(),
    b: b.lifecycle(),
    distinctIds: a.connectionId !== b.connectionId,
    subprotocol: a.subprotocol(),
    hasReconnectionToken: typeof a.client._reconnectionToken === "string" && a.client._reconnectionToken.length > 0,
  };
  for (const n of [1, 2, 3]) {
    await s.sendToConnection(a.connectionId, { n });
  }
  await s.sendToUser("alice", "to alice", { contentType: "text/plain" });
  await ctx.barrier([a, b]);
  obs.sequenceIds = a.messages().map((m) => m.sequenceId);
  obs.messages = a.messages().map(withoutSeq);
  return obs;
};

scenarios.client_join_leave = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice", roles: ["webpubsub.joinLeaveGroup"] });
  const b = await ctx.peer("b", { userId: "bob", roles: ["webpubsub.joinLeaveGroup"] });
  const s = ctx.service;
  const room = s.group("room");
  const obs = {};
  obs.existsBefore = await s.groupExists("room");
  obs.join = await op(a.client.joinGroup("room"));
  obs.joinB = await op(b.client.joinGroup("room"));
  obs.members = await ctx.members("room");
  await room.sendToAll({ n: 1 });
  obs.phase1 = await ctx.barrier([a, b]);
  obs.leave = await op(a.client.leaveGroup("room"));
  obs.leaveB = await op(b.client.leaveGroup("room"));
  obs.existsAfterLeave = await s.groupExists("room");
  await room.sendToAll({ n: 2 });
  obs.phase2 = await ctx.barrier([a, b]);
  obs.joinWithAckId = await op(a.client.joinGroup("again", { ackId: 1000 }));
  obs.joinSameAckId = await op(a.client.joinGroup("again", { ackId: 1000 }));
  obs.leaveNotJoined = await op(a.client.leaveGroup("never-joined"));
  obs.membersAgain = await ctx.members("again");
  return obs;
};

scenarios.client_send_to_group = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice", roles: ALL_ROLES });
  const b = await ctx.peer("b", { userId: "bob", roles: ALL_ROLES });
  const c = await ctx.peer("c", { userId: "carol", roles: ["webpubsub.sendToGroup"] });
  const obs = {};
  obs.joinA = await op(a.client.joinGroup("chat"));
  obs.joinB = await op(b.client.joinGroup("chat"));
  obs.sends = {
    jsonEcho: await op(a.client.sendToGroup("chat", { hello: "json", list: [1, "two"] }, "json")),
    textNoEcho: await op(a.client.sendToGroup("chat", "text, no echo", "text", { noEcho: true })),
    binaryEcho: await op(b.client.sendToGroup("chat", new Uint8Array([1, 2, 3, 4]).buffer, "binary")),
    binaryNoEcho: await op(
      b.client.sendToGroup("chat", new Uint8Array([255]).buffer, "binary", { noEcho: true }),
    ),
    textEchoExplicit: await op(a.client.sendToGroup("chat", "explicit echo", "text", { noEcho: false })),
    jsonNumber: await op(a.client.sendToGroup("chat", 7, "json", { noEcho: true })),
    fireAndForget: await op(b.client.sendToGroup("chat", { faf: true }, "json", { fireAndForget: true })),
    // nothing acknowledges a fire-and-forget send: wait for it so the next send cannot overtake it
    fafArrived: (await a.waitFor("fire-and-forget message", (e) => e.data?.faf === true)).event.from,
    fromNonMember: await op(c.client.sendToGroup("chat", "from outside", "text")),
  };
  obs.received = await ctx.barrier([a, b, c]);
  return obs;
};

scenarios.client_send_event = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" });
  const obs = {};
  obs.sendEvent = await op(a.client.sendEvent("greet", { hello: "handler" }, "json"));
  obs.sendEventText = await op(a.client.sendEvent("greet", "text", "text"));
  obs.fireAndForget = await op(a.client.sendEvent("greet", { faf: true }, "json", { fireAndForget: true }));
  obs.stillConnected = await ctx.service.connectionExists(a.connectionId);
  obs.stillReceives = (await ctx.barrier([a])).a;
  obs.lifecycle = a.lifecycle();
  return obs;
};

scenarios.client_forbidden = async (ctx) => {
  const a = await ctx.peer("a", { userId: "alice" });
  const b = await ctx.peer("b", {
    userId: "bob",
    roles: ["webpubsub.joinLeaveGroup.g1", "webpubsub.sendToGroup.g1"],
  });
  const obs = {};
  obs.noRoleJoin = await op(a.client.joinGroup("g1"));
  obs.noRoleLeave = await op(a.client.leaveGroup("g1"));
  obs.noRoleSend = await op(a.client.sendToGroup("g1", "nope", "text"));
  obs.scopedJoinG1 = await op(b.client.joinGroup("g1"));
  obs.scopedJoinG2 = await op(b.client.joinGroup("g2"));
  obs.scopedSendG1 = await op(b.client.sendToGroup("g1", "yes", "text"));
  obs.scopedSendG2 = await op(b.client.sendToGroup("g2", "no", "text"));
  obs.membersG1 = await ctx.members("g1");
  obs.received = await ctx.barrier([a, b]);
  obs.lifecycleA = a.lifecycle();
  return obs;
};

scenarios.client_json_protocol = async (ctx) => {
  const options = { protocol: WebPubSubJsonProtocol() };
  const a = await ctx.peer("a", { userId: "alice", roles: ALL_ROLES }, options);
  const b = await ctx.peer("b", { userId: "bob", roles: ALL_ROLES }, options);
  const obs = {
    a: a.lifecycle(),
    subprotocol: a.subprotocol(),
    hasReconnectionToken: a.client._reconnectionToken !== undefined && a.client._reconnectionToken !== null,
  };
  obs.joinA = await op(a.client.joinGroup("g"));
  obs.joinB = await op(b.client.joinGroup("g"));
  obs.send = await op(a.client.sendToGroup("g", { from: "a" }, "json"));
  obs.sendNoEcho = await op(b.client.sendToGroup("g", "from b", "text", { noEcho: true }));
  await ctx.service.sendToAll(Buffer.from("server"));
  await ctx.service.group("g").sendToAll("group text", { contentType: "text/plain" });
  obs.received = await ctx.barrier([a, b]);
  obs.sequenceIds = [...new Set([...a.messages(), ...b.messages()].map((m) => m.sequenceId))];
  obs.sendEvent = await op(a.client.sendEvent("ev", { x: 1 }, "json"));
  obs.forbidden = await op(
    (await ctx.peer("c", { userId: "carol" }, options)).client.joinGroup("g"),
  );
  return obs;
};

scenarios.client_stop = async (ctx) => {
  const r = await ctx.peer("r", { userId: "rel" });
  const j = await ctx.peer("j", { userId: "json" }, { protocol: WebPubSubJsonProtocol() });
  const s = ctx.service;
  const obs = {};
  const rid = r.connectionId;
  const jid = j.connectionId;
  r.stop();
  j.stop();
  await r.waitFor("stopped", (e) => e.event === "stopped");
  await j.waitFor("stopped", (e) => e.event === "stopped");
  obs.r = r.lifecycle();
  obs.j = j.lifecycle();
  obs.closeCodes = { r: [...r.closeCodes], j: [...j.closeCodes] };
  obs.existsJ = await ctx.eventually(() => s.connectionExists(jid), false);
  // Diagnostic only: the spec allows a reliable session to outlive its socket for recovery.
  obs.existsRDiagnostic = await ctx.eventually(() => s.connectionExists(rid), false, 1000);
  ctx.step("restart the stopped json client");
  await j.start();
  obs.jAfterRestart = j.lifecycle();
  return obs;
};

scenarios.client_anonymous_and_url_forms = async (ctx) => {
  const wsBase = ctx.service.endpoint.replace(/^http/, "ws").replace(/\/$/, "");
  const obs = {};
  // hub `anon` allows connections without a token
  const anon = new Peer(ctx, "anon", `${wsBase}/client/hubs/anon`);
  ctx.peers.push(anon);
  await anon.start();
  obs.anon = anon.lifecycle();
  obs.anonSubprotocol = anon.subprotocol();
  // this scenario's hub denies anonymous connects: the handshake is refused with 401
  const denied = new WebPubSubClient(`${wsBase}/client/hubs/${ctx.hub}`, { autoReconnect: false });
  try {
    await denied.start();
    obs.noToken = { ok: true };
    denied.stop();
  } catch (err) {
    obs.noToken = { ok: false, mentions401: /401/.test(describe(err)) };
  }
  // the hub can also be given as a query parameter: /client/?hub=<hub>
  const token = await ctx.service.getClientAccessToken({ userId: "q" });
  const query = new Peer(ctx, "query", `${wsBase}/client/?hub=${ctx.hub}&access_token=${token.token}`);
  ctx.peers.push(query);
  await query.start();
  obs.query = query.lifecycle();
  await ctx.service.sendToUser("q", { via: "query url" });
  obs.queryReceived = (await ctx.barrier([query])).query;
  return obs;
};

scenarios.client_keepalive = async (ctx) => {
  // The SDK pings every 200 ms and closes its socket when nothing arrives for 1500 ms,
  // so the connection survives only if the service answers the pings.
  const a = await ctx.peer("a", { userId: "alice" }, { keepAliveIntervalInMs: 200, keepAliveTimeoutInMs: 1500 });
  await sleep(3500);
  const obs = { lifecycle: a.lifecycle() };
  obs.received = (await ctx.barrier([a])).a;
  return obs;
};

async function restCloseReconnect(ctx, clientOptions) {
  const a = await ctx.peer("a", { userId: "alice", roles: ["webpubsub.joinLeaveGroup"] }, clientOptions);
  const s = ctx.service;
  const obs = {};
  obs.join = await op(a.client.joinGroup("room"));
  const first = a.connectionId;
  obs.close = await rest(s.closeConnection(first, { reason: "kicked" }));
  ctx.step("wait for reconnect");
  await a.waitFor("a second connected event", (e) => e.event === "connected" && e.connectionId !== first);
  obs.lifecycle = a.lifecycle();
  obs.closeCodes = [...a.closeCodes];
  obs.existsOld = await ctx.eventually(() => s.connectionExists(first), false);
  obs.existsNew = await s.connectionExists(a.connectionId);
  obs.userId = a.userId;
  // autoRejoinGroups: the group joined with joinGroup() is joined again on the new connection
  obs.membersRoom = await ctx.eventually(() => ctx.members("room"), ["a"]);
  await s.group("room").sendToAll({ after: "reconnect" });
  obs.afterReconnect = (await ctx.barrier([a])).a;
  return obs;
}

scenarios.client_rest_close_reconnect = (ctx) => restCloseReconnect(ctx, {});

scenarios.client_json_rest_close_reconnect = (ctx) =>
  restCloseReconnect(ctx, { protocol: WebPubSubJsonProtocol() });

// ---------------------------------------------------------------------------------------------
// runner

function parseArgs(argv) {
  const opts = {
    cs: process.env.HUBBUB_CONNECTION_STRING,
    secondaryCs: process.env.HUBBUB_SECONDARY_CONNECTION_STRING,
    hub: process.env.HUBBUB_HUB,
    names: [],
    list: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--connection-string") {
      opts.cs = argv[++i];
    } else if (arg === "--secondary-connection-string") {
      opts.secondaryCs = argv[++i];
    } else if (arg === "--hub") {
      opts.hub = argv[++i];
    } else if (arg === "--list") {
      opts.list = true;
    } else if (arg.startsWith("--")) {
      throw new Error(`unknown option ${arg}`);
    } else {
      opts.names.push(arg);
    }
  }
  return opts;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function runScenario(name, hub, opts) {
  const ctx = new Context(name, hub, opts.cs, opts.secondaryCs ?? opts.cs);
  try {
    const obs = await withTimeout(scenarios[name](ctx), SCENARIO_TIMEOUT_MS, `scenario ${name}`);
    return { ok: true, obs };
  } catch (err) {
    return { ok: false, error: describe(err), steps: ctx.steps };
  } finally {
    ctx.close();
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  if (opts.list) {
    process.stdout.write(`${JSON.stringify(Object.keys(scenarios))}\n`);
    return 0;
  }
  let names = opts.names;
  if (names.length === 1 && names[0] === "all") {
    names = Object.keys(scenarios);
  }
  const unknown = names.filter((n) => !(n in scenarios));
  if (!opts.cs || !opts.hub || names.length === 0 || unknown.length > 0) {
    process.stderr.write(
      "usage: node scenarios.mjs --connection-string CS --hub HUB <scenario>...|all\n" +
        (unknown.length ? `unknown scenario(s): ${unknown.join(", ")}\n` : "") +
        `scenarios: ${Object.keys(scenarios).join(", ")}\n`,
    );
    return 2;
  }
  const started = Date.now();
  const results = {};
  const queue = [...names];
  const worker = async () => {
    while (queue.length > 0) {
      const name = queue.shift();
      const hub = names.length === 1 ? opts.hub : `${opts.hub}_${name}`;
      results[name] = await runScenario(name, hub, opts);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, CONCURRENCY) }, worker));
  const failed = names.filter((n) => !results[n].ok);
  for (const n of failed) {
    process.stderr.write(`scenario ${n} failed: ${results[n].error}\n`);
  }
  const line = JSON.stringify({ results, unexpected, elapsedMs: Date.now() - started });
  await new Promise((resolve) => process.stdout.write(`${line}\n`, resolve));
  return failed.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`fatal: ${describe(err)}\n${err?.stack ?? ""}\n`);
    process.exit(3);
  },
);
