/**
 * A pipe's read end as a node:net Socket (worker/runtime/pipe_socket.ts) is freed once closed,
 * native handle included: Deno 2.8.3 keeps the Socket's native handle (about 3 KiB of RSS each),
 * which held the Socket, and with it everything its listeners close over (a job's whole object
 * graph, for every job the worker ever ran).
 *
 * Run: `deno test -A tests/pipe_socket_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import v8 from "node:v8";
import vm from "node:vm";
import { pipeSocket } from "../worker/runtime/pipe_socket.ts";
import { openOutputPipe } from "../worker/runtime/output_pipe.ts";
import { OutputPump } from "../worker/runtime/output_pump.ts";
import { Shim } from "../init/shim/ffi.ts";

const libc = Deno.dlopen("libc.so.6", {
  pipe: { parameters: ["buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
});
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Opens `count` pipes as `open` makes them, closes their write ends; weak refs to their sockets,
 * their native handles (the PipeWrap, whose collection frees its native side) and their owners.
 */
async function closedPipes(
  count: number,
  open: (fd: number, owner: object) => import("node:net").Socket,
): Promise<WeakRef<object>[]> {
  const refs: WeakRef<object>[] = [];
  for (let i = 0; i < count; i++) {
    const fds = new Int32Array(2);
    assert.equal(libc.symbols.pipe(new Uint8Array(fds.buffer)), 0);
    // What a listener closes over, like a job's output log.
    const owner = { bytes: new Uint8Array(1024) };
    const socket = open(fds[0]!, owner);
    const handle = (socket as unknown as { _handle: object })._handle;
    assert.equal(typeof handle, "object");
    const closed = new Promise((resolve) => socket.once("close", resolve));
    libc.symbols.close(fds[1]!);
    await closed;
    refs.push(new WeakRef(socket), new WeakRef(handle), new WeakRef(owner));
  }
  return refs;
}

/** Weak refs to an output pipe and what its sink holds, once its writer closed and it ended. */
async function closedOutputPipe(pump: OutputPump): Promise<WeakRef<object>[]> {
  const fds = new Int32Array(2);
  assert.equal(libc.symbols.pipe(new Uint8Array(fds.buffer)), 0);
  const owner = { bytes: new Uint8Array(1024) };
  const pipe = openOutputPipe(pump, fds[0]!, () => void owner);
  libc.symbols.close(fds[1]!);
  await pipe.closed;
  return [new WeakRef(pipe), new WeakRef(owner)];
}

async function stillAlive(refs: WeakRef<object>[]): Promise<number> {
  await delay(50); // a WeakRef holds its target until the current job ends
  gc();
  await delay(50);
  gc();
  return refs.filter((ref) => ref.deref() !== undefined).length;
}

Deno.test({
  name: "a closed pipe's socket, its native handle and what its listeners hold are freed",
  sanitizeResources: false, // libc stays open for the file
  fn: async () => {
    const refs = await closedPipes(20, (fd, owner) => {
      const socket = pipeSocket({ fd, readable: true, writable: false });
      socket.on("data", () => owner);
      return socket;
    });
    assert.equal(await stillAlive(refs), 0);
  },
});

Deno.test({
  name: "a job's output pipe (read by the output pump) and what its sink holds are freed",
  sanitizeResources: false,
  fn: async () => {
    const pump = new OutputPump(
      new Shim(new URL("../build/libjwshim.so", import.meta.url).pathname),
    );
    const refs: WeakRef<object>[] = [];
    for (let i = 0; i < 20; i++) refs.push(...await closedOutputPipe(pump));
    assert.equal(await stillAlive(refs), 0);
  },
});
