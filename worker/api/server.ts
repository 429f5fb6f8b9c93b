/** The gRPC server: mutual TLS 1.3 credentials, message size limits, JobService. */
import { Server, setLogger } from "@grpc/grpc-js";
import { log } from "../log/logger.ts";
import { jobServiceDefinition } from "../../proto/service.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { WorkerConfig } from "../config.ts";
import { mutualTls13, type ServerTlsFiles } from "../tls/server_credentials.ts";
import { jobServiceHandlers } from "./handlers.ts";
import type { ServerFacts } from "./server_info.ts";

export interface RunningServer {
  server: Server;
  /** The port actually bound (useful with port 0). */
  port: number;
}

export async function startServer(
  config: WorkerConfig,
  tls: ServerTlsFiles,
  manager: JobManager,
  facts: ServerFacts,
): Promise<RunningServer> {
  // grpc-js prints its own errors to stderr ("E No address added out of total 1 resolved" before
  // our "address in use" line): its messages go to our log, at debug level, instead.
  const toLog = (...args: unknown[]) => log.debug("grpc-js", { message: args.join(" ") });
  setLogger({ error: toLog, info: toLog, debug: toLog });
  const server = new Server({
    "grpc.max_receive_message_length": config.maxRecvMsgSize,
    "grpc.max_send_message_length": config.maxSendMsgSize,
  });
  server.addService(
    jobServiceDefinition,
    jobServiceHandlers(manager, {
      defaults: config.defaults,
      chunkBytes: Math.min(128 * 1024, config.maxSendMsgSize - 1024),
      maxStreams: config.maxStreams,
      maxSendMsgSize: config.maxSendMsgSize,
      server: facts,
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      config.address,
      mutualTls13(tls, config.maxHeaderListSize),
      (error, port) => error ? reject(error) : resolve(port),
    );
  });
  return { server, port };
}
