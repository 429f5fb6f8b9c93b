/**
 * The audit trail: one log line per RPC once it has ended (who, what, which job, the outcome, how
 * long), on stderr with the other logs so journald keeps it. Health checks, which load balancers
 * send every few seconds, are logged at debug level; every other RPC at info.
 *
 * The line is written a moment after the call ended, once its response has gone out: a call ends
 * (and is recorded) before grpc-js writes its response, and the log's write to stderr is
 * synchronous on the event loop (measured in a profile of the worker: about 0.25 ms of the loop
 * per line, as written to a pipe), so writing it there held every response back by that much. A
 * unary response goes out over two or three turns of the loop (headers and message, then the
 * trailers once that write completed), so a timer of the next turn still came before the
 * trailers; {@link WRITE_DELAY_MS} lets them go first. Lines keep the order their calls ended in
 * (several are written together under load), and {@link flushAuditLog} writes any still waiting
 * at once (the worker does before it stops serving or execs).
 */
import { log } from "../log/logger.ts";
import type { RpcObserver, RpcRecord } from "./instrument.ts";
import { HEALTH_SERVICE } from "./health.ts";

/** How long a line waits for its call's response to go out (a few turns of an idle loop). */
export const WRITE_DELAY_MS = 5;

let waiting: { debug: boolean; fields: Record<string, unknown> }[] = [];
let flush: ReturnType<typeof setTimeout> | undefined;

/** Writes the audit lines that wait (the worker does before it stops serving or execs). */
export function flushAuditLog(): void {
  clearTimeout(flush);
  flush = undefined;
  const lines = waiting;
  waiting = [];
  for (const { debug, fields } of lines) {
    if (debug) log.debug("audit", fields);
    else log.info("audit", fields);
  }
}

export const auditLog: RpcObserver = {
  rpcEnded(record: RpcRecord): void {
    waiting.push({
      debug: record.service === HEALTH_SERVICE,
      fields: {
        method: `${record.service}/${record.method}`,
        caller: record.caller,
        role: record.role,
        job: record.jobId,
        code: record.code,
        duration_ms: record.durationMs,
        ...(record.streamedBytes > 0 ? { bytes: record.streamedBytes } : {}),
      },
    });
    flush ??= setTimeout(flushAuditLog, WRITE_DELAY_MS);
  },
};
