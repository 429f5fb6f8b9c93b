/**
 * The standard gRPC health service (grpc.health.v1.Health: Check, Watch, List), served on the
 * worker's own port behind the same mutual TLS and without a role check: any certificate of the
 * worker's CA may ask. The service definition comes from the grpc-node team's grpc-health-check
 * package (its health.proto); the handlers are here so draining can end Watch streams, which
 * would otherwise hold the server's graceful shutdown open.
 */
import type {
  sendUnaryData,
  Server,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
} from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import type { RpcObserver } from "./instrument.ts";
import { instrumented } from "./instrument.ts";
import { serviceError } from "./status.ts";

export type ServingStatus = "SERVING" | "NOT_SERVING";
type WatchStatus = ServingStatus | "SERVICE_UNKNOWN";

interface CheckRequest {
  service: string;
}
interface CheckResponse {
  status: WatchStatus;
}

export const HEALTH_SERVICE = "grpc.health.v1.Health";

export class Health {
  readonly #status = new Map<string, ServingStatus>();
  readonly #watchers = new Set<{ service: string; call: ServerWritableStream<unknown, unknown> }>();

  /** `services`: the names clients may ask about besides "" (the whole server). */
  constructor(services: string[]) {
    for (const name of ["", ...services]) this.#status.set(name, "SERVING");
  }

  /** Every service NOT_SERVING; Watch streams get that, then end, so the server can drain. */
  drain(): void {
    for (const name of this.#status.keys()) this.#status.set(name, "NOT_SERVING");
    for (const watcher of this.#watchers) {
      watcher.call.write({ status: "NOT_SERVING" });
      watcher.call.end();
    }
    this.#watchers.clear();
  }

  addTo(server: Server, observers: RpcObserver[]): void {
    const check = (
      call: ServerUnaryCall<CheckRequest, CheckResponse>,
      callback: sendUnaryData<CheckResponse>,
    ) => {
      const current = this.#status.get(call.request.service);
      if (current === undefined) {
        callback(serviceError(status.NOT_FOUND, `unknown service "${call.request.service}"`));
      } else {
        callback(null, { status: current });
      }
    };
    const watch = (call: ServerWritableStream<CheckRequest, CheckResponse>) => {
      const current = this.#status.get(call.request.service) ?? "SERVICE_UNKNOWN";
      call.write({ status: current });
      if (current === "NOT_SERVING") {
        call.end();
        return;
      }
      const watcher = { service: call.request.service, call } as {
        service: string;
        call: ServerWritableStream<unknown, unknown>;
      };
      this.#watchers.add(watcher);
      call.on("cancelled", () => this.#watchers.delete(watcher));
    };
    const list = (
      _call: ServerUnaryCall<unknown, unknown>,
      callback: sendUnaryData<{ statuses: Record<string, CheckResponse> }>,
    ) => {
      const statuses = Object.fromEntries(
        [...this.#status].map(([name, s]) => [name, { status: s }]),
      );
      callback(null, { statuses });
    };
    const definition = healthService as unknown as ServiceDefinition;
    server.addService(
      definition,
      instrumented(
        HEALTH_SERVICE,
        definition,
        { Check: check, Watch: watch, List: list },
        observers,
      ),
    );
  }
}
