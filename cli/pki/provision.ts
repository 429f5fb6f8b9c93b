/**
 * The certificate set of a jobworker deployment, as `jobworker certs` makes it: a CA, one server
 * certificate and one client certificate per role, in one directory.
 *
 * Everything is checked before anything is written: an invalid name, a half-present key pair or
 * a kept certificate that the CA would not accept fail the whole run with no file touched.
 *
 * @module
 */
import { x509 } from "./_x509.ts";
import { checkDays, DAY_MS } from "./_validity.ts";
import { createCA, DEFAULT_CA_VALID_DAYS, loadCA, parseCertificatePem } from "./authority.ts";
import { DEFAULT_LEAF_VALID_DAYS, issueClientCert, issueServerCert } from "./issue.ts";
import { importPrivateKeyPem, privateKeyMatches } from "./keys.ts";
import { buildName, formatSubjectAltName, parseServerName, type SubjectAltName } from "./names.ts";
import {
  ensureDirectory,
  inspectKeyPair,
  type KeyPairPresence,
  readKeyPair,
  writeKeyPair,
} from "./files.ts";
import type { CertificateAuthority, CertifiedKeyPair } from "./types.ts";

/** A client certificate to make: `OU=<role>, CN=<commonName>`, stored as `<role>-client-*.pem`. */
export interface ClientSpec {
  /** The role, written as the OU and used in the file names. */
  role: string;
  /** The owner, written as the CN. */
  commonName: string;
}

/** Options of {@link provisionCertificates}. */
export interface ProvisionOptions {
  /** The directory of the files; created if missing. */
  dir: string;
  /** DNS names and IP addresses of the server certificate (at least one). */
  serverNames: string[];
  /** Client certificates to make, at most one per role. */
  clients: ClientSpec[];
  /** Validity of the server and client certificates in days; default 365. */
  validDays?: number | undefined;
  /** Replace existing server and client certificates. The CA is always reused when present. */
  force?: boolean | undefined;
}

/** What happened to one key pair. */
export type PairStatus = "created" | "replaced" | "kept" | "reused";

/** One key pair of the set, after the run. */
export interface PairReport {
  /** The base name of its files: `ca`, `server`, `admin-client`, ... */
  name: string;
  /** What happened: `created` or `replaced` (written now), `kept` or `reused` (left as found). */
  status: PairStatus;
  /** Path of the certificate file. */
  certPath: string;
  /** Path of the key file. */
  keyPath: string;
  /** The certificate's subject, e.g. `OU=admin, CN=alice`. */
  subject: string;
  /** Its subject alternative names, e.g. `DNS:localhost`, `IP:127.0.0.1`. */
  altNames: string[];
  /** Its expiry. */
  notAfter: Date;
}

/** The result of {@link provisionCertificates}. */
export interface ProvisionReport {
  /** The CA: `created` or `reused`. */
  ca: PairReport;
  /** The server certificate, then the client certificates in the order asked. */
  pairs: PairReport[];
  /** Things the user should know about although the run succeeded. */
  warnings: string[];
}

/**
 * The request itself is invalid (a server name, role, CN or number of days), as opposed to the
 * files or the system: the command reports it as a usage error.
 */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
}

/** Characters allowed in a role, which becomes part of file names. */
const ROLE_PATTERN = /^[a-z0-9][a-z0-9_-]*$/;

interface LeafPlan {
  name: string;
  issue: (ca: CertificateAuthority) => Promise<CertifiedKeyPair>;
  /** Differences between what is asked and what a kept certificate holds. */
  differences: (certificate: x509.X509Certificate) => string[];
}

interface PlannedLeaf extends LeafPlan {
  presence: KeyPairPresence;
}

/**
 * Makes the certificate set in a directory: `ca-cert.pem`/`ca-key.pem` (created when missing,
 * reused otherwise), `server-cert.pem`/`server-key.pem`, and `<role>-client-cert.pem`/
 * `<role>-client-key.pem` per client. Existing server and client files are kept unless `force`;
 * a kept certificate must still be valid, match its key and be signed by the CA.
 *
 * @param options Directory, names, validity and whether to replace.
 * @returns What was written and what was kept.
 * @throws {InvalidRequestError} If a server name, role, CN or the number of days is invalid, or a
 * role repeats.
 * @throws {Error} If the existing files cannot be used (a lone certificate or key, a CA that
 * cannot sign, a kept certificate the CA does not accept) or cannot be written; nothing is
 * written then, the message says why and which file.
 */
