/**
 * Tests of the certificate tooling (`cli/pki` and `jobworker certs`) against real openssl and
 * real TLS 1.3 handshakes through `node:tls`.
 *
 * Run: `deno test -A tests/pki_test.ts`
 *
 * @module
 */
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import { hasProgram, unless, withSkip } from "./helpers/skip.ts";
import assert from "node:assert/strict";
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import { createCA, loadCA } from "../cli/pki/authority.ts";
import { issueClientCert, issueServerCert } from "../cli/pki/issue.ts";
import { readKeyPair, writeKeyPair } from "../cli/pki/files.ts";
import { importPrivateKeyPem } from "../cli/pki/keys.ts";
import type { CertificateAuthority, PemKeyPair } from "../cli/pki/types.ts";

const REPO = new URL("..", import.meta.url);
const CERTS_COMMAND = new URL("../cli/commands/certs.ts", import.meta.url).href;
const DAY_MS = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Helpers

type RunResult = ProgramResult;
const run = runProgram;

function openssl(...args: string[]): Promise<RunResult> {
  return run("openssl", args);
}

/** Runs openssl and returns its stdout, failing the test when it fails. */
async function opensslOk(...args: string[]): Promise<string> {
  const result = await openssl(...args);
  assert.equal(result.code, 0, `openssl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pki_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a pair into a fresh file pair in `dir` and returns the paths. */
async function save(dir: string, name: string, pair: PemKeyPair) {
  return await writeKeyPair(dir, name, pair);
}

function mode(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

/** The value of one extension as `openssl x509 -ext` prints it (without its header line). */
async function extension(certPath: string, name: string): Promise<string> {
  return await opensslOk("x509", "-in", certPath, "-noout", "-ext", name);
}

async function subject(certPath: string): Promise<string> {
  const out = await opensslOk("x509", "-in", certPath, "-noout", "-subject", "-nameopt", "RFC2253");
  return out.trim().replace(/^subject=/, "");
}

let sharedCA: Promise<CertificateAuthority> | undefined;
function testCA(): Promise<CertificateAuthority> {
  sharedCA ??= createCA({ commonName: "pki test CA" });
  return sharedCA;
}

// ---------------------------------------------------------------------------------------------
// The library, checked by openssl

Deno.test("createCA makes a P-256 CA that openssl accepts as one", async () => {
  const ca = await testCA();
  await withTempDir(async (dir) => {
    const { certPath, keyPath } = await save(dir, "ca", ca);
    const text = await opensslOk("x509", "-in", certPath, "-noout", "-text");
    assert.match(text, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    assert.match(text, /Subject Key Identifier:/);
    assert.match(text, /NIST CURVE: P-256/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.equal(await subject(certPath), "CN=pki test CA,O=jobworker");
    // Self-signed and valid as a trust anchor.
    await opensslOk("verify", "-CAfile", certPath, certPath);
    assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    await opensslOk("pkey", "-in", keyPath, "-noout");
    assert.equal(mode(keyPath), 0o600);
    assert.equal(mode(certPath), 0o644);
  });
});

Deno.test("server certificate: verifies, serverAuth only, SANs, CA:FALSE, key ids", async () => {
  const ca = await testCA();
  const server = await issueServerCert(ca, {
    dnsNames: ["localhost", "worker.example.com"],
    ips: ["127.0.0.1", "::1"],
  });
  await withTempDir(async (dir) => {
    const caFiles = await save(dir, "ca", ca);
    const { certPath, keyPath } = await save(dir, "server", server);
    assert.equal(
      (await opensslOk("verify", "-CAfile", caFiles.certPath, certPath)).trim(),
      `${certPath}: OK`,
    );
    const eku = await extension(certPath, "extendedKeyUsage");
    assert.match(eku, /TLS Web Server Authentication/);
    assert.doesNotMatch(eku, /Client/);
    assert.match(await extension(certPath, "keyUsage"), /critical\s+Digital Signature\n/);
    assert.match(await extension(certPath, "basicConstraints"), /critical\s+CA:FALSE/);
    assert.equal(
      (await extension(certPath, "subjectAltName")).split("\n")[1]?.trim(),
      "DNS:localhost, DNS:worker.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
    );
    assert.equal(await subject(certPath), "CN=localhost");
    // The authority key id is the CA's subject key id.
    const ski = (await extension(caFiles.certPath, "subjectKeyIdentifier")).split("\n")[1]?.trim();
    const aki = (await extension(certPath, "authorityKeyIdentifier")).split("\n")[1]?.trim();
    assert.ok(ski !== undefined && ski.length > 0);
    assert.equal(aki, ski);
    // The purpose openssl checks for a TLS server passes; as a TLS client it fails.
    await opensslOk("verify", "-purpose", "sslserver", "-CAfile", caFiles.certPath, certPath);
    const asClient = await openssl(
      "verify",
      "-purpose",
      "sslclient",
      "-CAfile",
      caFiles.certPath,
      certPath,
    );
    assert.notEqual(asClient.code, 0);
    assert.match(asClient.stdout + asClient.stderr, /(unsuitable|unsupported) certificate purpose/);
    // The key is the certificate's key, and openssl reads it.
    await assertKeyBelongsToCert(keyPath, certPath);
  });
});

Deno.test("client certificate: verifies, clientAuth only, OU is the role, CN the owner", async () => {
  const ca = await testCA();
  const client = await issueClientCert(ca, { commonName: "alice", organizationalUnit: "admin" });
  await withTempDir(async (dir) => {
    const caFiles = await save(dir, "ca", ca);
    const { certPath, keyPath } = await save(dir, "admin-client", client);
    await opensslOk("verify", "-CAfile", caFiles.certPath, certPath);
    const eku = await extension(certPath, "extendedKeyUsage");
    assert.match(eku, /TLS Web Client Authentication/);
    assert.doesNotMatch(eku, /Server/);
    assert.match(await extension(certPath, "keyUsage"), /critical\s+Digital Signature\n/);
    assert.match(await extension(certPath, "basicConstraints"), /critical\s+CA:FALSE/);
    assert.equal(await subject(certPath), "CN=alice,OU=admin");
    await opensslOk("verify", "-purpose", "sslclient", "-CAfile", caFiles.certPath, certPath);
    const asServer = await openssl(
      "verify",
      "-purpose",
      "sslserver",
      "-CAfile",
      caFiles.certPath,
      certPath,
    );
    assert.notEqual(asServer.code, 0);
    assert.match(asServer.stdout + asServer.stderr, /(unsuitable|unsupported) certificate purpose/);
    await assertKeyBelongsToCert(keyPath, certPath);
    assert.equal(mode(keyPath), 0o600);
  });
});

Deno.test("client certificate without OU has no OU at all; any OU text is allowed", async () => {
  const ca = await testCA();
  const noOU = await issueClientCert(ca, { commonName: "nobody", organizationalUnit: null });
  const absentOU = await issueClientCert(ca, { commonName: "nobody2" });
  const intruder = await issueClientCert(ca, {
    commonName: "mallory",
    organizationalUnit: "intruder",
  });
  const literal = await issueClientCert(ca, {
    commonName: '#not hex, "quoted"',
    organizationalUnit: "a+b=c",
  });
  await withTempDir(async (dir) => {
    const caFiles = await save(dir, "ca", ca);
    const paths = {
      noOU: (await save(dir, "no-ou", noOU)).certPath,
      absentOU: (await save(dir, "absent-ou", absentOU)).certPath,
      intruder: (await save(dir, "intruder", intruder)).certPath,
      literal: (await save(dir, "literal", literal)).certPath,
    };
    assert.equal(await subject(paths.noOU), "CN=nobody");
    assert.equal(await subject(paths.absentOU), "CN=nobody2");
    const noOUText = await opensslOk("x509", "-in", paths.noOU, "-noout", "-text");
    assert.doesNotMatch(noOUText, /OU\s*=/);
    assert.deepEqual(noOU.certificate.subjectName.getField("OU"), []);
    assert.equal(await subject(paths.intruder), "CN=mallory,OU=intruder");
    // Values are taken literally: no "#hex" decoding, no RFC 4514 parsing.
    assert.deepEqual(literal.certificate.subjectName.getField("CN"), ['#not hex, "quoted"']);
    assert.deepEqual(literal.certificate.subjectName.getField("OU"), ["a+b=c"]);
    for (const path of Object.values(paths)) {
      await opensslOk("verify", "-CAfile", caFiles.certPath, path);
    }
  });
});

Deno.test("an expired certificate is expired for openssl", async () => {
  const ca = await testCA();
  const now = Date.now();
  const expired = await issueClientCert(ca, {
    commonName: "old",
    organizationalUnit: "viewer",
    notBefore: new Date(now - 2 * DAY_MS),
    notAfter: new Date(now - DAY_MS),
  });
  const current = await issueClientCert(ca, { commonName: "new", organizationalUnit: "viewer" });
  await withTempDir(async (dir) => {
    const caFiles = await save(dir, "ca", ca);
    const expiredPath = (await save(dir, "expired", expired)).certPath;
    const currentPath = (await save(dir, "current", current)).certPath;
    const check = await openssl("x509", "-in", expiredPath, "-noout", "-checkend", "0");
    assert.equal(check.code, 1, check.stdout);
    assert.match(check.stdout, /Certificate will expire/);
    await opensslOk("x509", "-in", currentPath, "-noout", "-checkend", "0");
    const verify = await openssl("verify", "-CAfile", caFiles.certPath, expiredPath);
    assert.notEqual(verify.code, 0);
    assert.match(verify.stdout + verify.stderr, /certificate has expired/);
  });
});

Deno.test("serial numbers are random, positive and 128 bits", async () => {
  const ca = await testCA();
  const serials = new Set<string>();
  await withTempDir(async (dir) => {
    for (let i = 0; i < 5; i++) {
      const cert = await issueClientCert(ca, { commonName: `c${i}` });
      const { certPath } = await save(dir, `c${i}`, cert);
      const serial = (await opensslOk("x509", "-in", certPath, "-noout", "-serial")).trim();
      // openssl prints a negative serial with a leading "-" and would keep a padding "00".
      assert.match(serial, /^serial=[4-7][0-9A-F]{31}$/);
      serials.add(serial);
    }
  });
  assert.equal(serials.size, 5);
});

Deno.test("validity: days, clamping to the CA's expiry, and bad input", async () => {
  const shortCA = await createCA({ validDays: 10 });
  const clamped = await issueServerCert(shortCA, { dnsNames: ["x"], ips: [] });
  assert.equal(clamped.certificate.notAfter.getTime(), shortCA.certificate.notAfter.getTime());
  const tenDays = await issueClientCert(await testCA(), { commonName: "d", validDays: 10 });
  const span = tenDays.certificate.notAfter.getTime() - Date.now();
  assert.ok(span > 10 * DAY_MS - 60_000 && span <= 10 * DAY_MS, `span ${span}`);

  const ca = await testCA();
  await assert.rejects(issueServerCert(ca, { dnsNames: [], ips: [] }), RangeError);
  await assert.rejects(issueServerCert(ca, { dnsNames: ["127.0.0.1"], ips: [] }), /is an IP/);
  await assert.rejects(issueServerCert(ca, { dnsNames: [], ips: ["localhost"] }), /not an IP/);
  await assert.rejects(issueServerCert(ca, { dnsNames: ["bad name"], ips: [] }), RangeError);
  await assert.rejects(issueServerCert(ca, { dnsNames: [], ips: ["fe80::1%eth0"] }), /zone/);
  await assert.rejects(issueClientCert(ca, { commonName: "" }), /must not be empty/);
  await assert.rejects(
    issueClientCert(ca, { commonName: "x", organizationalUnit: "" }),
    RangeError,
  );
  await assert.rejects(issueClientCert(ca, { commonName: "x".repeat(65) }), /longer than 64/);
  await assert.rejects(issueClientCert(ca, { commonName: "x", validDays: 0 }), RangeError);
  await assert.rejects(
    issueClientCert(ca, { commonName: "x", notAfter: new Date(), validDays: 1 }),
    TypeError,
  );
  await assert.rejects(
    issueClientCert(ca, {
      commonName: "x",
      notBefore: new Date(),
      notAfter: new Date(Date.now() - DAY_MS),
    }),
    /ends .* before it starts/,
  );
});

Deno.test("loadCA reuses a CA and refuses what cannot sign", async () => {
  const ca = await testCA();
  const loaded = await loadCA({ certPem: ca.certPem, keyPem: ca.keyPem });
  const issued = await issueClientCert(loaded, { commonName: "via loaded CA" });
  assert.ok(await issued.certificate.verify({ publicKey: ca.certificate.publicKey }));

  const other = await createCA();
  await assert.rejects(
    loadCA({ certPem: ca.certPem, keyPem: other.keyPem }),
    /does not belong to the CA certificate/,
  );
  const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: [] });
  await assert.rejects(loadCA(server), /is not a CA/);
  await assert.rejects(
    loadCA({ certPem: ca.certPem, keyPem: ca.keyPem }, {
      now: new Date(Date.now() + 20 * 365 * DAY_MS),
    }),
    /expired/,
  );
  await assert.rejects(loadCA({ certPem: "junk", keyPem: ca.keyPem }), /not a PEM certificate/);
  // A SEC1 key as `openssl ecparam -genkey` writes it is named, not misread.
  const sec1 = await opensslOk("ecparam", "-name", "prime256v1", "-genkey", "-noout");
  await assert.rejects(
    importPrivateKeyPem(sec1),
    /PKCS#8 "PRIVATE KEY" PEM, found "EC PRIVATE KEY"/,
  );
});

Deno.test("writeKeyPair: modes, no clobbering by default, atomic replacement", async () => {
  const ca = await testCA();
  const first = await issueClientCert(ca, { commonName: "first" });
  const second = await issueClientCert(ca, { commonName: "second" });
  await withTempDir(async (dir) => {
    const nested = `${dir}/a/b`;
    const { certPath, keyPath } = await writeKeyPair(nested, "x", first);
    assert.equal(certPath, `${nested}/x-cert.pem`);
    assert.equal(keyPath, `${nested}/x-key.pem`);
    assert.equal(mode(certPath), 0o644);
    assert.equal(mode(keyPath), 0o600);

    await assert.rejects(writeKeyPair(nested, "x", second), Deno.errors.AlreadyExists);
    assert.deepEqual(await readKeyPair(nested, "x"), {
      certPem: first.certPem,
      keyPem: first.keyPem,
    });

    // A key file left world-readable by someone else is replaced by a 0600 one, not reused.
    Deno.chmodSync(keyPath, 0o644);
    await writeKeyPair(nested, "x", second, { overwrite: true });
    assert.deepEqual(await readKeyPair(nested, "x"), {
      certPem: second.certPem,
      keyPem: second.keyPem,
    });
    assert.equal(mode(keyPath), 0o600);
    const names = [...Deno.readDirSync(nested)].map((entry) => entry.name).sort();
    assert.deepEqual(names, ["x-cert.pem", "x-key.pem"]);

    await assert.rejects(writeKeyPair(`${certPath}/sub`, "y", first), /Cannot create directory/);
  });
});

// ---------------------------------------------------------------------------------------------
// Real TLS handshakes

interface HandshakeResult {
  /** The client got the server's greeting over an authorized connection. */
  ok: boolean;
  /** The subject of the client certificate as the server saw it, when it accepted it. */
  peerSubject?: Record<string, string | string[] | undefined>;
  clientError?: string;
  serverError?: string;
}

/**
 * One TLS 1.3 connection over loopback with mutual authentication, both sides verifying against
 * `caPem`. The client checks the server name `localhost`.
 */
async function handshake(
  caPem: string,
  server: PemKeyPair,
  client: PemKeyPair,
  options: { checkServerName?: boolean } = {},
): Promise<HandshakeResult> {
  const result: HandshakeResult = { ok: false };
  const sockets = new Set<tls.TLSSocket>();
  const tlsServer = tls.createServer({
    key: server.keyPem,
    cert: server.certPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  }, (socket) => {
    sockets.add(socket);
    const peer = socket.getPeerCertificate();
    result.peerSubject = { ...peer.subject };
    socket.end("hello");
  });
  const serverDone = new Promise<void>((resolve) => {
    tlsServer.on("secureConnection", () => resolve());
    tlsServer.on("tlsClientError", (error) => {
      result.serverError = error.message;
      resolve();
    });
  });
  await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
  const { port } = tlsServer.address() as AddressInfo;
  const clientDone = new Promise<void>((resolve) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      // Without the name check, chain and purpose are all that decide.
      ...(options.checkServerName === false ? { checkServerIdentity: () => undefined } : {}),
      ca: caPem,
      key: client.keyPem,
      cert: client.certPem,
      minVersion: "TLSv1.3",
    });
    sockets.add(socket);
    let received = "";
    socket.on("data", (chunk) => received += String(chunk));
    socket.on("error", (error) => {
      result.clientError = error.message;
    });
    socket.on("close", () => {
      result.ok = received === "hello" && socket.authorized;
      resolve();
    });
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new Error("TLS handshake timed out")), 10_000);
  });
  try {
    await Promise.race([Promise.all([serverDone, clientDone]), timeout]);
  } finally {
    clearTimeout(timer);
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
  }
  return result;
}

/**
 * A certificate signed by `ca` through openssl itself with the given extKeyUsage, subject and
 * SANs: a control that differs from ours only where the test says so.
 */
async function opensslCert(
  ca: CertificateAuthority,
  eku: string,
  subject = "/CN=localhost",
  altNames: string | null = "DNS:localhost,IP:127.0.0.1",
): Promise<PemKeyPair> {
  let pair: PemKeyPair | undefined;
  await withTempDir(async (dir) => {
    await save(dir, "ca", ca);
    await Deno.writeTextFile(
      `${dir}/ext.cnf`,
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        `extendedKeyUsage=${eku}`,
        ...(altNames === null ? [] : [`subjectAltName=${altNames}`]),
        "",
      ].join("\n"),
    );
    await opensslOk(
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${dir}/k.pem`,
      "-subj",
      subject,
      "-out",
      `${dir}/r.csr`,
    );
    await opensslOk(
      "x509",
      "-req",
      "-in",
      `${dir}/r.csr`,
      "-CA",
      `${dir}/ca-cert.pem`,
      "-CAkey",
      `${dir}/ca-key.pem`,
      "-set_serial",
      "7",
      "-days",
      "1",
      "-extfile",
      `${dir}/ext.cnf`,
      "-out",
      `${dir}/c.pem`,
    );
    pair = {
      certPem: await Deno.readTextFile(`${dir}/c.pem`),
      keyPem: await Deno.readTextFile(`${dir}/k.pem`),
    };
  });
  assert.ok(pair);
  return pair;
}

