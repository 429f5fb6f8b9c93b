/** Errors of the job layer that callers act on; the API layer maps `kind` to a gRPC status. */

export type JobErrorKind =
  | "invalid-argument"
  | "not-found"
  | "already-exists"
  | "failed-precondition"
  | "resource-exhausted"
  | "unavailable"
  | "internal";

export class JobError extends Error {
  constructor(readonly kind: JobErrorKind, message: string) {
    super(message);
    this.name = "JobError";
  }
}
