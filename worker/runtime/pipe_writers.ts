/**
 * Whether anything can still write into a pipe we read: poll(2) reports POLLHUP on a pipe's read
 * end once every write end is closed. Used after a job's processes are all gone, to tell a worker
 * that is merely behind in reading (no writers: end of file is certain) from a writer that escaped
 * the job (a descriptor passed to a process outside it).
 */
const POLLIN = 0x1;
const POLLHUP = 0x10;

let libc: Deno.DynamicLibrary<{ poll: { parameters: ["buffer", "u64", "i32"]; result: "i32" } }>;

function poll(fd: number): number {
  libc ??= Deno.dlopen("libc.so.6", {
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  });
  const pollfd = new Uint8Array(8); // struct pollfd { int fd; short events; short revents; }
  const view = new DataView(pollfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, POLLIN, true);
  if (libc.symbols.poll(pollfd, 1n, 0) < 0) return -1;
  return view.getInt16(6, true);
}

/**
 * True while a write end of the pipe whose read end is `fd` is open somewhere; false once none is;
 * true when it cannot be told (the caller then bounds its wait).
 */
export function pipeHasWriters(fd: number): boolean {
  const revents = poll(fd);
  return revents < 0 || (revents & POLLHUP) === 0;
}