Deno.test("TLS: the server certificate serves a client presenting a client certificate", async () => {
  const ca = await testCA();
  const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const client = await issueClientCert(ca, { commonName: "alice", organizationalUnit: "admin" });
  const result = await handshake(ca.certPem, server, client);
  assert.equal(result.clientError, undefined);
  assert.equal(result.serverError, undefined);
  assert.ok(result.ok, JSON.stringify(result));
  assert.deepEqual(result.peerSubject, { OU: "admin", CN: "alice" });
});

Deno.test("TLS: a client certificate cannot act as a server certificate", async () => {
  const ca = await testCA();
  const client = await issueClientCert(ca, { commonName: "alice", organizationalUnit: "admin" });
  const otherClient = await issueClientCert(ca, { commonName: "bob", organizationalUnit: "admin" });
  // With the server name check on, and with it off: then only chain and purpose count.
  for (const checkServerName of [true, false]) {
    const refused = await handshake(ca.certPem, client, otherClient, { checkServerName });
    assert.equal(refused.ok, false, `checkServerName ${checkServerName}`);
    assert.ok(refused.clientError !== undefined, JSON.stringify(refused));
  }

  // Controls signed by openssl with the same CA and no SAN like our client certificate: with
  // serverAuth it is accepted as a server (name check off), with clientAuth it is refused.
  // So what refuses ours is its purpose.
  const serverAuth = await opensslCert(ca, "serverAuth", "/OU=admin/CN=alice", null);
  const clientAuth = await opensslCert(ca, "clientAuth", "/OU=admin/CN=alice", null);
  const serverAuthResult = await handshake(ca.certPem, serverAuth, otherClient, {
    checkServerName: false,
  });
  assert.ok(serverAuthResult.ok, JSON.stringify(serverAuthResult));
  const clientAuthResult = await handshake(ca.certPem, clientAuth, otherClient, {
    checkServerName: false,
  });
  assert.equal(clientAuthResult.ok, false);
  assert.ok(clientAuthResult.clientError !== undefined);
  // And with the names, a serverAuth certificate passes the name check too.
  assert.ok((await handshake(ca.certPem, await opensslCert(ca, "serverAuth"), otherClient)).ok);
});

