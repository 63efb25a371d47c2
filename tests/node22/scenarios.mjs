// Drives a hubbub node with the newest official JavaScript SDKs, under Node 22:
// @azure/web-pubsub-client 1.1.0 (group streams, invokeEvent with abort, the exported JSON
// protocol for group state) and @azure/web-pubsub 1.2.0 (REST). Written as an application
// developer writes against the public API; prints ONE JSON line of what the SDKs surfaced.
//
// Usage: node scenarios.mjs [--list] <scenario>...
// Environment: HUBBUB_CONNECTION_STRING, HUBBUB_HUB (prefix: each scenario uses the hub
// `<prefix>_<scenario>`), HUBBUB_UPSTREAM (URL of upstream_app.mjs, for the scenarios that
// need an event handler).
// Output: {"results": {"<scenario>": {"ok": true, "obs": {...}} | {"ok": false, "error": "..."}},
//          "unexpected": [...]}

import process from "node:process";
import { WebSocket } from "ws";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";

const SCENARIO_TIMEOUT_MS = 25000;
const WAIT_MS = 8000;
const connectionString = process.env.HUBBUB_CONNECTION_STRING;
const hubPrefix = process.env.HUBBUB_HUB ?? "node22";
const upstream = process.env.HUBBUB_UPSTREAM;

const unexpected = [];
process.on("unhandledRejection", (reason) => unexpected.push(`unhandledRejection: ${describe(reason)}`));
process.on("uncaughtException", (err) => unexpected.push(`uncaughtException: ${describe(err)}`));

function describe(err) {
  if (err instanceof Error) {
    return `${err.name}: ${err.message}`;
  }
  return typeof err === "string" ? err : JSON.stringify(err);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function b64(buffer) {
  return Buffer.from(buffer).toString("base64");
}

function plain(data) {
  return data instanceof ArrayBuffer ? { base64: b64(data) } : data;
}

function service(hub, options = {}) {
  return new WebPubSubServiceClient(connectionString, hub, {
    allowInsecureConnection: true,
    ...options,
  });
}

async function url(hub, userId, roles) {
  return (await service(hub).getClientAccessToken({ userId, roles })).url;
}

const EVERYTHING = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** A started WebPubSubClient whose group and server messages are collected. */
async function client(hub, userId, roles = EVERYTHING, options = {}) {
  const c = new WebPubSubClient(await url(hub, userId, roles), {
    messageRetryOptions: { maxRetries: 0 },
    ...options,
  });
  c.messages = [];
  c.on("group-message", (e) => c.messages.push(e.message));
  c.on("server-message", (e) => c.messages.push(e.message));
  c.on("connected", (e) => {
    c.myConnectionId = e.connectionId;
  });
  await c.start();
  return c;
}

async function until(what, predicate, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await predicate();
    if (value) {
      return value;
    }
    await sleep(25);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

/** Everything an onGroupStream subscription saw: per stream, its fragments and its end. */
function collectStreams(receiver, groupNames) {
  const streams = new Map();
  const done = [];
  receiver.onGroupStream(
    async (stream) => {
      const entry = { fragments: [], error: null, completed: false };
      streams.set(stream.streamId, entry);
      try {
        for await (const fragment of stream) {
          entry.fragments.push({
            seq: fragment.stream.streamSequenceId,
            dataType: fragment.dataType,
            data: plain(fragment.data),
            fromUserId: fragment.fromUserId ?? null,
          });
        }
        entry.completed = true;
      } catch (err) {
        entry.error = { name: err?.name ?? null, message: err?.message ?? null };
        if (err?.userErrorCode !== undefined) {
          entry.error.userErrorCode = err.userErrorCode;
        }
      }
      done.push(stream.streamId);
    },
    { groupNames },
  );
  return {
    streams,
    async ended(count) {
      await until(`${count} ended stream(s)`, () => done.length >= count);
      return Object.fromEntries(streams);
    },
  };
}

/** null when the promise resolves, else what the SDK's error says. */
async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    const seen = { name: err?.name ?? null, message: err?.message ?? null };
    if (err?.errorDetail !== undefined) {
      seen.errorDetail = err.errorDetail;
    }
    return seen;
  }
}

