/** The plain-HTTP /metrics endpoint (JOB_WORKER_METRICS_ADDR), for a Prometheus scraper. */
import type { WorkerMetrics } from "./metrics.ts";

export interface MetricsEndpoint {
  port: number;
  stop(): Promise<void>;
}

export function serveMetrics(address: string, metrics: WorkerMetrics): Promise<MetricsEndpoint> {
  const colon = address.lastIndexOf(":");
  const hostname = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const { promise, resolve, reject } = Promise.withResolvers<MetricsEndpoint>();
  try {
    const server = Deno.serve({
      hostname,
      port: Number(address.slice(colon + 1)),
      onListen: ({ port }) => resolve({ port, stop: () => server.shutdown() }),
      onError: () => new Response("internal error\n", { status: 500 }),
    }, async (request) => {
      const path = new URL(request.url).pathname;
      if (path !== "/metrics") return new Response("not found: try /metrics\n", { status: 404 });
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response("method not allowed\n", { status: 405 });
      }
      return new Response(await metrics.text(), {
        headers: { "content-type": metrics.contentType },
      });
    });
  } catch (e) {
    reject(new Error(`cannot serve metrics on ${address}: ${(e as Error).message}`));
  }
  return promise;
}
