/** Who is calling: the role and name in the verified client certificate of the connection. */
import type { ServerUnaryCall } from "@grpc/grpc-js";

type AuthContext = ReturnType<ServerUnaryCall<unknown, unknown>["getAuthContext"]>;

export type Role = "admin" | "viewer";

export interface Identity {
  /** The recognised role, or null when the certificate has no usable OU. */
  role: Role | null;
  /** All OU values seen, for messages. */
  organizationalUnits: string[];
  /** The certificate's CN; becomes the owner of the jobs it creates. */
  commonName: string;
  /** The certificate's serial number, hex ("" when there is no certificate). */
  serialNumber: string;
}

function values(field: string | string[] | undefined): string[] {
  if (field === undefined) return [];
  return Array.isArray(field) ? field : [field];
}

/**
 * Reads the identity from a call's auth context. A certificate naming both roles is ambiguous and
 * gets no role.
 */
export function identityOf(context: AuthContext): Identity {
  const certificate = context.sslPeerCertificate;
  const subject = certificate?.subject;
  const ous = values(subject?.OU);
  const roles = new Set(ous.filter((ou): ou is Role => ou === "admin" || ou === "viewer"));
  const commonName = values(subject?.CN)[0] ?? "";
  return {
    role: roles.size === 1 ? [...roles][0]! : null,
    organizationalUnits: ous,
    commonName,
    serialNumber: certificate?.serialNumber ?? "",
  };
}

/** What {@link callerOf} needs of a grpc-js server call. */
export interface AuthenticatedCall {
  getAuthContext(): AuthContext;
}

const byCall = new WeakMap<AuthenticatedCall, Identity>();

/**
 * The identity of a call's caller, read once per call: the handler's authorization and the audit
 * record at the call's end share it. Each `getAuthContext()` has Deno's TLS socket build the
 * peer certificate object anew (about 50 µs); the certificate of a connection never changes.
 */
export function callerOf(call: AuthenticatedCall): Identity {
  let identity = byCall.get(call);
  if (identity === undefined) {
    identity = identityOf(call.getAuthContext());
    byCall.set(call, identity);
  }
  return identity;
}