Deno.test("TLS: a server certificate cannot act as a client certificate", async () => {
  const ca = await testCA();
  const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const result = await handshake(ca.certPem, server, server);
  assert.equal(result.ok, false);
  assert.equal(result.peerSubject, undefined, "the server must not accept the connection");
  assert.ok(result.serverError !== undefined, JSON.stringify(result));
});

Deno.test("TLS: expired, foreign-CA and OU-less client certificates", async () => {
  const ca = await testCA();
  const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: [] });
  const expired = await issueClientCert(ca, {
    commonName: "old",
    organizationalUnit: "admin",
    notBefore: new Date(Date.now() - 2 * DAY_MS),
    notAfter: new Date(Date.now() - DAY_MS),
  });
  const expiredResult = await handshake(ca.certPem, server, expired);
  assert.equal(expiredResult.ok, false);
  assert.equal(expiredResult.peerSubject, undefined);

  const foreign = await issueClientCert(await createCA(), {
    commonName: "x",
    organizationalUnit: "admin",
  });
  const foreignResult = await handshake(ca.certPem, server, foreign);
  assert.equal(foreignResult.ok, false);
  assert.equal(foreignResult.peerSubject, undefined);

  // TLS accepts a certificate without OU; deciding the role is the server's business.
  const noOU = await issueClientCert(ca, { commonName: "nobody", organizationalUnit: null });
  const noOUResult = await handshake(ca.certPem, server, noOU);
  assert.ok(noOUResult.ok);
  assert.deepEqual(noOUResult.peerSubject, { CN: "nobody" });
});

