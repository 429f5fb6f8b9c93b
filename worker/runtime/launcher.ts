/**
 * Starts a job's first process: pipes for its output, the init spec and init's status, then the
 * shim's clone3 into new namespaces running this program as `jobworker init` (see init/spec.ts).
 * Pipe read ends are read through node:net sockets, which libuv polls without a thread per pipe.
 */
import net from "node:net";
import type { Shim } from "../../init/shim/ffi.ts";
import { initArgs, type InitFailure, type InitSpec } from "../../init/spec.ts";
import type { SelfCommand } from "./self_exec.ts";
import { log } from "../log/logger.ts";

/** Large pipe buffers let a job write bursts without waiting for the worker. */
const OUTPUT_PIPE_SIZE = 1024 * 1024;
/** The spec is written before the child starts, so it must fit in the pipe. */
export const MAX_SPEC_BYTES = 1024 * 1024;

export interface LaunchedProcess {
  pid: number;
  pidfd: number;
  stdout: net.Socket;
  stderr: net.Socket;
  /** The descriptors under stdout and stderr (a reload passes them to the new process). */
  stdoutFd: number;
  stderrFd: number;
  /** Settles once init has exec'd the command (null) or reported why it could not. */
  started: Promise<InitFailure | null>;
  /** Signals the first process through its pidfd (no pid-reuse race); quiet if it is gone. */
  signal(signal: number): void;
  /** Closes the pidfd; call once the process has been reaped. */
  release(): void;
}

function readAll(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    const decoder = new TextDecoder();
    let text = "";
    socket.on("data", (c: Uint8Array) => text += decoder.decode(c, { stream: true }));
    socket.on("error", () => {});
    socket.on("close", () => resolve(text + decoder.decode()));
  });
}

function parseFailure(text: string): InitFailure | null {
  if (text === "") return null;
  try {
    const parsed = JSON.parse(text) as Partial<InitFailure>;
    return {
      stage: parsed.stage ?? "exec",
      errno: parsed.errno ?? 0,
      message: parsed.message ?? `could not start the job's init (errno ${parsed.errno ?? "?"})`,
    };
  } catch {
    return { stage: "exec", errno: 0, message: `init reported: ${text.slice(0, 200)}` };
  }
}

export class Launcher {
  constructor(private readonly shim: Shim, private readonly self: SelfCommand) {}

  /** Starts init for `spec`; throws ShimError when the process cannot be created at all. */
  launch(spec: InitSpec): LaunchedProcess {
    const specBytes = new TextEncoder().encode(JSON.stringify(spec));
    if (specBytes.length > MAX_SPEC_BYTES) throw new RangeError("job spec too large");
    const open: number[] = [];
    const pipe = (size = 0) => {
      const [r, w, capacity] = this.shim.pipe(size);
      open.push(r, w);
      return [r, w, capacity] as const;
    };
    const closeAll = (fds: number[]) => {
      for (const fd of fds) {
        try {
          this.shim.close(fd);
        } catch { /* already closed */ }
      }
    };
    try {
      const [outR, outW] = pipe(OUTPUT_PIPE_SIZE);
      const [errR, errW] = pipe(OUTPUT_PIPE_SIZE);
      const [specR, specW, specCapacity] = pipe(MAX_SPEC_BYTES);
      // Written before the child runs: a spec larger than the pipe would block the worker.
      if (specBytes.length > specCapacity) {
        throw new RangeError(
          `job spec of ${specBytes.length} bytes exceeds the pipe's ${specCapacity}`,
        );
      }
      const [statusR, statusW] = pipe();
      const [initLogR, initLogW] = pipe();
      this.shim.writeAll(specW, specBytes);
      // Layout: see init/spec.ts (negative = /dev/null).
      const { pid, pidfd } = this.shim.spawn(
        this.self.path,
        [...this.self.argv, ...initArgs(this.shim.path)],
        this.self.env,
        [-1, -1, initLogW, specR, statusW, outW, errW],
      );
      closeAll([outW, errW, specR, specW, statusW, initLogW]);
      const socket = (fd: number) => new net.Socket({ fd, readable: true, writable: false });
      let released = false;
      return {
        pid,
        pidfd,
        signal: (signal) => {
          if (released) return;
          try {
            this.shim.pidfdSignal(pidfd, signal);
          } catch { /* already ended */ }
        },
        release: () => {
          if (!released) closeAll([pidfd]);
          released = true;
        },
        stdout: socket(outR),
        stderr: socket(errR),
        stdoutFd: outR,
        stderrFd: errR,
        started: Promise.all([readAll(socket(statusR)), readAll(socket(initLogR))]).then(
          ([status, initLog]) => {
            const failure = parseFailure(status);
            if (initLog.trim() === "") return failure;
            if (failure) return { ...failure, message: `${failure.message} (${initLog.trim()})` };
            log.warn("job init wrote to stderr", { pid, text: initLog.trim().slice(0, 2000) });
            return null;
          },
        ),
      };
    } catch (e) {
      closeAll(open);
      throw e;
    }
  }
}
