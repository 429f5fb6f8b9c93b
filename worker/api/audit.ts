/**
 * The audit trail: one log line per RPC once it has ended (who, what, which job, the outcome, how
 * long), on stderr with the other logs so journald keeps it. Health checks, which load balancers
 * send every few seconds, are logged at debug level; every other RPC at info.
 */
import { log } from "../log/logger.ts";
import type { RpcObserver, RpcRecord } from "./instrument.ts";
import { HEALTH_SERVICE } from "./health.ts";

export const auditLog: RpcObserver = {
  rpcEnded(record: RpcRecord): void {
    const fields = {
      method: `${record.service}/${record.method}`,
      caller: record.caller,
      role: record.role,
      job: record.jobId,
      code: record.code,
      duration_ms: record.durationMs,
      ...(record.streamedBytes > 0 ? { bytes: record.streamedBytes } : {}),
    };
    if (record.service === HEALTH_SERVICE) log.debug("audit", fields);
    else log.info("audit", fields);
  },
};