// --------------------------------------------------------------------------------------------
// a raw WebSocket speaking the SDK's exported JSON protocol (group state has no client method
// in 1.1.0: the protocol object writes and parses its frames)

class ProtocolSocket {
  constructor(address, protocol) {
    this.protocol = protocol;
    this.messages = [];
    this.socket = new WebSocket(address, protocol.name);
    this.nextAckId = 1;
  }

  async open() {
    this.socket.on("message", (data) => {
      const parsed = this.protocol.parseMessages(data.toString());
      for (const m of Array.isArray(parsed) ? parsed : parsed ? [parsed] : []) {
        this.messages.push(m);
      }
    });
    await new Promise((resolve, reject) => {
      this.socket.once("open", resolve);
      this.socket.once("error", reject);
    });
    return (await this.next("connected", (m) => m.kind === "connected")).connectionId;
  }

  send(message) {
    this.socket.send(this.protocol.writeMessage(message));
  }

  /** Send with a fresh ackId and return the ack's {success, error}. */
  async acked(message) {
    const ackId = this.nextAckId++;
    this.send({ ...message, ackId });
    const ack = await this.next(`ack ${ackId}`, (m) => m.kind === "ack" && m.ackId === ackId);
    return ack.success ? { success: true } : { success: false, error: ack.error?.name ?? null };
  }

  async next(what, predicate) {
    const found = await until(what, () => {
      const index = this.messages.findIndex(predicate);
      return index >= 0 ? this.messages.splice(index, 1) : null;
    });
    return found[0];
  }

  close() {
    this.socket.close(1000);
  }
}

async function protocolSocket(hub, userId, roles) {
  const socket = new ProtocolSocket(await url(hub, userId, roles), WebPubSubJsonReliableProtocol());
  socket.connectionId = await socket.open();
  owners.set(socket.connectionId, userId);
  return socket;
}

const owners = new Map(); // connection id → the user name of the test's socket

function stateItems(message) {
  return message.items.map((item) => ({
    owner: owners.get(item.connectionId) ?? item.connectionId,
    userId: item.userId ?? null,
    state: item.state ?? null,
    updatedAtIsNumber: typeof item.updatedAt === "number",
  }));
}

// --------------------------------------------------------------------------------------------
// scenarios

