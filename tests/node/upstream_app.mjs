// An application server for Web PubSub built the way the Azure quick starts build one:
// express + @azure/web-pubsub-express (event handlers) + @azure/web-pubsub (server SDK).
// The hubbub upstream tests point event handlers at it and read back what it saw.
//
// Usage:
//   node upstream_app.mjs --port PORT --connection-string CS --hub NAME[=ENDPOINT[,ENDPOINT]]...
//
// Every --hub gets its own WebPubSubEventHandler at /eventhandler/<hub>/, so an event handler
// URL template looks like http://127.0.0.1:PORT/eventhandler/{hub}/{event}. With
// `=ENDPOINT,...` (the handler's allowedEndpoints) it answers the abuse-protection check with
// those endpoints' hosts instead of `*`. The connection string may also come from the
// WebPubSubConnectionString environment variable.
//
// What the handlers do:
//   handleConnect     query `reject=<status>` → fail with that status; otherwise
//                     `userId`, `groups` (repeatable), `roles` (repeatable), `subprotocol`
//                     go into the response, `room` joins that group and is kept in the
//                     connection state; `empty=1` → success without a body (204).
//   handleUserEvent   counts events in the connection state, then by event name:
//                     `chat` → broadcast {from, message} to the room via the server SDK and
//                     reply "sent"; `count` → reply {count} as json; `silent` → success, no
//                     body; `reject` → fail(401); anything else → echo with the same dataType.
//   onConnected       records; for a connection with a room, announces it to the room.
//   onDisconnected    records.
//
// HTTP endpoints besides the handlers:
//   GET /negotiate?id=<user>   {url} — a client access URL for the first hub (quick-start style)
//   GET /recorded              {requests, events, errors} — everything seen so far
//   GET /healthz               200 once listening

import process from "node:process";
import { parseArgs } from "node:util";
import express from "express";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    "connection-string": { type: "string" },
    hub: { type: "string", multiple: true },
  },
});

const port = Number(args.port ?? 8080);
const connectionString = args["connection-string"] ?? process.env.WebPubSubConnectionString;
const hubs = (args.hub ?? ["chat"]).map((spec) => {
  const [name, endpoints] = spec.split("=", 2);
  return { name, allowedEndpoints: endpoints ? endpoints.split(",") : undefined };
});
if (!connectionString) {
  console.error("a connection string is required (--connection-string)");
  process.exit(2);
}

// What the app saw, for the tests to read back.
const requests = [];
const events = [];
const errors = [];

process.on("unhandledRejection", (reason) => {
  errors.push(`unhandledRejection: ${reason}`);
});

const RECORDED_HEADERS = ["content-type", "webhook-request-origin"];

function interestingHeaders(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith("ce-") || RECORDED_HEADERS.includes(name)) {
      out[name] = value;
    }
  }
  return out;
}

function recordEvent(kind, req, extra = {}) {
  const { context } = req;
  events.push({
    kind,
    hub: context.hub,
    connectionId: context.connectionId,
    userId: context.userId ?? null,
    eventName: context.eventName,
    states: { ...context.states },
    signature: context.signature ?? null,
    origin: context.origin ?? null,
    ...extra,
  });
}

function dataForRecord(data, dataType) {
  return dataType === "binary" ? Buffer.from(data).toString("base64") : data;
}

function firstOf(query, name) {
  const values = query?.[name];
  return Array.isArray(values) ? values[0] : values;
}

function createHandler(hubName, allowedEndpoints, serviceClient) {
  const options = {
    path: `/eventhandler/${hubName}`,
    handleConnect: (req, res) => {
      recordEvent("connect", req, {
        claims: req.claims,
        query: req.queries,
        headers: req.headers,
        subprotocols: req.subprotocols,
        clientCertificates: req.clientCertificates,
      });
      const query = req.queries ?? {};
      const reject = firstOf(query, "reject");
      if (reject) {
        res.fail(Number(reject), "rejected by the application");
        return;
      }
      if (firstOf(query, "empty")) {
        res.success();
        return;
      }
      const response = {};
      const userId = firstOf(query, "userId");
      if (userId) {
        response.userId = userId;
      }
      if (query.groups) {
        response.groups = query.groups;
      }
      if (query.roles) {
        response.roles = query.roles;
      }
      const subprotocol = firstOf(query, "subprotocol");
      if (subprotocol) {
        response.subprotocol = subprotocol;
      }
      const room = firstOf(query, "room");
      if (room) {
        response.groups = [...(response.groups ?? []), room];
        res.setState("room", room);
      }
      res.setState("connectedAt", "connect");
      res.success(response);
    },
    handleUserEvent: async (req, res) => {
      recordEvent("user", req, {
        dataType: req.dataType,
        data: dataForRecord(req.data, req.dataType),
      });
      const count = (req.context.states.count ?? 0) + 1;
      res.setState("count", count);
      switch (req.context.eventName) {
        case "chat": {
          const room = req.context.states.room;
          const message = { from: req.context.userId, message: req.data };
          try {
            if (room) {
              await serviceClient.group(room).sendToAll(message);
            } else {
              await serviceClient.sendToAll(message);
            }
            res.success("sent", "text");
          } catch (err) {
            errors.push(`chat: ${err}`);
            res.fail(500, String(err));
          }
          break;
        }
        case "count":
          res.success(JSON.stringify({ count }), "json");
          break;
        case "silent":
          res.success();
          break;
        case "reject":
          res.fail(401, "not allowed");
          break;
        default:
          if (req.dataType === "json") {
            res.success(JSON.stringify(req.data), "json");
          } else {
            res.success(req.data, req.dataType);
          }
      }
    },
    onConnected: async (req) => {
      recordEvent("connected", req);
      const room = req.context.states.room;
      if (room) {
        try {
          await serviceClient
            .group(room)
            .sendToAll(`${req.context.userId} joined ${room}`, { contentType: "text/plain" });
        } catch (err) {
          errors.push(`onConnected: ${err}`);
        }
      }
    },
    onDisconnected: (req) => {
      recordEvent("disconnected", req, { reason: req.reason ?? null });
    },
  };
  if (allowedEndpoints) {
    options.allowedEndpoints = allowedEndpoints;
  }
  return new WebPubSubEventHandler(hubName, options);
}

const app = express();

// Keep the raw requests (abuse-protection checks included) before the SDK answers them.
app.use("/eventhandler", (req, res, next) => {
  requests.push({
    method: req.method,
    url: req.originalUrl,
    headers: interestingHeaders(req.headers),
  });
  next();
});

const serviceClients = new Map();
for (const { name, allowedEndpoints } of hubs) {
  // hubbub listens on plain http on the loopback interface
  const serviceClient = new WebPubSubServiceClient(connectionString, name, {
    allowInsecureConnection: true,
  });
  serviceClients.set(name, serviceClient);
  app.use(createHandler(name, allowedEndpoints, serviceClient).getMiddleware());
}

app.get("/negotiate", async (req, res) => {
  const id = req.query.id;
  if (!id) {
    res.status(400).send("missing user id");
    return;
  }
  const serviceClient = serviceClients.get(hubs[0].name);
  try {
    const token = await serviceClient.getClientAccessToken({ userId: id });
    res.json({ url: token.url });
  } catch (err) {
    errors.push(`negotiate: ${err}`);
    res.status(500).send(String(err));
  }
});

app.get("/recorded", (req, res) => {
  res.json({ requests, events, errors });
});

app.get("/healthz", (req, res) => {
  res.send("ok");
});

app.listen(port, "127.0.0.1", () => {
  console.log(`upstream app listening on http://127.0.0.1:${port}`);
});
