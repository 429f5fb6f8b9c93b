/**
 * Typed Deno FFI bindings of the C shim (init/shim/jwshim.c). Shared by the worker (spawn, pipes,
 * reaping) and by `jobworker init` (isolation, exec); it imports nothing else so init stays light.
 */

import { errnoName, strerror } from "./errno.ts";

const symbols = {
  jw_spawn: {
    parameters: [
      "buffer",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "i32",
    ],
    result: "i32",
  },
  jw_pipe: { parameters: ["buffer", "i32"], result: "i32" },
  jw_waitpid: { parameters: ["i32", "buffer"], result: "i32" },
  jw_close: { parameters: ["i32"], result: "i32" },
  jw_write: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  jw_read: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  jw_pidfd_send_signal: { parameters: ["i32", "i32"], result: "i32" },
  jw_pidfd_exited: { parameters: ["i32"], result: "i32" },
  jw_pipe_has_writers: { parameters: ["i32"], result: "i32" },
  jw_mounts_open: { parameters: [], result: "i32" },
  jw_mounts_changed: { parameters: ["i32"], result: "i32" },
  jw_unshare_net: { parameters: [], result: "i32" },
  jw_lock_file: { parameters: ["buffer"], result: "i32" },
  jw_make_mounts_private: { parameters: [], result: "i32" },
  jw_mount_proc: { parameters: [], result: "i32" },
  jw_set_hostname: { parameters: ["buffer"], result: "i32" },
  jw_chdir: { parameters: ["buffer"], result: "i32" },
  jw_exec: {
    parameters: ["buffer", "buffer", "i32", "buffer", "i32", "i32", "i32", "i32"],
    result: "i32",
  },
  jw_make_readonly: { parameters: ["buffer", "i32"], result: "i32" },
  jw_bind_readonly: { parameters: ["buffer"], result: "i32" },
  jw_mask: { parameters: ["buffer"], result: "i32" },
  jw_private_dev: { parameters: [], result: "i32" },
  jw_loopback_up: { parameters: [], result: "i32" },
  jw_limit_capabilities: { parameters: ["u64", "i32"], result: "i32" },
  jw_set_user: { parameters: ["u32", "u32", "buffer", "i32"], result: "i32" },
  jw_no_new_privs: { parameters: [], result: "i32" },
  jw_access: { parameters: ["buffer", "i32"], result: "i32" },
  jw_open_path: { parameters: ["buffer"], result: "i32" },
  jw_open_write: { parameters: ["buffer"], result: "i32" },
  jw_join_cgroup: { parameters: ["buffer"], result: "i32" },
  jw_file_batch: {
    parameters: ["buffer", "i32", "i32", "i32", "buffer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  jw_pump_create: { parameters: [], result: "i32" },
  jw_pump_arm: { parameters: ["i32", "i32", "i32"], result: "i32" },
  jw_pump_remove: { parameters: ["i32", "i32"], result: "i32" },
  jw_pump_wait: {
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  jw_pump_poll: {
    name: "jw_pump_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
  },
  jw_park_stops: { parameters: [], result: "i32" },
  jw_unpark_stops: { parameters: [], result: "i32" },
  jw_unblock_stops: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** A failed system call of the shim: `errno` is the positive error number. */
export class ShimError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call} failed: ${errnoName(errno)} (${strerror(errno)})`);
    this.name = "ShimError";
  }
}

const encoder = new TextEncoder();

/** NUL-terminated UTF-8 for a `const char *` parameter. */
export function cString(value: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(value);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Strings packed back to back, each NUL-terminated, as jw_spawn and jw_exec expect. */
export function packStrings(values: readonly string[]): Uint8Array<ArrayBuffer> {
  const parts = values.map((v) => encoder.encode(v));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0) || 1);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length + 1;
  }
  return out;
}

/** How a reaped process ended. */
export interface WaitStatus {
  /** Exit code when it exited, else null. */
  exitCode: number | null;
  /** Signal number when a signal killed it, else null. */
  signal: number | null;
}

/** Decodes a wait(2) status word. */
export function decodeWaitStatus(status: number): WaitStatus {
  const termSig = status & 0x7f;
  if (termSig === 0) return { exitCode: (status >> 8) & 0xff, signal: null };
  return { exitCode: null, signal: termSig };
}

type Symbols = typeof symbols;
export type SymbolName = keyof Symbols;
type Bound<K extends SymbolName> = Deno.DynamicLibrary<Pick<Symbols, K>>["symbols"][K];

/**
 * The shim, loaded. Every method throws {@link ShimError} on failure.
 *
 * Each function is bound at its first call: Deno builds a call trampoline per bound symbol (about
 * 0.12 ms each here), and `jobworker init`, a new Deno process for every job, calls about half of
 * them (binding them all cost 27.3 ms of CPU against 25.5 ms for init's 15, median of four rounds
 * of 40 starts). The worker binds them all at start ({@link bindAll}), so a library that lacks one
 * fails there.
 */
export class Shim {
  readonly #bound = new Map<SymbolName, unknown>();
  /** The libraries opened for bound symbols, kept open for the process's lifetime. */
  readonly #libraries: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

  constructor(readonly path: string) {
    // A library that cannot be loaded at all fails here, not at the first call.
    this.#libraries.push(Deno.dlopen(path, {}));
  }

  /** Binds every function now (the worker: a stale library fails at start, naming the symbol). */
  bindAll(): this {
    return this.bind(Object.keys(symbols) as SymbolName[]);
  }

  /** Binds these functions now rather than at their first call (a pooled init, while it waits). */
  bind(names: readonly SymbolName[]): this {
    for (const name of names) this.#fn(name);
    return this;
  }

  #fn<K extends SymbolName>(name: K): Bound<K> {
    let fn = this.#bound.get(name) as Bound<K> | undefined;
    if (fn === undefined) {
      const library = Deno.dlopen(this.path, { [name]: symbols[name] } as Pick<Symbols, K>);
      this.#libraries.push(library);
      fn = library.symbols[name];
      this.#bound.set(name, fn);
    }
    return fn;
  }

  #check(call: string, result: number): number {
    if (result < 0) throw new ShimError(call, -result);
    return result;
  }

  /**
   * Starts `path` in new PID, mount, IPC and UTS namespaces (and network, with `newNetwork`);
   * `fds[i]` becomes the child's descriptor i, every other descriptor is closed in the child.
   * With `cgroupFd` (an open cgroup v2 directory, which the caller keeps) the child is born in
   * that cgroup (clone3's CLONE_INTO_CGROUP); a kernel that refuses it throws, nothing started.
   */
  spawn(
    path: string,
    argv: readonly string[],
    envp: readonly string[],
    fds: readonly number[],
    newNetwork = false,
    cgroupFd = -1,
  ): {
    pid: number;
    pidfd: number;
  } {
    const fdBuf = new Int32Array(fds);
    const pidfdBuf = new Int32Array([-1]);
    const pid = this.#check(
      "clone3",
      this.#fn("jw_spawn")(
        cString(path),
        packStrings(argv),
        argv.length,
        packStrings(envp),
        envp.length,
        fdBuf,
        fds.length,
        pidfdBuf,
        newNetwork ? 1 : 0,
        cgroupFd,
      ),
    );
    return { pid, pidfd: pidfdBuf[0] ?? -1 };
  }

  /**
   * A close-on-exec pipe: [readEnd, writeEnd, bufferBytes], the buffer grown to `size` bytes when
   * the kernel allows.
   */
  pipe(size = 0): [number, number, number] {
    const fds = new Int32Array(2);
    const capacity = this.#check("pipe2", this.#fn("jw_pipe")(fds, size));
    return [fds[0]!, fds[1]!, capacity];
  }

  /**
   * Runs `count` file operations packed as jw_file_batch expects (`ops`) on a thread of Deno's
   * blocking pool: per operation 0, a read's byte count, or -errno; the bytes read, back to back.
   */
  async fileBatch(
    ops: Uint8Array<ArrayBuffer>,
    count: number,
    stopAtFailure: boolean,
    outBytes: number,
  ): Promise<{ results: Int32Array; out: Uint8Array }> {
    const results = new Int32Array(count);
    const out = new Uint8Array(outBytes);
    const used = this.#check(
      "jw_file_batch",
      await this.#fn("jw_file_batch")(
        ops,
        ops.length,
        count,
        stopAtFailure ? 1 : 0,
        results,
        out,
        out.length,
      ),
    );
    return { results, out: out.subarray(0, used) };
  }

  /** Takes an exclusive lock on `path` for the rest of this process's life; EWOULDBLOCK if held. */
  lockFile(path: string): number {
    return this.#check("flock", this.#fn("jw_lock_file")(cString(path)));
  }

  /** Non-blocking waitpid: the status once `pid` has ended (and is reaped), else null. */
  waitpid(pid: number): WaitStatus | null {
    const status = new Int32Array(1);
    const r = this.#check("waitpid", this.#fn("jw_waitpid")(pid, status));
    return r === 0 ? null : decodeWaitStatus(status[0]!);
  }

  close(fd: number): void {
    this.#check("close", this.#fn("jw_close")(fd));
  }

  /** Writes all of `data` to a blocking descriptor. */
  writeAll(fd: number, data: Uint8Array<ArrayBuffer>): void {
    let at = 0;
    while (at < data.length) {
      const chunk = data.subarray(at);
      at += this.#check("write", this.#fn("jw_write")(fd, chunk, chunk.length));
    }
  }

  /** Reads a blocking descriptor to EOF. */
  readAll(fd: number, limit: number): Uint8Array {
    const chunks: Uint8Array[] = [];
    let total = 0;
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = this.#check("read", this.#fn("jw_read")(fd, buf, buf.length));
      if (n === 0) break;
      total += n;
      if (total > limit) throw new ShimError("read", 7);
      chunks.push(buf.slice(0, n));
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  /** One read(2) into `buf`: the byte count (0 at end of file) or -errno, never a throw. */
  readInto(fd: number, buf: Uint8Array<ArrayBuffer>): number {
    return this.#fn("jw_read")(fd, buf, buf.length);
  }

  /** A new epoll set for the output pump (close-on-exec). */
  pumpCreate(): number {
    return this.#check("epoll_create1", this.#fn("jw_pump_create")());
  }

  /** Arms `fd` in `epfd` for one readiness event; `add` registers it first (made nonblocking). */
  pumpArm(epfd: number, fd: number, add: boolean): void {
    this.#check("epoll_ctl", this.#fn("jw_pump_arm")(epfd, fd, add ? 1 : 0));
  }

  pumpRemove(epfd: number, fd: number): void {
    this.#check("epoll_ctl", this.#fn("jw_pump_remove")(epfd, fd));
  }

  /** Waits on a thread of Deno's blocking pool until descriptors of `epfd` are ready: into `fds`. */
  async pumpWait(epfd: number, fds: Int32Array<ArrayBuffer>, timeoutMs: number): Promise<number> {
    return this.#check(
      "epoll_wait",
      await this.#fn("jw_pump_wait")(epfd, fds, fds.length, timeoutMs),
    );
  }

  /** The descriptors of `epfd` ready now, into `fds`, without waiting (on this thread). */
  pumpPoll(epfd: number, fds: Int32Array<ArrayBuffer>): number {
    return this.#check("epoll_wait", this.#fn("jw_pump_poll")(epfd, fds, fds.length, 0));
  }

  /** Sends a signal through a pidfd (no pid-reuse race). */
  pidfdSignal(pidfd: number, signal: number): void {
    this.#check("pidfd_send_signal", this.#fn("jw_pidfd_send_signal")(pidfd, signal));
  }

  /** True once the process behind `pidfd` has ended (reaped or not). */
  pidfdExited(pidfd: number): boolean {
    return this.#check("poll pidfd", this.#fn("jw_pidfd_exited")(pidfd)) === 1;
  }

  /**
   * Whether a write end of the pipe whose read end is `fd` is open somewhere (poll(2): no POLLHUP
   * yet); false once none is.
   */
  pipeHasWriters(fd: number): boolean {
    return this.#check("poll pipe", this.#fn("jw_pipe_has_writers")(fd)) === 1;
  }

  /** This process's mount table as a descriptor for {@link mountsChanged}. */
  mountsOpen(): number {
    return this.#check("open /proc/self/mounts", this.#fn("jw_mounts_open")());
  }

  /** Whether a mount or unmount happened in this mount namespace since the last look at `fd`. */
  mountsChanged(fd: number): boolean {
    return this.#check("poll /proc/self/mounts", this.#fn("jw_mounts_changed")(fd)) === 1;
  }

  /** A new network namespace for this (main) thread, with only a loopback interface (down). */
  unshareNetwork(): void {
    this.#check("unshare network", this.#fn("jw_unshare_net")());
  }

  makeMountsPrivate(): void {
    this.#check("mount / private", this.#fn("jw_make_mounts_private")());
  }

  mountProc(): void {
    this.#check("mount /proc", this.#fn("jw_mount_proc")());
  }

  setHostname(name: string): void {
    this.#check("sethostname", this.#fn("jw_set_hostname")(cString(name)));
  }

  chdir(dir: string): void {
    this.#check("chdir", this.#fn("jw_chdir")(cString(dir)));
  }

  /**
   * Replaces this process with `path` (or the program open as `execFd`), `stdoutFd` and
   * `stderrFd` becoming its descriptors 1 and 2; returns only by throwing.
   */
  exec(
    path: string,
    argv: readonly string[],
    envp: readonly string[],
    stdoutFd: number,
    stderrFd: number,
    execFd = -1,
  ): never {
    const r = this.#fn("jw_exec")(
      cString(path),
      packStrings(argv),
      argv.length,
      packStrings(envp),
      envp.length,
      stdoutFd,
      stderrFd,
      execFd,
    );
    throw new ShimError("execve", r < 0 ? -r : 5);
  }

  /** Makes the mount at `path` read-only (with the mounts below it when `recursive`). */
  makeReadonly(path: string, recursive: boolean): void {
    this.#check(
      `read-only ${path}`,
      this.#fn("jw_make_readonly")(cString(path), recursive ? 1 : 0),
    );
  }

  /** Binds `path` onto itself, read-only; nothing happens when it does not exist. */
  bindReadonly(path: string): void {
    this.#check(`bind read-only ${path}`, this.#fn("jw_bind_readonly")(cString(path)));
  }

  /** Covers `path` (empty read-only tmpfs, or /dev/null for a file); nothing if it is absent. */
  mask(path: string): void {
    this.#check(`mask ${path}`, this.#fn("jw_mask")(cString(path)));
  }

  /** Replaces /dev by a private one with only the harmless devices, devpts and /dev/shm. */
  privateDev(): void {
    this.#check("private /dev", this.#fn("jw_private_dev")());
  }

  loopbackUp(): void {
    this.#check("loopback up", this.#fn("jw_loopback_up")());
  }

  /** Bounding, permitted, effective (and inheritable) sets limited to `keep`; ambient cleared. */
  limitCapabilities(keep: bigint, inheritable: boolean): void {
    this.#check(
      "capabilities",
      this.#fn("jw_limit_capabilities")(keep, inheritable ? 1 : 0),
    );
  }

  setUser(uid: number, gid: number, groups: readonly number[]): void {
    const buf = new Uint32Array(groups.length || 1);
    buf.set(groups);
    this.#check("setuid", this.#fn("jw_set_user")(uid, gid, buf, groups.length));
  }

  noNewPrivs(): void {
    this.#check("no_new_privs", this.#fn("jw_no_new_privs")());
  }

  /** access(2) with the effective ids: 0 when allowed, else the errno. */
  access(path: string, mode: number): number {
    const r = this.#fn("jw_access")(cString(path), mode);
    return r < 0 ? -r : 0;
  }

  /** An O_PATH, close-on-exec descriptor of `path`. */
  openPath(path: string): number {
    return this.#check(`open ${path}`, this.#fn("jw_open_path")(cString(path)));
  }

  /** Joins the cgroup whose `cgroup.procs` file this is. */
  joinCgroup(procsFile: string): void {
    this.#check(`write ${procsFile}`, this.#fn("jw_join_cgroup")(cString(procsFile)));
  }

  /** A write-only, close-on-exec descriptor of an existing file. */
  openWrite(path: string): number {
    return this.#check(`open ${path}`, this.#fn("jw_open_write")(cString(path)));
  }

  /**
   * From now on SIGTERM and SIGINT are parked on this thread (blocked and pending) instead of
   * reaching Deno: they then survive an exec of this process (see jwshim.c). Undo with
   * {@link unparkStops}.
   */
  parkStops(): void {
    this.#check("park stop signals", this.#fn("jw_park_stops")());
  }

  /** Ends {@link parkStops}; a parked signal reaches Deno now. Returns its number, 0 if none. */
  unparkStops(): number {
    return this.#fn("jw_unpark_stops")();
  }

  /** Unblocks SIGTERM and SIGINT on this thread (they may arrive blocked across an exec). */
  unblockStops(): void {
    this.#check("unblock stop signals", this.#fn("jw_unblock_stops")());
  }
}