const scenarios = {
  async basics(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await alice.joinGroup("room");
      await bob.joinGroup("room");
      await alice.sendToGroup("room", "hello", "text");
      await service(hub).sendToAll({ from: "rest" });
      await until("two messages for bob", () => bob.messages.length >= 2);
      return {
        bob: bob.messages.map((m) => ({
          kind: m.kind,
          group: m.group ?? null,
          fromUserId: m.fromUserId ?? null,
          dataType: m.dataType,
          data: m.data,
        })),
      };
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async invoke_echo(hub) {
    const alice = await client(hub, "alice");
    try {
      const echoed = await alice.invokeEvent("echo", { n: 1 }, "json");
      const failed = await failure(alice.invokeEvent("fail", "x", "text"));
      return { echoed: { dataType: echoed.dataType, data: echoed.data }, failed };
    } finally {
      alice.stop();
    }
  },

  async invoke_cancel(hub) {
    const alice = await client(hub, "alice");
    try {
      const abort = new AbortController();
      const held = failure(alice.invokeEvent("hold", "wait", "text", { abortSignal: abort.signal }));
      await until("the handler holds the first invocation", async () => {
        const recorded = await (await fetch(`${upstream}/recorded`)).json();
        return recorded.events.some((e) => e.hub === hub && e.eventName === "hold");
      });
      abort.abort();
      const cancelled = await held;
      // The handler still holds the cancelled call: the next invocation must not wait for it.
      let next;
      try {
        const answer = await within(4000, alice.invokeEvent("echo", "next", "text"), "echo");
        next = { dataType: answer.dataType, data: answer.data };
      } catch (err) {
        next = { error: describe(err) };
      }
      await fetch(`${upstream}/release`, { method: "POST" });
      // The handler's late answer to the cancelled call must not reach the client as anything.
      await until("the held call answered", async () => {
        const recorded = await (await fetch(`${upstream}/recorded`)).json();
        return recorded.events.some((e) => e.hub === hub && e.kind === "held-answered");
      });
      const after = await alice.invokeEvent("echo", "after", "text");
      return { cancelled, next, after: after.data };
    } finally {
      alice.stop();
    }
  },

  async stream_fragments(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const writer = await within(WAIT_MS, alice.openGroupStream("room"), "openGroupStream");
      await writer.write("A", "text");
      await writer.write({ n: 2 }, "json");
      await writer.write(new Uint8Array([9, 8, 7]).buffer, "binary");
      await writer.end();
      const streams = await seen.ended(1);
      return { streamIdMatches: Object.keys(streams)[0] === writer.streamId, ...Object.values(streams)[0] };
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async stream_abort(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const writer = await within(WAIT_MS, alice.openGroupStream("room"), "openGroupStream");
      await writer.write("partial", "text");
      await writer.abort({ message: "gave up", userErrorCode: "E42" });
      return Object.values(await seen.ended(1))[0];
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async stream_forbidden(hub) {
    const carol = await client(hub, "carol", ["webpubsub.joinLeaveGroup"]);
    try {
      return { error: await failure(within(WAIT_MS, carol.openGroupStream("room"), "open")) };
    } finally {
      carol.stop();
    }
  },

  async stream_parallel(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const a = await within(WAIT_MS, alice.openGroupStream("room", { streamId: "a" }), "open a");
      const b = await within(WAIT_MS, alice.openGroupStream("room", { streamId: "b" }), "open b");
      await a.write("A1", "text");
      await b.write("B1", "text");
      await a.write("A2", "text");
      await b.end();
      await a.end();
      const streams = await seen.ended(2);
      const text = (id) => streams[id].fragments.map((f) => f.data).join("");
      return { a: text("a"), b: text("b"), completed: [streams.a.completed, streams.b.completed] };
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async stream_no_echo(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await alice.joinGroup("room");
      await bob.joinGroup("room");
      const mine = collectStreams(alice, ["room"]);
      const theirs = collectStreams(bob, ["room"]);
      const writer = await within(WAIT_MS, alice.openGroupStream("room", { noEcho: true }), "open");
      await writer.write("x", "text");
      await writer.end();
      await theirs.ended(1);
      await alice.sendToGroup("room", "after", "text");
      await until("alice's own message", () => alice.messages.some((m) => m.data === "after"));
      return { aliceStreams: mine.streams.size, bobStreams: theirs.streams.size };
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async stream_publisher_gone(hub) {
    // A non-reliable publisher: stopping it ends its session and so its streams.
    const alice = await client(hub, "alice", EVERYTHING, { protocol: WebPubSubJsonProtocol() });
    const bob = await client(hub, "bob");
    try {
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const writer = await within(WAIT_MS, alice.openGroupStream("room"), "openGroupStream");
      await writer.write("first", "text");
      await until("the first fragment", () => seen.streams.size === 1);
      alice.stop();
      return Object.values(await seen.ended(1))[0];
    } finally {
      bob.stop();
    }
  },

  async stream_idle_timeout(hub) {
    const alice = await client(hub, "alice");
    const bob = await client(hub, "bob");
    try {
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const writer = await within(
        WAIT_MS,
        alice.openGroupStream("room", { streamId: "idle", idleTimeoutInMs: 500 }),
        "openGroupStream",
      );
      const publisherErrors = [];
      writer.onError((error) => publisherErrors.push(error.name));
      await writer.write("only", "text");
      const receiver = Object.values(await seen.ended(1))[0];
      await until("the publisher's error", () => publisherErrors.length > 0);
      return { receiver, publisherErrors };
    } finally {
      alice.stop();
      bob.stop();
    }
  },

  async stream_invalid_fragment(hub) {
    // The publisher writes its frames by hand (the SDK never sends an invalid fragment); the
    // receiver is the SDK's onGroupStream.
    const bob = await client(hub, "bob");
    const alice = new WebSocket(await url(hub, "alice", EVERYTHING), "json.webpubsub.azure.v1");
    const answers = [];
    alice.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type !== "system") {
        answers.push(frame);
      }
    });
    try {
      await new Promise((resolve, reject) => {
        alice.once("open", resolve);
        alice.once("error", reject);
      });
      await bob.joinGroup("room");
      const seen = collectStreams(bob, ["room"]);
      const send = (frame) => alice.send(JSON.stringify(frame));
      const answer = (n) => until(`answer ${n}`, () => answers.length >= n && answers[n - 1]);
      send({ type: "sendToGroup", group: "room", stream: { streamId: "bad" } });
      await answer(1);
      send({ type: "streamData", streamId: "bad", streamSequenceId: 1, dataType: "text", data: "first" });
      await answer(2);
      send({ type: "streamData", streamId: "bad", streamSequenceId: 2 });
      const closed = await answer(3);
      const receiver = Object.values(await seen.ended(1))[0];
      send({ type: "streamData", streamId: "bad", streamSequenceId: 2, dataType: "text", data: "late" });
      const late = await answer(4);
      return {
        receiver,
        closed: closed.error?.name ?? null,
        late: late.error?.name ?? null,
      };
    } finally {
      alice.close(1000);
      bob.stop();
    }
  },

  async group_state(hub) {
    const roles = [...EVERYTHING, "webpubsub.setGroupState", "webpubsub.getGroupState"];
    const alice = await protocolSocket(hub, "alice", roles);
    const bob = await protocolSocket(hub, "bob", roles);
    const carol = await protocolSocket(hub, "carol", ["webpubsub.joinLeaveGroup"]);
    try {
      const obs = {};
      obs.nonMemberSet = await alice.acked({ kind: "setGroupState", group: "room", state: { a: "1" } });
      await alice.acked({ kind: "joinGroup", group: "room" });
      await bob.acked({ kind: "joinGroup", group: "room" });
      await carol.acked({ kind: "joinGroup", group: "room" });
      obs.withoutRoleSet = await carol.acked({ kind: "setGroupState", group: "room", state: { a: "1" } });
      obs.withoutRoleSubscribe = await carol.acked({ kind: "subscribeGroupState", group: "room" });
      obs.subscribe = await bob.acked({ kind: "subscribeGroupState", group: "room" });
      obs.emptySnapshot = stateItems(await bob.next("snapshot", (m) => m.kind === "groupStateSnapshot"));
      obs.set = await alice.acked({ kind: "setGroupState", group: "room", state: { activity: "typing" } });
      const update = await bob.next("update", (m) => m.kind === "groupStateUpdate");
      obs.update = { group: update.group, items: stateItems(update) };
      await alice.acked({ kind: "subscribeGroupState", group: "room" });
      obs.aliceSnapshot = stateItems(await alice.next("snapshot", (m) => m.kind === "groupStateSnapshot"));
      await alice.acked({ kind: "setGroupState", group: "room" });
      const cleared = await bob.next("clear", (m) => m.kind === "groupStateUpdate");
      obs.cleared = stateItems(cleared);
      obs.unsubscribe = await bob.acked({ kind: "unsubscribeGroupState", group: "room" });
      await alice.acked({ kind: "setGroupState", group: "room", state: { activity: "idle" } });
      await alice.acked({ kind: "sendToGroup", group: "room", dataType: "text", data: "marker", noEcho: false });
      await bob.next("marker", (m) => m.kind === "groupData" && m.data === "marker");
      obs.bobUpdatesAfterUnsubscribe = bob.messages.filter((m) => m.kind === "groupStateUpdate").length;
      return obs;
    } finally {
      alice.close();
      bob.close();
      carol.close();
    }
  },

  async group_presence(hub) {
    // Needs a hub whose event handler asks for group presence events (joined, left).
    // A non-reliable client: stop() closes without a status code, which ends a plain session at
    // once but leaves a reliable one waiting for a recovery (and its events) until it expires.
    const recorded = async () =>
      (await (await fetch(`${upstream}/recorded`)).json()).events.filter((e) => e.hub === hub);
    const alice = await client(hub, "alice", EVERYTHING, { protocol: WebPubSubJsonProtocol() });
    let stopped = false;
    try {
      await alice.joinGroup("room");
      await alice.joinGroup("room"); // already a member: no event
      await alice.joinGroup("other");
      await alice.leaveGroup("room");
      await service(hub).group("by-rest").addConnection(alice.myConnectionId);
      await service(hub).group("by-rest-too").addConnection(alice.myConnectionId);
      await service(hub).group("by-rest-too").removeConnection(alice.myConnectionId);
      await until("six presence events", async () =>
        (await recorded()).filter((e) => e.kind === "joined" || e.kind === "left").length >= 6,
      );
      const explicit = (await recorded())
        .filter((e) => e.kind === "joined" || e.kind === "left")
        .map((e) => ({ kind: e.kind, group: e.group, userId: e.userId, sameConnection: e.connectionId === alice.myConnectionId }));
      alice.stop();
      stopped = true;
      await until("the disconnected event", async () => (await recorded()).some((e) => e.kind === "disconnected"));
      await sleep(300);
      const closing = (await recorded())
        .filter((e) => e.kind === "left" || e.kind === "disconnected")
        .slice(2) // the explicit leaves (room, by-rest-too)
        .map((e) => (e.kind === "left" ? `left ${e.group}` : e.kind))
        .sort();
      return { explicit, closing };
    } finally {
      if (!stopped) {
        alice.stop();
      }
    }
  },

  async client_metadata(hub) {
    // The 1.1.0 client writes no metadata itself: the sender speaks the JSON protocol by hand.
    const bob = await client(hub, "bob");
    const sender = new WebSocket(await url(hub, "alice", EVERYTHING), "json.webpubsub.azure.v1");
    try {
      await bob.joinGroup("room");
      await new Promise((resolve, reject) => {
        sender.once("open", resolve);
        sender.once("error", reject);
      });
      sender.send(
        JSON.stringify({
          type: "sendToGroup",
          group: "room",
          dataType: "text",
          data: "tagged",
          metadata: { trace: "t2" },
        }),
      );
      await until("the message", () => bob.messages.length > 0);
      const m = bob.messages[0];
      return { metadata: m.metadata ?? null, data: m.data, fromUserId: m.fromUserId };
    } finally {
      sender.close();
      bob.stop();
    }
  },

  async rest_metadata(hub) {
    const bob = await client(hub, "bob");
    try {
      await service(hub).sendToAll("hi", {
        contentType: "text/plain",
        requestOptions: { customHeaders: { "X-WebPubSub-Metadata-Trace": "t1" } },
      });
      await until("the message", () => bob.messages.length > 0);
      return { metadata: bob.messages[0].metadata ?? null, data: bob.messages[0].data };
    } finally {
      bob.stop();
    }
  },

  async invalid_filter(hub) {
    try {
      await service(hub).sendToAll("hello", { contentType: "text/plain", filter: "invalid filter" });
      return { error: null };
    } catch (err) {
      let parsed = null;
      try {
        parsed = JSON.parse(err.message).message;
      } catch {
        parsed = { unparsable: err.message };
      }
      return { name: err.name, statusCode: err.statusCode, message: parsed };
    }
  },
};

// --------------------------------------------------------------------------------------------

async function main() {
  const names = process.argv.slice(2);
  if (names[0] === "--list") {
    process.stdout.write(`${JSON.stringify(Object.keys(scenarios))}\n`);
    return 0;
  }
  const unknown = names.filter((n) => !(n in scenarios));
  if (!connectionString || names.length === 0 || unknown.length > 0) {
    process.stderr.write(`usage: node scenarios.mjs <scenario>... (unknown: ${unknown})\n`);
    return 2;
  }
  const results = {};
  await Promise.all(
    names.map(async (name) => {
      try {
        const obs = await within(SCENARIO_TIMEOUT_MS, scenarios[name](`${hubPrefix}_${name}`), name);
        results[name] = { ok: true, obs };
      } catch (err) {
        results[name] = { ok: false, error: describe(err) };
      }
    }),
  );
  process.stdout.write(`${JSON.stringify({ results, unexpected })}\n`);
  return 0;
}

process.exitCode = await main();
setTimeout(() => process.exit(), 500).unref();
