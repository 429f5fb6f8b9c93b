/**
 * Mutual TLS trusts our CA and nothing else, whatever else the process trusts. A second ("foreign")
 * CA is made trusted the ways Deno allows — the system store (a file in
 * /usr/local/share/ca-certificates + update-ca-certificates, DENO_TLS_CA_STORE=mozilla,system),
 * DENO_CERT and NODE_EXTRA_CA_CERTS — for the worker and client processes only, as a public CA
 * is trusted by the default store. Then:
 *   - the worker refuses a client certificate from that CA, even with OU=admin;
 *   - the client (both transports) refuses a server certificate from that CA;
 * and controls show that those processes really trust the foreign CA. (Deno 2.8.3's node:tls
 * replaces its roots with `ca` on both sides, so these guard against a change there.)
 *
 * Also: the client refuses a forged X.509 v1 server certificate whose issuer only has our CA's
 * name. Deno's node:tls accepts that one (name match only, no signature checked); our own check
 * (cli/transport/our_ca.ts) refuses it.
 *
 * Run: `deno test -A tests/foreign_ca_test.ts` (as root; needs update-ca-certificates). The
 * system store is restored when the file ends, also on failure.
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { createCA } from "../cli/pki/authority.ts";
import { issueClientCert, issueServerCert } from "../cli/pki/issue.ts";
import { writeKeyPair } from "../cli/pki/files.ts";
import { JobClient } from "../cli/client.ts";
import { makePki } from "./helpers/pki.ts";
import { clientFor } from "./helpers/clients.ts";
import { runProgram } from "./helpers/process.ts";
import { hasProgram, unless, withSkip } from "./helpers/skip.ts";
import { WorkerProcess } from "./helpers/worker.ts";

const PROBE = new URL("./helpers/trust_probe.ts", import.meta.url).pathname;
const SYSTEM_CA_DIR = "/usr/local/share/ca-certificates";
const SYSTEM_CA_FILE = `${SYSTEM_CA_DIR}/jobworker-test-foreign-ca-${Deno.pid}.crt`;

const skip = unless(Deno.uid() === 0, "needs root to change the system trust store") ??
  unless(hasProgram("update-ca-certificates"), "needs update-ca-certificates (ca-certificates)") ??
  unless(hasProgram("openssl"), "needs openssl");

let installed = false;

async function updateSystemStore(): Promise<void> {
  const r = await runProgram("update-ca-certificates", []);
  assert.equal(r.code, 0, `update-ca-certificates: ${r.stderr}`);
}

/** Puts `caPem` into the system store; undone by removeFromSystemStoreSync (also at unload). */
async function addToSystemStore(caPem: string): Promise<void> {
  await Deno.mkdir(SYSTEM_CA_DIR, { recursive: true });
  installed = true;
  await Deno.writeTextFile(SYSTEM_CA_FILE, caPem);
  await updateSystemStore();
}

/**
 * Takes our file out of the system store: update-ca-certificates rebuilds the bundle without it
 * but leaves its links in /etc/ssl/certs (the name's and the hash's) dangling, so they go too.
 */
function removeFromSystemStoreSync(): void {
  if (!installed) return;
  installed = false;
  const base = SYSTEM_CA_FILE.slice(SYSTEM_CA_FILE.lastIndexOf("/") + 1, -".crt".length);
  for (const path of [SYSTEM_CA_FILE, ...linksTo(base)]) {
    try {
      Deno.removeSync(path);
    } catch { /* gone */ }
  }
  const r = new Deno.Command("update-ca-certificates", { stdout: "null", stderr: "piped" })
    .outputSync();
  assert.equal(r.code, 0, `update-ca-certificates: ${new TextDecoder().decode(r.stderr)}`);
}

/** The links in /etc/ssl/certs that lead to our file (`<base>.pem` and the hash link to it). */
function linksTo(base: string): string[] {
  const dir = "/etc/ssl/certs";
  const links: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    if (!entry.isSymlink) continue;
    try {
      if (Deno.readLinkSync(`${dir}/${entry.name}`).includes(base)) {
        links.push(`${dir}/${entry.name}`);
      }
    } catch { /* gone */ }
  }
  return links;
}

// A run that throws before its `finally` still restores the store (a SIGKILL does not).
globalThis.addEventListener("unload", () => removeFromSystemStoreSync());

