// A fleet of @azure/web-pubsub-client clients for the drop test (tests/integration/test_faults.py).
//
// Reads JSON lines on stdin and answers each with one JSON line on stdout:
//   {"clients": [{"url": "...", "user": "..."}, ...]}
//       start one WebPubSubClient (default protocol json.reliable.webpubsub.azure.v1) per URL;
//       answers {"ready": {"connectionIds": [...]}} once every client is connected
//   {"command": "report"}
//       answers {"report": {"clients": [{"user", "connected": [ids], "disconnected": n,
//                "stopped": n, "frames": [[sequenceId, stream, n], ...]}]}}
//       where a message "<stream>:<n>" (text) was received with that sequenceId
//   {"command": "stop"}
//       stops every client, answers {"stopped": {}} and exits
// Failures are answered as {"error": "..."}.

import process from "node:process";
import readline from "node:readline";
import { WebPubSubClient } from "@azure/web-pubsub-client";

const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 20000;

const fleet = [];
const unexpected = [];

process.on("unhandledRejection", (reason) => {
  unexpected.push(`unhandledRejection: ${String(reason)}`);
});

function answer(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function record(entry, message) {
  const [stream, n] = String(message.data).split(":");
  entry.frames.push([message.sequenceId ?? 0, stream, Number(n)]);
}

function open(url, user) {
  const client = new WebPubSubClient(url);
  const entry = { client, user, connected: [], disconnected: 0, stopped: 0, frames: [] };
  const connected = new Promise((resolve) => {
    client.on("connected", (e) => {
      entry.connected.push(e.connectionId);
      resolve();
    });
  });
  client.on("disconnected", () => {
    entry.disconnected += 1;
  });
  client.on("stopped", () => {
    entry.stopped += 1;
  });
  client.on("server-message", (e) => record(entry, e.message));
  client.on("group-message", (e) => record(entry, e.message));
  fleet.push(entry);
  return client.start().then(() => connected);
}

async function start(clients) {
  await withTimeout(
    Promise.all(clients.map((c) => open(c.url, c.user))),
    START_TIMEOUT_MS,
    "connecting every client",
  );
  answer({ ready: { connectionIds: fleet.map((e) => e.connected[0]) } });
}

function report() {
  answer({
    report: {
      clients: fleet.map((e) => ({
        user: e.user,
        connected: e.connected,
        disconnected: e.disconnected,
        stopped: e.stopped,
        frames: e.frames,
      })),
      unexpected,
    },
  });
}

async function stop() {
  await withTimeout(
    Promise.all(fleet.map((e) => Promise.resolve(e.client.stop()))),
    STOP_TIMEOUT_MS,
    "stopping every client",
  );
  answer({ stopped: {} });
  process.exit(0);
}

async function handle(line) {
  const request = JSON.parse(line);
  if (request.clients) {
    await start(request.clients);
  } else if (request.command === "report") {
    report();
  } else if (request.command === "stop") {
    await stop();
  } else {
    throw new Error(`unknown request: ${line}`);
  }
}

const input = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
input.on("line", (line) => {
  if (!line.trim()) {
    return;
  }
  queue = queue.then(() => handle(line)).catch((err) => answer({ error: String(err?.stack ?? err) }));
});
input.on("close", () => {
  // the test went away: do not linger
  queue.finally(() => process.exit(0));
});
