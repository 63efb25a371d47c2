// One @azure/web-pubsub-client client that sends faster than the node allows
// (tests/integration/test_traffic_limits.py), and what the SDK makes of the close.
//
// Environment:
//   HUBBUB_CLIENT_URL      the client access URL (a token that may send to groups)
//   HUBBUB_MESSAGES        how many fire-and-forget group messages to send in a row
//   HUBBUB_AUTO_RECONNECT  "false" for autoReconnect: false (default: the SDK's default, true)
//
// Prints ONE JSON line:
//   {"connected": [connectionId, ...], "disconnected": [{"connectionId", "message"}, ...],
//    "stopped": n, "closes": [{"code", "reason"}, ...], "sendErrors": n,
//    "afterReconnect": "acked" | "<error>" | null, "unexpected": [...]}
// "closes" are the WebSocket close frames the SDK received, as it logs them (the SDK's events
// carry no close code); "afterReconnect" is an acked group message sent on the connection the
// SDK opened by itself after the close, when it opened one.

import process from "node:process";
import { AzureLogger, setLogLevel } from "@azure/logger";
import { WebPubSubClient } from "@azure/web-pubsub-client";

const WAIT_MS = 8000;

const closes = [];
const unexpected = [];
process.on("unhandledRejection", (reason) => {
  unexpected.push(`unhandledRejection: ${String(reason)}`);
});

setLogLevel("info");
AzureLogger.log = (...args) => {
  const line = args.map(String).join(" ");
  const found = /WebSocket connection closed\. Code: (\d+), Reason: (.*)$/.exec(line);
  if (found) {
    closes.push({ code: Number(found[1]), reason: found[2] });
  }
};

function waitFor(check, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (check()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > WAIT_MS) {
        clearInterval(timer);
        reject(new Error(`no ${what} within ${WAIT_MS} ms`));
      }
    }, 20);
  });
}

async function main() {
  const autoReconnect = process.env.HUBBUB_AUTO_RECONNECT !== "false";
  const client = new WebPubSubClient(
    process.env.HUBBUB_CLIENT_URL,
    autoReconnect ? {} : { autoReconnect: false },
  );
  const seen = { connected: [], disconnected: [], stopped: 0 };
  client.on("connected", (e) => seen.connected.push(e.connectionId));
  client.on("disconnected", (e) =>
    seen.disconnected.push({ connectionId: e.connectionId ?? null, message: e.message ?? null }),
  );
  client.on("stopped", () => {
    seen.stopped += 1;
  });
  await client.start();
  await waitFor(() => seen.connected.length === 1, "connected event");
  let sendErrors = 0;
  const count = Number(process.env.HUBBUB_MESSAGES ?? "20");
  for (let i = 0; i < count; i++) {
    try {
      await client.sendToGroup("room", `m${i}`, "text", { fireAndForget: true });
    } catch {
      sendErrors += 1; // the connection is gone
    }
  }
  await waitFor(() => seen.disconnected.length === 1, "disconnected event");
  let afterReconnect = null;
  if (autoReconnect) {
    await waitFor(() => seen.connected.length === 2, "second connected event");
    try {
      await client.sendToGroup("room", "after", "text");
      afterReconnect = "acked";
    } catch (err) {
      afterReconnect = String(err?.message ?? err);
    }
  } else {
    await waitFor(() => seen.stopped === 1, "stopped event");
  }
  client.stop();
  await waitFor(() => seen.stopped >= 1, "stopped event after stop()");
  process.stdout.write(
    `${JSON.stringify({ ...seen, closes, sendErrors, afterReconnect, unexpected })}\n`,
  );
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
