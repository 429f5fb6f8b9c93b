/**
 * A client process that opens streams and then holds them: `deno run -A stream_holder.ts CERT_DIR
 * ADDRESS JOB_ID COUNT` opens COUNT GetJobsStream calls on the job (admin certificate), prints
 * "open" once each has received its first chunk (the job must write something), and waits. Stopped
 * with SIGSTOP it becomes a dead client: its connection stays up (the kernel still acknowledges
 * TCP) but nothing answers the server's HTTP/2 pings.
 */
import { clientFor } from "./clients.ts";

const [certDir, address, id, count] = Deno.args;
if (!certDir || !address || !id || !count) {
  console.error("usage: stream_holder.ts CERT_DIR ADDRESS JOB_ID COUNT");
  Deno.exit(2);
}
const client = clientFor(certDir, address);
const streams = Array.from(
  { length: Number(count) },
  () => client.stream(id)[Symbol.asyncIterator](),
);
await Promise.all(streams.map((s) => s.next()));
console.log("open");
for (const stream of streams) while (!(await stream.next()).done);
client.close();
