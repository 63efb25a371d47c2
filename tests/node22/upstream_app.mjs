// An application server written with @azure/web-pubsub-express 1.1.0, as an application developer
// writes one: a WebPubSubEventHandler per hub, answering user events (what `invokeEvent` calls)
// and recording group presence events (onGroupJoined / onGroupLeft).
//
// Usage: node upstream_app.mjs --port PORT --hub NAME...
//
// Handlers (event handler URL template http://127.0.0.1:PORT/eventhandler/{hub}/{event}):
//   handleUserEvent  `echo` → the data back with its data type;
//                    `hold` → waits until POST /release (or 20 s), then answers "late";
//                    `fail` → fail(500).
//   onConnected, onDisconnected, onGroupJoined, onGroupLeft → recorded.
// HTTP: GET /recorded → {events, errors}; POST /release → lets every held event answer.

import process from "node:process";
import { parseArgs } from "node:util";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const { values: args } = parseArgs({
  options: { port: { type: "string" }, hub: { type: "string", multiple: true } },
});

const events = [];
const errors = [];
let release = null;
let released = new Promise((resolve) => {
  release = resolve;
});

process.on("unhandledRejection", (reason) => errors.push(`unhandledRejection: ${reason}`));

function record(kind, req, extra = {}) {
  events.push({
    kind,
    hub: req.context.hub,
    connectionId: req.context.connectionId,
    userId: req.context.userId ?? null,
    eventName: req.context.eventName,
    ...extra,
  });
}

function handler(hub) {
  return new WebPubSubEventHandler(hub, {
    path: `/eventhandler/${hub}`,
    handleUserEvent: async (req, res) => {
      record("user", req, { dataType: req.dataType });
      switch (req.context.eventName) {
        case "hold": {
          const timeout = new Promise((resolve) => setTimeout(resolve, 20000));
          await Promise.race([released, timeout]);
          record("held-answered", req);
          res.success("late", "text");
          break;
        }
        case "fail":
          res.fail(500, "the application failed");
          break;
        default:
          if (req.dataType === "json") {
            res.success(JSON.stringify(req.data), "json");
          } else {
            res.success(req.data, req.dataType);
          }
      }
    },
    onConnected: (req) => record("connected", req),
    onDisconnected: (req) => record("disconnected", req),
    onGroupJoined: (req) => record("joined", req, { group: req.group }),
    onGroupLeft: (req) => record("left", req, { group: req.group }),
  });
}

const app = express();
for (const hub of args.hub ?? []) {
  app.use(handler(hub).getMiddleware());
}
app.get("/recorded", (req, res) => res.json({ events, errors }));
app.post("/release", (req, res) => {
  release();
  released = new Promise((resolve) => {
    release = resolve;
  });
  res.send("released");
});
app.get("/healthz", (req, res) => res.send("ok"));
app.listen(Number(args.port), "127.0.0.1", () => {
  console.log(`upstream app listening on ${args.port}`);
});
