// An upstream event handler written with the official express SDK (@azure/web-pubsub-express),
// as the Azure quick starts write one: the handler of bench/run.py's (f) express variant.
//
// Every user event is answered at once with its own data (an echo), so a plain WebSocket
// client of hubbub gets back the frame it sent. The SDK answers the abuse-protection probe.
//
//   POST/OPTIONS /eventhandler/...   the WebPubSubEventHandler of hub HUB
//   GET /stats                       {"requests": N} user events answered so far
//
// Usage: node bench/refs/express_handler.mjs PORT HUB

import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const port = Number(process.argv[2]);
const hub = process.argv[3] ?? "bench";
let requests = 0;

const handler = new WebPubSubEventHandler(hub, {
  path: "/eventhandler",
  handleUserEvent: (req, res) => {
    requests += 1;
    if (req.dataType === "json") {
      res.success(JSON.stringify(req.data), "json");
    } else {
      res.success(req.data, req.dataType);
    }
  },
});

const app = express();
app.use(handler.getMiddleware());
app.get("/stats", (req, res) => res.json({ requests }));
app.listen(port, "127.0.0.1", 511, () => console.log("ready"));
