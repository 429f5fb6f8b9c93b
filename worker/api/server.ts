/**
 * The gRPC server: mutual TLS 1.3 credentials, message size limits, JobService and the health
 * service, every call audited (and counted when metrics are on).
 */
import { Server, setLogger } from "@grpc/grpc-js";
import { log } from "../log/logger.ts";
import { jobServiceDefinition } from "../../proto/service.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { WorkerConfig } from "../config.ts";
import { mutualTls13, type ServerTlsFiles } from "../tls/server_credentials.ts";
import { jobServiceHandlers } from "./handlers.ts";
import { refuseMalformed } from "./malformed.ts";
import { ConnectionGuard } from "../tls/connection_guard.ts";
import { backstopMs, HandshakeDeadline } from "../tls/handshake_deadline.ts";
import { releaseClosedSessions } from "../tls/session_release.ts";
import { raiseFdLimit } from "../runtime/fd_limit.ts";
import type { ServerFacts } from "./server_info.ts";
import type { RevocationList } from "../auth/revocation.ts";
import { Health } from "./health.ts";
import { auditLog } from "./audit.ts";
import { callEnded, callStarted, trimSoon } from "../runtime/memory_trim.ts";
import { instrumented, type RpcObserver } from "./instrument.ts";
import { groupSessionWrites } from "./tls_write_groups.ts";

export interface RunningServer {
  server: Server;
  /** The port actually bound (useful with port 0). */
  port: number;
  /** Health.drain() when shutting down. */
  health: Health;
}

export async function startServer(
  config: WorkerConfig,
  tls: ServerTlsFiles,
  manager: JobManager,
  facts: ServerFacts,
  revoked?: RevocationList,
  observers: RpcObserver[] = [],
  /** Listening again after a reload's exec failed (see listenError). */
  again = false,
): Promise<RunningServer> {
  // Every call's end counts as work for the collection and trim that follow once quiet, and no
  // such collection runs while a unary call is in progress.
  const quietTime: RpcObserver = {
    rpcStarted: (_service, _method, streaming) => {
      if (!streaming) callStarted();
    },
    rpcEnded: ({ streaming }) => streaming ? trimSoon() : callEnded(),
  };
  const watchers = [auditLog, quietTime, ...observers];
  const fds = raiseFdLimit();
  if (fds === null) log.warn("cannot raise the open-file limit (RLIMIT_NOFILE)");
  else log.debug("open-file limit", { soft: Number(fds.soft), hard: Number(fds.hard) });
  // grpc-js prints its own errors to stderr ("E No address added out of total 1 resolved" before
  // our "address in use" line): its messages go to our log, at debug level, instead.
  const toLog = (...args: unknown[]) => log.debug("grpc-js", { message: args.join(" ") });
  setLogger({ error: toLog, info: toLog, debug: toLog });
  const server = new Server({
    "grpc.max_receive_message_length": config.maxRecvMsgSize,
    "grpc.max_send_message_length": config.maxSendMsgSize,
    // Connections with no call in progress are closed; pings find dead clients, whose streams
    // then end instead of holding their output readers (and stream slots) forever.
    "grpc.max_connection_idle_ms": config.idleTimeoutSeconds * 1000,
    "grpc.keepalive_time_ms": config.keepaliveSeconds * 1000,
    "grpc.keepalive_timeout_ms": config.keepaliveTimeoutSeconds * 1000,
    // No channelz (grpc-js's introspection registry, which this server does not serve): it
    // registered every connection and counted every call.
    "grpc.enable_channelz": 0,
  });
  const handlers = jobServiceHandlers(manager, {
    defaults: config.defaults,
    chunkBytes: Math.min(128 * 1024, config.maxSendMsgSize - 1024),
    maxStreams: config.maxStreams,
    maxStreamsPerClient: config.maxStreamsPerClient,
    maxSendMsgSize: config.maxSendMsgSize,
    server: facts,
    policy: { defaultUser: config.defaultUser, allowPrivileged: config.allowPrivileged },
    viewersSee: config.viewersSee,
    ...(revoked ? { revoked } : {}),
  });
  server.addService(
    jobServiceDefinition,
    instrumented(
      "jobworker.JobService",
      jobServiceDefinition,
      refuseMalformed(jobServiceDefinition, handlers),
      watchers,
    ),
  );
  const health = new Health(["jobworker.JobService"]);
  health.addTo(server, watchers);
  // The handshake deadline is HandshakeDeadline's, which switches node:tls's own timer off; that
  // timer (set here) applies only if the deadline cannot attach.
  const handshakeMs = config.handshakeTimeoutSeconds * 1000;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      config.address,
      mutualTls13(tls, config.maxHeaderListSize, backstopMs(handshakeMs)),
      (error, port) => error ? reject(listenError(config.address, error, again)) : resolve(port),
    );
  });
  // Before the guard: its 'connection' listener is prepended in front of this one's, so a connection
  // it refuses is marked refused (and closed on the next tick) before the deadline would time it.
  if (!new HandshakeDeadline(handshakeMs).attach(server)) {
    log.warn("cannot time TLS handshakes fairly: node:tls's own timeout applies", {
      timeoutSeconds: backstopMs(handshakeMs) / 1000,
    });
  }
  const guard = new ConnectionGuard(config);
  if (!guard.attach(server)) {
    log.warn("cannot limit connections: grpc-js's HTTP/2 servers are not where expected");
  }
  releaseClosedSessions(server);
  // Every session's socket, not only those of metered streams: see tls_write_groups.ts.
  if (!groupSessionWrites(server)) log.warn("cannot group TLS writes: no HTTP/2 servers found");
  return { server, port, health };
}

/**
 * Why the server cannot listen, in words: grpc-js says "No address added out of total 1 resolved
 * errors: [listen EADDRINUSE: address already in use 127.0.0.1:50051]" (a second `make serve`).
 * `again`: listening again after a reload's exec failed, on the address this worker served till
 * then, so advice about choosing the address does not fit: something took it meanwhile.
 */
export function listenError(address: string, error: Error, again = false): Error {
  const why = /resolved errors: \[(.*)\]$/s.exec(error.message)?.[1] ?? error.message;
  const inUse = /EADDRINUSE/.test(why);
  if (again) {
    return new Error(
      `cannot listen on ${address} again after the reload failed: ` +
        (inUse
          ? "the address is in use (EADDRINUSE): another process took it while this worker " +
            "was not listening; free it, then start jobworker again"
          : why),
    );
  }
  if (inUse) {
    return new Error(
      `cannot listen on ${address}: the address is in use (EADDRINUSE): another jobworker or ` +
        "another service listens there; stop it, or choose another address (--addr or " +
        "JOB_WORKER_ADDR)",
    );
  }
  // Advice about the address only where the error is about the address. An address not of this
  // host: EADDRNOTAVAIL in Node, EINVAL under Deno 2.8.3 ("listen EINVAL: invalid argument").
  if (/EADDRNOTAVAIL|EINVAL/.test(why)) {
    return new Error(
      `cannot listen on ${address}: ${why} (--addr or JOB_WORKER_ADDR: an address of this ` +
        "host, or 0.0.0.0)",
    );
  }
  if (/ENOTFOUND|EAI_|Name resolution failed/i.test(why)) {
    return new Error(
      `cannot listen on ${address}: ${why} (--addr or JOB_WORKER_ADDR: a host name this host ` +
        "resolves, or an IP address)",
    );
  }
  return new Error(`cannot listen on ${address}: ${why}`);
}