// ---------------------------------------------------------------------------------------------
// `jobworker certs`, run end to end in a child process

const COMMAND_ENTRY = `import { certsCommand } from ${JSON.stringify(CERTS_COMMAND)};
await certsCommand().parseAsync(Deno.args, { from: "user" });`;

function certs(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run(Deno.execPath(), ["eval", "--quiet", COMMAND_ENTRY, "--", ...args], {
    cwd: REPO,
    env,
  });
}

const ALL_FILES = [
  "admin-client-cert.pem",
  "admin-client-key.pem",
  "ca-cert.pem",
  "ca-key.pem",
  "server-cert.pem",
  "server-key.pem",
  "viewer-client-cert.pem",
  "viewer-client-key.pem",
];

function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    listDir(dir).map((name) => [name, Deno.readTextFileSync(`${dir}/${name}`)]),
  );
}

function assertNoStackTrace(result: RunResult): void {
  assert.doesNotMatch(result.stderr, /^\s+at /m, result.stderr);
}

Deno.test("certs: a default run creates the 8 files, a second keeps them, --force replaces", async () => {
  await withTempDir(async (root) => {
    const dir = `${root}/certs`;
    const first = await certs(["--out", dir]);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(listDir(dir), ALL_FILES);
    for (const name of ALL_FILES) {
      assert.equal(mode(`${dir}/${name}`), name.endsWith("-key.pem") ? 0o600 : 0o644, name);
    }
    assert.equal(first.stdout.match(/^created /gm)?.length, 4, first.stdout);
    await opensslOk(
      "verify",
      "-CAfile",
      `${dir}/ca-cert.pem`,
      `${dir}/server-cert.pem`,
      `${dir}/admin-client-cert.pem`,
      `${dir}/viewer-client-cert.pem`,
    );
    assert.equal(await subject(`${dir}/admin-client-cert.pem`), "CN=admin,OU=admin");
    assert.equal(await subject(`${dir}/viewer-client-cert.pem`), "CN=viewer,OU=viewer");
    assert.match(
      await extension(`${dir}/server-cert.pem`, "subjectAltName"),
      /DNS:localhost, IP Address:127.0.0.1\n/,
    );
    for (const name of ALL_FILES.filter((file) => file.endsWith("-key.pem"))) {
      await opensslOk("pkey", "-in", `${dir}/${name}`, "-noout");
    }
    const created = snapshot(dir);

    const second = await certs(["--out", dir]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(snapshot(dir), created);
    assert.match(second.stdout, /^reused +\S*ca-cert\.pem/m);
    assert.equal(second.stdout.match(/^kept /gm)?.length, 3, second.stdout);
    assert.match(second.stdout, /server-cert\.pem.*--force replaces/);

    const forced = await certs(["--out", dir, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    const replaced = snapshot(dir);
    assert.deepEqual(Object.keys(replaced), ALL_FILES);
    assert.equal(replaced["ca-cert.pem"], created["ca-cert.pem"], "the CA is reused");
    assert.equal(replaced["ca-key.pem"], created["ca-key.pem"]);
    for (const name of ALL_FILES.filter((file) => !file.startsWith("ca-"))) {
      assert.notEqual(replaced[name], created[name], `${name} should be replaced`);
    }
    assert.equal(forced.stdout.match(/^replaced /gm)?.length, 3, forced.stdout);
    await opensslOk(
      "verify",
      "-CAfile",
      `${dir}/ca-cert.pem`,
      `${dir}/server-cert.pem`,
      `${dir}/admin-client-cert.pem`,
      `${dir}/viewer-client-cert.pem`,
    );
    for (const name of ALL_FILES) {
      assert.equal(mode(`${dir}/${name}`), name.endsWith("-key.pem") ? 0o600 : 0o644, name);
    }
  });
});

Deno.test("certs: names, clients, days and $JOB_WORKER_CERT_PATH", async () => {
  await withTempDir(async (dir) => {
    const result = await certs(
      [
        "--server-name",
        "worker1.example.com",
        "--server-name",
        "10.0.0.5",
        "--server-name",
        "::1",
        "--client",
        "admin:alice",
        "--client",
        "viewer:bob:the:builder",
        "--days",
        "30",
      ],
      { JOB_WORKER_CERT_PATH: dir },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(listDir(dir), ALL_FILES);
    assert.match(
      await extension(`${dir}/server-cert.pem`, "subjectAltName"),
      /DNS:worker1.example.com, IP Address:10.0.0.5, IP Address:0:0:0:0:0:0:0:1\n/,
    );
    assert.equal(await subject(`${dir}/admin-client-cert.pem`), "CN=alice,OU=admin");
    assert.equal(await subject(`${dir}/viewer-client-cert.pem`), "CN=bob:the:builder,OU=viewer");
    // 30 days: valid in 29 days, expired in 31.
    await opensslOk(
      "x509",
      "-in",
      `${dir}/server-cert.pem`,
      "-noout",
      "-checkend",
      `${29 * 86400}`,
    );
    const later = await openssl(
      "x509",
      "-in",
      `${dir}/admin-client-cert.pem`,
      "-noout",
      "-checkend",
      `${31 * 86400}`,
    );
    assert.equal(later.code, 1);

    // Asking for other names while files exist keeps them, with a warning.
    const again = await certs(["--out", dir, "--client", "admin:carol"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(
      again.stderr,
      /warning: Kept ".*admin-client-cert\.pem": its subject is "OU=admin, CN=alice", not "OU=admin, CN=carol"/,
    );
    assert.equal(await subject(`${dir}/admin-client-cert.pem`), "CN=alice,OU=admin");
  });
});

Deno.test("certs: bad arguments fail clearly with exit code 1 and no stack trace", async () => {
  await withTempDir(async (dir) => {
    // Commander's own parse errors exit 1 when the command runs alone (the jobworker CLI maps
    // them to 2); what the command finds invalid after parsing exits 2.
    const cases: [string[], RegExp, number][] = [
      [["--client", "root:alice"], /Unknown role "root": the role must be one of admin, viewer/, 1],
      [["--client", "admin"], /Expected ROLE:NAME/, 1],
      [["--client", "admin:"], /The name after "admin:" is empty/, 1],
      [["--client", "admin:a", "--client", "admin:b"], /role "admin" is given twice/, 1],
      [["--days", "0"], /whole number of days/, 1],
      [["--days", "ten"], /whole number of days/, 1],
      [["--bogus"], /unknown option '--bogus'/, 1],
      [["--server-name", "not a host"], /"not a host" is neither an IP address nor a valid DNS/, 2],
      [["--server-name", "fe80::1%eth0"], /has a zone/, 2],
    ];
    for (const [args, message, code] of cases) {
      const result = await certs(["--out", `${dir}/out`, ...args]);
      assert.equal(result.code, code, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /^error: /);
      assertNoStackTrace(result);
    }
    assert.deepEqual(listDir(dir), [], "nothing is written on bad arguments");
  });
});

Deno.test("certs: an unwritable directory fails clearly", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    for (const out of [`${dir}/file/certs`, "/proc/jobworker-pki-test"]) {
      const result = await certs(["--out", out]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /^error: Cannot (create directory|examine|write) "/);
      assertNoStackTrace(result);
    }
  });
});

Deno.test("certs: refuses files it cannot keep, writes nothing, --force recovers", async () => {
  await withTempDir(async (root) => {
    // A lone CA certificate: never overwritten, not even with --force.
    const lone = `${root}/lone`;
    const ca = await testCA();
    await Deno.mkdir(lone);
    await Deno.writeTextFile(`${lone}/ca-cert.pem`, ca.certPem);
    for (const args of [[], ["--force"]]) {
      const result = await certs(["--out", lone, ...args]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /ca-cert\.pem" exists but ".*ca-key\.pem" does not/);
      assert.deepEqual(listDir(lone), ["ca-cert.pem"]);
    }

    // Server and client files from another CA: the new CA would not accept them.
    const dir = `${root}/set`;
    assert.equal((await certs(["--out", dir])).code, 0);
    await Deno.remove(`${dir}/ca-cert.pem`);
    await Deno.remove(`${dir}/ca-key.pem`);
    const before = snapshot(dir);
    const refused = await certs(["--out", dir]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /nothing was written/);
    assert.match(refused.stderr, /server-cert\.pem" was issued by a CA that is gone/);
    assert.match(refused.stderr, /Use --force/);
    assertNoStackTrace(refused);
    assert.deepEqual(snapshot(dir), before);

    const forced = await certs(["--out", dir, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.deepEqual(listDir(dir), ALL_FILES);
    await opensslOk(
      "verify",
      "-CAfile",
      `${dir}/ca-cert.pem`,
      `${dir}/server-cert.pem`,
      `${dir}/admin-client-cert.pem`,
      `${dir}/viewer-client-cert.pem`,
    );

    // A key that does not belong to its certificate, and a lone key.
    await Deno.copyFile(`${dir}/viewer-client-key.pem`, `${dir}/admin-client-key.pem`);
    await Deno.remove(`${dir}/server-cert.pem`);
    const broken = await certs(["--out", dir]);
    assert.equal(broken.code, 1);
    assert.match(
      broken.stderr,
      /admin-client-key\.pem" is not the key of ".*admin-client-cert\.pem"/,
    );
    assert.match(broken.stderr, /server-key\.pem" exists but ".*server-cert\.pem" does not/);
  });
});

Deno.test(withSkip({
  name: "certs: key files are created 0600, never chmod'ed (strace)",
  fn: keyFilesAreCreated0600,
}, unless(hasProgram("strace"), "strace is not installed (make test-tools installs it)")));

async function keyFilesAreCreated0600(): Promise<void> {
  await withTempDir(async (dir) => {
    const trace = `${dir}/trace`;
    const result = await run("strace", [
      "-f",
      "-qq",
      "-o",
      trace,
      "-e",
      "trace=openat,chmod,fchmod,fchmodat",
      Deno.execPath(),
      "eval",
      "--quiet",
      COMMAND_ENTRY,
      "--",
      "--out",
      `${dir}/certs`,
    ], { cwd: REPO });
    assert.equal(result.code, 0, result.stderr);
    const lines = (await Deno.readTextFile(trace)).split("\n");
    const keyCreates = lines.filter((line) =>
      /-key\.pem\.[0-9a-f-]+\.tmp", O_WRONLY\|O_CREAT\|O_EXCL/.test(line)
    );
    assert.equal(keyCreates.length, 4, keyCreates.join("\n"));
    for (const line of keyCreates) assert.match(line, /, 0600\) = \d+$/);
    assert.deepEqual(lines.filter((line) => /chmod/.test(line)), []);
  });
}

Deno.test("certs: importing the command does not load the x509 library", async () => {
  const result = await run(Deno.execPath(), [
    "eval",
    "--quiet",
    `import { certsCommand } from ${JSON.stringify(CERTS_COMMAND)};
     certsCommand();
     console.log(typeof (Reflect as unknown as { getMetadata?: unknown }).getMetadata);`,
  ], { cwd: REPO });
  assert.equal(result.code, 0, result.stderr);
  // reflect-metadata (loaded right before @peculiar/x509) defines Reflect.getMetadata.
  assert.equal(result.stdout.trim(), "undefined");
});

// ---------------------------------------------------------------------------------------------

async function assertKeyBelongsToCert(keyPath: string, certPath: string): Promise<void> {
  const fromKey = await opensslOk("pkey", "-in", keyPath, "-pubout");
  const fromCert = await opensslOk("x509", "-in", certPath, "-noout", "-pubkey");
  assert.equal(fromKey, fromCert);
}