export async function provisionCertificates(options: ProvisionOptions): Promise<ProvisionReport> {
  const now = new Date();
  const force = options.force ?? false;
  const validDays = options.validDays ?? DEFAULT_LEAF_VALID_DAYS;
  let plans: LeafPlan[];
  try {
    checkDays(validDays);
    plans = planLeaves(options, validDays);
  } catch (error) {
    if (error instanceof RangeError || error instanceof TypeError) {
      throw new InvalidRequestError(error.message, { cause: error });
    }
    throw error;
  }
  const leaves: PlannedLeaf[] = await Promise.all(
    plans.map(async (plan) => ({
      ...plan,
      presence: await inspectKeyPair(options.dir, plan.name),
    })),
  );

  const problems: string[] = [];
  const warnings: string[] = [];

  // The CA: reuse it when both files exist, create it when neither does.
  const caPresence = await inspectKeyPair(options.dir, "ca");
  let existingCA: CertificateAuthority | undefined;
  if (caPresence.certExists && caPresence.keyExists) {
    try {
      existingCA = await loadCA(await readKeyPair(options.dir, "ca"), { now });
    } catch (error) {
      throw new Error(
        `Cannot use the CA in "${caPresence.certPath}" and "${caPresence.keyPath}": ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
  } else if (caPresence.certExists || caPresence.keyExists) {
    const [present, missing] = caPresence.certExists
      ? [caPresence.certPath, caPresence.keyPath]
      : [caPresence.keyPath, caPresence.certPath];
    throw new Error(
      `"${present}" exists but "${missing}" does not: restore it, or remove "${present}" to ` +
        `create a new CA (every certificate it issued must then be issued again)`,
    );
  }

  // Existing leaf files: keep them only when they would still work.
  const kept = new Map<string, x509.X509Certificate>();
  for (const leaf of leaves) {
    const { certExists, keyExists, certPath, keyPath } = leaf.presence;
    if (force || (!certExists && !keyExists)) {
      continue;
    }
    if (!certExists || !keyExists) {
      const [present, missing] = certExists ? [certPath, keyPath] : [keyPath, certPath];
      problems.push(`"${present}" exists but "${missing}" does not`);
      continue;
    }
    if (existingCA === undefined) {
      problems.push(`"${certPath}" was issued by a CA that is gone (a new CA is being created)`);
      continue;
    }
    const problem = await checkKept(options.dir, leaf, existingCA, now);
    if (typeof problem === "string") {
      problems.push(problem);
      continue;
    }
    kept.set(leaf.name, problem);
    for (const difference of leaf.differences(problem)) {
      warnings.push(`Kept "${certPath}": ${difference} (use --force to replace it)`);
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `Existing files cannot be kept, nothing was written:\n${
        problems.map((problem) => `  - ${problem}`).join("\n")
      }\nUse --force to replace the server and client certificates`,
    );
  }

  // Write.
  await ensureDirectory(options.dir);
  let ca: CertificateAuthority;
  let caStatus: PairStatus;
  if (existingCA !== undefined) {
    ca = existingCA;
    caStatus = "reused";
  } else {
    ca = await createCA({ validDays: Math.max(DEFAULT_CA_VALID_DAYS, validDays) });
    await writeKeyPair(options.dir, "ca", ca);
    caStatus = "created";
  }

  const pairs: PairReport[] = [];
  for (const leaf of leaves) {
    const keptCertificate = kept.get(leaf.name);
    if (keptCertificate !== undefined) {
      pairs.push(report(leaf.name, "kept", leaf.presence, keptCertificate));
      continue;
    }
    const issued = await leaf.issue(ca);
    const existed = leaf.presence.certExists || leaf.presence.keyExists;
    await writeKeyPair(options.dir, leaf.name, issued, { overwrite: force });
    pairs.push(
      report(leaf.name, existed ? "replaced" : "created", leaf.presence, issued.certificate),
    );
    const wanted = now.getTime() + validDays * DAY_MS;
    if (issued.certificate.notAfter.getTime() < wanted - DAY_MS) {
      warnings.push(
        `"${leaf.presence.certPath}" expires on ${issued.certificate.notAfter.toISOString()}, ` +
          `with the CA, not after ${validDays} days`,
      );
    }
  }
  return { ca: report("ca", caStatus, caPresence, ca.certificate), pairs, warnings };
}

function planLeaves(options: ProvisionOptions, validDays: number): LeafPlan[] {
  const sans = uniqueSans(options.serverNames.map(parseServerName));
  if (sans.length === 0) {
    throw new RangeError("The server certificate needs at least one name");
  }
  const dnsNames = sans.filter((san) => san.type === "dns").map((san) => san.value);
  const ips = sans.filter((san) => san.type === "ip").map((san) => san.value);
  const plans: LeafPlan[] = [{
    name: "server",
    issue: (ca) => issueServerCert(ca, { dnsNames, ips, validDays }),
    differences: (certificate) => {
      const wanted = sans.map(formatSubjectAltName).sort().join(", ");
      const found = altNames(certificate).sort().join(", ");
      return wanted === found ? [] : [`it has ${found || "no names"}, not ${wanted}`];
    },
  }];

  const roles = new Set<string>();
  for (const client of options.clients) {
    if (!ROLE_PATTERN.test(client.role)) {
      throw new RangeError(
        `The role "${client.role}" must be lowercase letters, digits, "-" or "_"`,
      );
    }
    if (roles.has(client.role)) {
      throw new RangeError(
        `The role "${client.role}" is given twice; its files hold one client certificate`,
      );
    }
    roles.add(client.role);
    const wantedSubject = buildName({
      organizationalUnit: client.role,
      commonName: client.commonName,
    }).toString();
    plans.push({
      name: `${client.role}-client`,
      issue: (ca) =>
        issueClientCert(ca, {
          commonName: client.commonName,
          organizationalUnit: client.role,
          validDays,
        }),
      differences: (certificate) =>
        certificate.subject === wantedSubject
          ? []
          : [`its subject is "${certificate.subject}", not "${wantedSubject}"`],
    });
  }
  return plans;
}

function uniqueSans(sans: SubjectAltName[]): SubjectAltName[] {
  const seen = new Set<string>();
  return sans.filter((san) => {
    const key = `${san.type}:${san.value.toLowerCase()}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

/** Returns the certificate when it can be kept, else the reason why not. */
async function checkKept(
  dir: string,
  leaf: PlannedLeaf,
  ca: CertificateAuthority,
  now: Date,
): Promise<x509.X509Certificate | string> {
  const { certPath, keyPath } = leaf.presence;
  let certificate: x509.X509Certificate;
  let privateKey: CryptoKey;
  try {
    const pair = await readKeyPair(dir, leaf.name);
    certificate = parseCertificatePem(pair.certPem, `"${certPath}"`);
    privateKey = await importPrivateKeyPem(pair.keyPem).catch((error: Error) => {
      throw new Error(`"${keyPath}": ${error.message}`);
    });
  } catch (error) {
    return (error as Error).message;
  }
  const signedByCA = certificate.issuer === ca.certificate.subject &&
    await certificate.verify({ publicKey: ca.certificate.publicKey, signatureOnly: true });
  if (!signedByCA) {
    return `"${certPath}" was not issued by the CA "${ca.certificate.subject}"`;
  }
  if (certificate.notAfter.getTime() <= now.getTime()) {
    return `"${certPath}" expired on ${certificate.notAfter.toISOString()}`;
  }
  if (!(await privateKeyMatches(privateKey, certificate))) {
    return `"${keyPath}" is not the key of "${certPath}"`;
  }
  return certificate;
}

function report(
  name: string,
  status: PairStatus,
  presence: KeyPairPresence,
  certificate: x509.X509Certificate,
): PairReport {
  return {
    name,
    status,
    certPath: presence.certPath,
    keyPath: presence.keyPath,
    subject: certificate.subject,
    altNames: altNames(certificate),
    notAfter: certificate.notAfter,
  };
}

function altNames(certificate: x509.X509Certificate): string[] {
  const extension = certificate.getExtension(x509.SubjectAlternativeNameExtension);
  if (extension === null) {
    return [];
  }
  return extension.names.toJSON().flatMap((name) =>
    name.type === "dns" || name.type === "ip" ? [formatSubjectAltName(name as SubjectAltName)] : []
  );
}
