/**
 * A TCP port free right now on 127.0.0.1, for a server that must listen on a fixed port (a worker
 * that reloads or restarts listens anew on its configured address). Another process may take it
 * before the server does; tests use it only where a fixed port is the point.
 */
export function freePort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  return port;
}