async function openssl(args: string[]): Promise<string> {
  const r = await runProgram("openssl", args);
  assert.equal(r.code, 0, `openssl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A child's (probe's) one-line verdict, with its output when it printed none. */
async function probe(mode: string, env: Record<string, string>, args: string[]): Promise<string> {
  const r = await runProgram(
    Deno.execPath(),
    ["run", "-A", "--cached-only", PROBE, mode, ...args],
    {
      env,
    },
  );
  const line = r.stdout.trim().split("\n").pop() ?? "";
  assert.match(
    line,
    /^(ok|refused: .*)$/,
    `probe ${mode} said nothing useful: ${r.stdout}${r.stderr}`,
  );
  return line;
}

Deno.test(withSkip({
  name: "mutual TLS trusts only our CA, even when the process trusts another CA",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const pki = await makePki();
    const foreignDir = await Deno.makeTempDir({ prefix: "jobworker-test-foreign-ca-" });
    const workers: WorkerProcess[] = [];
    try {
      // The foreign CA, an admin client and a server certificate for this host from it.
      const foreign = await createCA({ commonName: "foreign CA" });
      await writeKeyPair(foreignDir, "ca", foreign);
      await writeKeyPair(
        foreignDir,
        "admin-client",
        await issueClientCert(foreign, { commonName: "eve", organizationalUnit: "admin" }),
      );
      // A worker with a foreign server certificate that still asks for our clients' certificates.
      const foreignServerDir = `${foreignDir}/server`;
      await Deno.mkdir(foreignServerDir);
      await writeKeyPair(
        foreignServerDir,
        "server",
        await issueServerCert(foreign, { dnsNames: ["localhost"], ips: ["127.0.0.1"] }),
      );
      await Deno.copyFile(`${pki.dir}/ca-cert.pem`, `${foreignServerDir}/ca-cert.pem`);

      const foreignCa = `${foreignDir}/ca-cert.pem`;
      await addToSystemStore(await Deno.readTextFile(foreignCa));
      // Every way a Deno process can be told to trust an extra root, at once.
      const trustForeign = {
        DENO_TLS_CA_STORE: "mozilla,system",
        DENO_CERT: foreignCa,
        NODE_EXTRA_CA_CERTS: foreignCa,
      };
      const ours = await WorkerProcess.start({ certDir: pki.dir, env: trustForeign });
      workers.push(ours);
      const impostor = await WorkerProcess.start({ certDir: foreignServerDir, env: trustForeign });
      workers.push(impostor);
      const ourClient = [`${pki.dir}/admin-client-cert.pem`, `${pki.dir}/admin-client-key.pem`];
      const foreignClient = [
        `${foreignDir}/admin-client-cert.pem`,
        `${foreignDir}/admin-client-key.pem`,
      ];

      await t.step("control: with that environment, a process trusts the foreign CA", async () => {
        assert.equal(
          await probe("plain-tls", trustForeign, [impostor.address, "-", ...ourClient]),
          "ok",
        );
        // ... and with the bundled roots only, it does not (so that environment made the difference;
        // NODE_EXTRA_CA_CERTS is set to our CA because a machine may set it to the system bundle).
        const bundledOnly = {
          DENO_TLS_CA_STORE: "mozilla",
          NODE_EXTRA_CA_CERTS: `${pki.dir}/ca-cert.pem`,
        };
        assert.match(
          await probe("plain-tls", bundledOnly, [impostor.address, "-", ...ourClient]),
          /^refused/,
        );
      });

      await t.step("the worker refuses a foreign-CA client certificate with OU=admin", async () => {
        // Eve knows our CA (it is no secret), so she verifies the worker; only her certificate is
        // foreign.
        const eve = JobClient.connect({
          server: ours.address,
          caPem: await Deno.readTextFile(`${pki.dir}/ca-cert.pem`),
          certPem: await Deno.readTextFile(foreignClient[0]!),
          keyPem: await Deno.readTextFile(foreignClient[1]!),
        });
        try {
          await assert.rejects(eve.listJobsPage({}), (e: { code?: number }) => {
            assert.equal(e.code, status.UNAVAILABLE, String(e));
            return true;
          });
          await assert.rejects(eve.createJob({ command: "/bin/true" }), (e: { code?: number }) => {
            assert.equal(e.code, status.UNAVAILABLE, String(e));
            return true;
          });
        } finally {
          eve.close();
        }
        // Also from a process that itself trusts the foreign CA, over both transports.
        for (const mode of ["jobclient-http2", "jobclient-grpc-js"]) {
          assert.match(
            await probe(mode, trustForeign, [
              ours.address,
              `${pki.dir}/ca-cert.pem`,
              ...foreignClient,
            ]),
            /^refused/,
            mode,
          );
        }
        // Control: our own admin is served by the same worker, and no job was created.
        const alice = clientFor(pki.dir, ours.address, "admin");
        try {
          assert.equal((await alice.listJobsPage({})).jobs.length, 0);
        } finally {
          alice.close();
        }
      });

      await t.step(
        "the client refuses a foreign-CA server certificate (both transports)",
        async () => {
          for (const mode of ["jobclient-http2", "jobclient-grpc-js"]) {
            const verdict = await probe(mode, trustForeign, [
              impostor.address,
              `${pki.dir}/ca-cert.pem`,
              ...ourClient,
            ]);
            assert.match(verdict, /^refused: .*certificate/i, `${mode}: ${verdict}`);
            // Told not to reject unauthorized servers (NODE_TLS_REJECT_UNAUTHORIZED=0, which
            // node:tls's default follows), the client still refuses: it asks for the check.
            const lax = { ...trustForeign, NODE_TLS_REJECT_UNAUTHORIZED: "0" };
            const laxVerdict = await probe(mode, lax, [
              impostor.address,
              `${pki.dir}/ca-cert.pem`,
              ...ourClient,
            ]);
            assert.match(laxVerdict, /^refused: .*certificate/i, `${mode} lax: ${laxVerdict}`);
            // Control: the impostor does serve a client that trusts the foreign CA as its `ca`.
            assert.equal(
              await probe(mode, trustForeign, [impostor.address, foreignCa, ...ourClient]),
              "ok",
              `${mode} control`,
            );
          }
        },
      );

      await t.step(
        "the client refuses a forged X.509 v1 server certificate that only names our CA",
        async () => {
          // Made by openssl (which makes v1 certificates when asked for no extensions): issued by
          // a CA of the attacker's with our CA's name, for CN=localhost (no SAN, so the name check
          // reads the CN).
          const forgedDir = `${foreignDir}/forged`;
          await Deno.mkdir(forgedDir);
          const ourName = (await openssl([
            "x509",
            "-in",
            `${pki.dir}/ca-cert.pem`,
            "-noout",
            "-subject",
            "-nameopt",
            "compat",
          ]))
            .trim().replace(/^subject=/, "");
          const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
          await openssl([
            "req",
            "-x509",
            ...ec,
            "-keyout",
            `${forgedDir}/fake-ca-key.pem`,
            "-subj",
            ourName,
            "-days",
            "2",
            "-out",
            `${forgedDir}/fake-ca-cert.pem`,
          ]);
          await openssl([
            "req",
            "-new",
            ...ec,
            "-keyout",
            `${forgedDir}/server-key.pem`,
            "-subj",
            "/CN=localhost",
            "-out",
            `${forgedDir}/server.csr`,
          ]);
          await openssl([
            "x509",
            "-req",
            "-in",
            `${forgedDir}/server.csr`,
            "-CA",
            `${forgedDir}/fake-ca-cert.pem`,
            "-CAkey",
            `${forgedDir}/fake-ca-key.pem`,
            "-days",
            "1",
            "-out",
            `${forgedDir}/server-cert.pem`,
          ]);
          assert.match(
            await openssl(["x509", "-in", `${forgedDir}/server-cert.pem`, "-noout", "-text"]),
            /Version: 1 \(0x0\)/,
          );
          await Deno.copyFile(`${pki.dir}/ca-cert.pem`, `${forgedDir}/ca-cert.pem`);
          const forger = await WorkerProcess.start({ certDir: forgedDir });
          workers.push(forger);
          for (const mode of ["jobclient-http2", "jobclient-grpc-js"]) {
            const verdict = await probe(mode, {}, [
              `localhost:${forger.port}`,
              `${pki.dir}/ca-cert.pem`,
              ...ourClient,
            ]);
            assert.match(verdict, /^refused: .*not signed by the CA/, `${mode}: ${verdict}`);
          }
        },
      );
    } finally {
      for (const w of workers) await w.stop();
      removeFromSystemStoreSync();
      await pki.remove();
      await Deno.remove(foreignDir, { recursive: true });
    }
  },
}, skip));
