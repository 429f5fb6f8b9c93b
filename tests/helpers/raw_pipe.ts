/**
 * A pipe made with libc's pipe2, outside Deno's resources: both ends are plain descriptors, for
 * the worker's code that takes a descriptor (output pipes, status pipes). Non-blocking, so that a
 * full pipe makes a writer wait for the reader instead of hanging the test.
 */
import assert from "node:assert/strict";

const libc = Deno.dlopen("libc.so.6", {
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
});
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

/** A new pipe: its read end and its write end. */
export function rawPipe(): { readFd: number; writeFd: number } {
  const fds = new Int32Array(2);
  assert.equal(libc.symbols.pipe2(new Uint8Array(fds.buffer), O_CLOEXEC | O_NONBLOCK), 0);
  return { readFd: fds[0]!, writeFd: fds[1]! };
}

/** write(2) of `bytes` to `fd`: the count written, or -1 (a full pipe: EAGAIN). */
export function writeFd(fd: number, bytes: Uint8Array): number {
  return Number(libc.symbols.write(fd, bytes, BigInt(bytes.length)));
}

/** close(2). */
export function closeFd(fd: number): void {
  libc.symbols.close(fd);
}
