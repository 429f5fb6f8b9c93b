/**
 * Wraps every handler of a gRPC service generically, so each call is observed once it ends
 * (audit log, metrics) without the handlers knowing: caller, method, job id, status, duration,
 * and the payload bytes a streaming call sent.
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  status,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { callerOf } from "../auth/identity.ts";

export interface RpcRecord {
  /** The full service name, e.g. `jobworker.JobService`. */
  service: string;
  method: string;
  /** The client certificate's CN ("" when it has none). */
  caller: string;
  /** admin, viewer, or "none" when the certificate carries no usable role. */
  role: string;
  /** The job the call was about (request `id`, or the created job), "" when none. */
  jobId: string;
  /** The gRPC status name: OK, NOT_FOUND, ... */
  code: string;
  durationMs: number;
  /** Payload bytes of the messages a streaming call sent. */
  streamedBytes: number;
  /** A server-streaming call (GetJobsStream, the health service's Watch), not a unary one. */
  streaming: boolean;
}

export interface RpcObserver {
  rpcStarted?(service: string, method: string, streaming: boolean): void;
  /** Payload bytes of one message a streaming call sends. */
  streamed?(bytes: number): void;
  rpcEnded(record: RpcRecord): void;
}

const CODE_NAMES = new Map<number, string>(
  Object.entries(status).filter(([, v]) => typeof v === "number").map(([k, v]) => [v as number, k]),
);

export function codeName(code: unknown): string {
  return typeof code === "number" ? CODE_NAMES.get(code) ?? `CODE_${code}` : "UNKNOWN";
}

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;

function idOf(message: unknown): string {
  const id = (message as { id?: unknown } | null)?.id;
  return typeof id === "string" ? id : "";
}

function jobIdOf(request: unknown, response: unknown): string {
  return idOf(request) || idOf((response as { job?: unknown } | null)?.job);
}

function payloadBytes(message: unknown): number {
  const payload = (message as { payload?: unknown } | null)?.payload;
  return payload instanceof Uint8Array ? payload.byteLength : 0;
}

/** Tracks one call and reports it to the observers exactly once. */
function begin(
  service: string,
  method: string,
  streaming: boolean,
  call: AnyCall,
  observers: RpcObserver[],
) {
  const started = performance.now();
  for (const o of observers) o.rpcStarted?.(service, method, streaming);
  let done = false;
  let streamedBytes = 0;
  return {
    streamed(bytes: number) {
      streamedBytes += bytes;
      for (const o of observers) o.streamed?.(bytes);
    },
    end(code: unknown, response?: unknown) {
      if (done) return;
      done = true;
      let caller = "";
      let role = "none";
      try {
        const identity = callerOf(call);
        caller = identity.commonName;
        role = identity.role ?? "none";
      } catch { /* the connection was gone before the call read its caller */ }
      const record: RpcRecord = {
        service,
        method,
        caller,
        role,
        jobId: jobIdOf(call.request, response),
        code: codeName(code),
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        streamedBytes,
        streaming,
      };
      for (const o of observers) o.rpcEnded(record);
    },
  };
}

function wrapUnary(
  service: string,
  method: string,
  handler: handleUnaryCall<unknown, unknown>,
  observers: RpcObserver[],
): handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const rpc = begin(service, method, false, call, observers);
    call.on("cancelled", () => rpc.end(status.CANCELLED));
    handler(call, (error, value, ...rest) => {
      rpc.end(error ? (error as { code?: unknown }).code ?? status.UNKNOWN : status.OK, value);
      callback(error, value, ...rest);
    });
  };
}

function wrapServerStreaming(
  service: string,
  method: string,
  handler: handleServerStreamingCall<unknown, unknown>,
  observers: RpcObserver[],
): handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    const rpc = begin(service, method, true, call, observers);
    // Patched on this call object only: grpc-js reports a streaming call's error through an
    // 'error' event, its success through end(), a client's cancel through 'cancelled'.
    const emit = call.emit.bind(call);
    call.emit = (event: string | symbol, ...args: unknown[]) => {
      if (event === "error") rpc.end((args[0] as { code?: unknown } | undefined)?.code);
      if (event === "cancelled") rpc.end(status.CANCELLED);
      return emit(event, ...args);
    };
    const write = call.write.bind(call) as (...args: unknown[]) => boolean;
    call.write = ((message: unknown, ...rest: unknown[]) => {
      const bytes = payloadBytes(message);
      if (bytes > 0) rpc.streamed(bytes);
      return write(message, ...rest);
    }) as typeof call.write;
    const end = call.end.bind(call) as (...args: unknown[]) => typeof call;
    call.end = ((...args: unknown[]) => {
      rpc.end(status.OK);
      return end(...args);
    }) as typeof call.end;
    handler(call);
  };
}

/** The same handlers, each reporting its calls to `observers` when they end. */
export function instrumented(
  serviceName: string,
  definition: ServiceDefinition,
  handlers: UntypedServiceImplementation,
  observers: RpcObserver[],
): UntypedServiceImplementation {
  if (observers.length === 0) return handlers;
  const wrapped: Record<string, UntypedHandleCall> = { ...handlers };
  for (const [key, method] of Object.entries(definition)) {
    const name = key in handlers ? key : method.originalName;
    const handler = name === undefined ? undefined : handlers[name];
    if (handler === undefined || name === undefined) continue;
    const rpcName = method.path.slice(method.path.lastIndexOf("/") + 1);
    if (!method.requestStream && !method.responseStream) {
      wrapped[name] = wrapUnary(
        serviceName,
        rpcName,
        handler as handleUnaryCall<unknown, unknown>,
        observers,
      );
    } else if (!method.requestStream && method.responseStream) {
      wrapped[name] = wrapServerStreaming(
        serviceName,
        rpcName,
        handler as handleServerStreamingCall<unknown, unknown>,
        observers,
      );
    }
  }
  return wrapped;
}
