/**
 * The gRPC server: mutual TLS 1.3 credentials, message size limits, JobService and the health
 * service, every call audited (and counted when metrics are on).
 */
import { Server } from "@grpc/grpc-js";
import { jobServiceDefinition } from "../../proto/service.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { WorkerConfig } from "../config.ts";
import { mutualTls13, type ServerTlsFiles } from "../tls/server_credentials.ts";
import { jobServiceHandlers } from "./handlers.ts";
import { Health } from "./health.ts";
import { auditLog } from "./audit.ts";
import { instrumented, type RpcObserver } from "./instrument.ts";

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
  observers: RpcObserver[] = [],
): Promise<RunningServer> {
  const watchers = [auditLog, ...observers];
  const server = new Server({
    "grpc.max_receive_message_length": config.maxRecvMsgSize,
    "grpc.max_send_message_length": config.maxSendMsgSize,
  });
  const handlers = jobServiceHandlers(manager, {
    defaults: config.defaults,
    chunkBytes: Math.min(128 * 1024, config.maxSendMsgSize - 1024),
    maxStreams: config.maxStreams,
  });
  server.addService(
    jobServiceDefinition,
    instrumented("jobworker.JobService", jobServiceDefinition, handlers, watchers),
  );
  const health = new Health(["jobworker.JobService"]);
  health.addTo(server, watchers);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      config.address,
      mutualTls13(tls, config.maxHeaderListSize),
      (error, port) => error ? reject(error) : resolve(port),
    );
  });
  return { server, port, health };
}
