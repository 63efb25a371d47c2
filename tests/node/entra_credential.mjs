// A TokenCredential for @azure/web-pubsub that returns access tokens of Microsoft Entra ID's
// shape (v1: iss https://sts.windows.net/{tid}/ and appid; v2: iss
// https://login.microsoftonline.com/{tid}/v2.0 and azp; aud, iat, nbf, exp, tid, oid, sub, ver),
// signed RS256 by a test key with node:crypto. It records the scopes it was asked for.
import { createPrivateKey, randomUUID, sign } from "node:crypto";

const b64 = (data) => Buffer.from(data).toString("base64url");

export class TestTokenCredential {
  // privateKeyPem: PKCS#8 PEM; kid: the key's id in the JWKS; claims: overrides, e.g. {tid}.
  constructor(privateKeyPem, kid, claims = {}, version = "1.0") {
    this.key = createPrivateKey(privateKeyPem);
    this.kid = kid;
    this.claims = claims;
    this.version = version;
    this.scopes = [];
  }

  token() {
    const now = Math.floor(Date.now() / 1000);
    const tid = this.claims.tid ?? "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const v1 = this.version === "1.0";
    const iss = v1 ? `https://sts.windows.net/${tid}/` : `https://login.microsoftonline.com/${tid}/v2.0`;
    const oid = this.claims.oid ?? "9d3b0a1e-7c55-4d2b-8a60-3f1c0c4e2b11";
    const app = this.claims.appid ?? this.claims.azp ?? "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
    const payload = {
      aud: "https://webpubsub.azure.com",
      iss,
      iat: now - 300,
      nbf: now - 300,
      exp: now + 3600,
      aio: b64(randomUUID()),
      idtyp: "app",
      oid,
      sub: oid,
      tid,
      uti: b64(randomUUID()),
      ver: this.version,
      [v1 ? "appid" : "azp"]: app,
      ...this.claims,
    };
    const header = { typ: "JWT", alg: "RS256", kid: this.kid, ...(v1 ? { x5t: this.kid } : {}) };
    const signingInput = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
    const signature = sign("sha256", Buffer.from(signingInput), this.key);
    return { token: `${signingInput}.${b64(signature)}`, expiresOnTimestamp: payload.exp * 1000 };
  }

  async getToken(scopes) {
    this.scopes.push(Array.isArray(scopes) ? scopes : [scopes]);
    return this.token();
  }
}
