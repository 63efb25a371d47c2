// Runs a list of data-plane calls with the official @azure/web-pubsub service SDK and prints one
// JSON line: the outcome of each call, in order.
//
//   node rest_calls.mjs '<calls as JSON>'   (env HUBBUB_CONNECTION_STRING, HUBBUB_HUB)
//
// With HUBBUB_ENTRA_KEY (a PKCS#8 PEM) the client is built from HUBBUB_ENDPOINT and a
// TestTokenCredential instead (HUBBUB_ENTRA_KID, optional HUBBUB_ENTRA_CLAIMS as JSON): the
// Microsoft Entra ID path, which the SDK takes over https only.
//
// A call is [operation, ...arguments]; an outcome is {"ok": true, "value": ...} or
// {"ok": false, "status": <HTTP status or null>, "code": <x-ms-error-code or null>}.
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { TestTokenCredential } from "./entra_credential.mjs";

const TEXT = { contentType: "text/plain" };

const operations = {
  sendToAll: (svc, text, options = {}) => svc.sendToAll(text, { ...TEXT, ...options }),
  sendToUser: (svc, user, text, options = {}) => svc.sendToUser(user, text, { ...TEXT, ...options }),
  sendToGroup: (svc, group, text, options = {}) =>
    svc.group(group).sendToAll(text, { ...TEXT, ...options }),
  userExists: (svc, user) => svc.userExists(user),
  groupExists: (svc, group) => svc.groupExists(group),
  addUserToGroup: (svc, group, user) => svc.group(group).addUser(user),
  removeUserFromGroup: (svc, group, user) => svc.group(group).removeUser(user),
  addConnectionToGroup: (svc, group, connection) => svc.group(group).addConnection(connection),
  listConnections: async (svc, group) => {
    const ids = [];
    for await (const member of await svc.group(group).listConnections()) {
      ids.push(member.connectionId);
    }
    return ids.sort();
  },
  grantPermission: (svc, connection, permission, targetName) =>
    svc.grantPermission(connection, permission, { targetName }),
  hasPermission: (svc, connection, permission, targetName) =>
    svc.hasPermission(connection, permission, { targetName }),
  closeUserConnections: (svc, user, options = {}) => svc.closeUserConnections(user, options),
  closeAllConnections: (svc, options = {}) => svc.closeAllConnections(options),
  getClientAccessToken: (svc, options = {}) => svc.getClientAccessToken(options),
};

async function outcome(svc, [name, ...args]) {
  try {
    const value = await operations[name](svc, ...args);
    // Sends resolve to an object with no defined fields, the other void calls to undefined.
    const json = JSON.stringify(value ?? null);
    return { ok: true, value: json === "{}" ? null : JSON.parse(json) };
  } catch (err) {
    const headers = err.response?.headers;
    return {
      ok: false,
      status: err.statusCode ?? null,
      code: headers?.get?.("x-ms-error-code") ?? null,
      error: String(err.message ?? err).slice(0, 300),
    };
  }
}

const options = { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } };
const credential = process.env.HUBBUB_ENTRA_KEY
  ? new TestTokenCredential(
      process.env.HUBBUB_ENTRA_KEY,
      process.env.HUBBUB_ENTRA_KID,
      JSON.parse(process.env.HUBBUB_ENTRA_CLAIMS ?? "{}"),
    )
  : null;
const svc = credential
  ? new WebPubSubServiceClient(process.env.HUBBUB_ENDPOINT, credential, process.env.HUBBUB_HUB, options)
  : new WebPubSubServiceClient(process.env.HUBBUB_CONNECTION_STRING, process.env.HUBBUB_HUB, options);
const results = [];
for (const call of JSON.parse(process.argv[2])) {
  results.push(await outcome(svc, call));
}
if (credential) {
  console.log(JSON.stringify({ scopes: credential.scopes }));
}
console.log(JSON.stringify(results));
