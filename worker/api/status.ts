/** Maps errors of the layers below to gRPC statuses with messages a person understands. */
import { type ServiceError, status } from "@grpc/grpc-js";
import { Metadata } from "@grpc/grpc-js";
import { JobError, type JobErrorKind } from "../jobs/errors.ts";
import { InvalidField } from "./validation.ts";
import { log } from "../log/logger.ts";

const CODES: Record<JobErrorKind, status> = {
  "invalid-argument": status.INVALID_ARGUMENT,
  "not-found": status.NOT_FOUND,
  "already-exists": status.ALREADY_EXISTS,
  "failed-precondition": status.FAILED_PRECONDITION,
  "resource-exhausted": status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  "internal": status.INTERNAL,
};

export function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

/** An error that already carries a gRPC status (not, say, a Deno error whose code is "ENOENT"). */
export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "number";
}

export function toServiceError(error: unknown, rpc: string): ServiceError {
  if (error instanceof InvalidField) return serviceError(status.INVALID_ARGUMENT, error.message);
  if (error instanceof JobError) return serviceError(CODES[error.kind], error.message);
  log.error("unexpected error", { rpc, error: error instanceof Error ? error.stack : error });
  return serviceError(status.INTERNAL, `internal error in ${rpc}`);
}
