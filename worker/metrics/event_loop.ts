/**
 * Event-loop delay, measured by how late a periodic timer fires. (node:perf_hooks'
 * monitorEventLoopDelay exists under Deno 2.8 but does not measure: a 300 ms busy loop showed a
 * 0.05 ms maximum.)
 */
const INTERVAL_MS = 50;

/** Calls `observe(seconds late)` every interval until the returned stop function is called. */
export function watchEventLoop(observe: (seconds: number) => void): () => void {
  let expected = performance.now() + INTERVAL_MS;
  const timer = setInterval(() => {
    const now = performance.now();
    observe(Math.max(0, now - expected) / 1000);
    expected = now + INTERVAL_MS;
  }, INTERVAL_MS);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
