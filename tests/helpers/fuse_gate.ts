/**
 * A real FUSE filesystem, served by the test process itself through /dev/fuse, with one directory
 * whose lookup waits until the test opens the gate. A job whose workDir is {@link FuseGate.dir}
 * stays INITIALIZING (its init blocks in chdir, before the exec) for exactly as long as the test
 * wants: no sleep, no race. Everything else of the mount (its root) answers at once. The root
 * lists the directory: a recursive removal of a tree the gate is mounted in waits at it too.
 *
 * The protocol subset served: INIT, LOOKUP, GETATTR, ACCESS, OPENDIR/READDIR/RELEASEDIR; the rest
 * is ENOSYS (linux/fuse.h). The device is read non-blocking from a timer: no thread stays blocked
 * in a read when the test ends.
 */

const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});

const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const EAGAIN = 11;
const ENOENT = 2;
const ENOSYS = 38;

const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
} as const;

const HELD = "held";
const HELD_NODE = 2n;

const cString = (s: string) => new TextEncoder().encode(`${s}\0`);

function errno(): number {
  const p = libc.symbols.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** struct fuse_attr (88 bytes) of a directory. */
function dirAttr(view: DataView, at: number, ino: bigint): void {
  view.setBigUint64(at, ino, true);
  view.setUint32(at + 60, 0o40755, true); // mode
  view.setUint32(at + 64, 2, true); // nlink
  view.setUint32(at + 80, 4096, true); // blksize
}

/** The root's one entry, {@link HELD}: a struct fuse_dirent, padded to 8 bytes. */
function heldDirent(): Uint8Array<ArrayBuffer> {
  const name = new TextEncoder().encode(HELD);
  const out = new Uint8Array(24 + Math.ceil(name.length / 8) * 8);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, HELD_NODE, true); // ino
  view.setBigUint64(8, 1n, true); // off: where the next entry would be
  view.setUint32(16, name.length, true); // namelen
  view.setUint32(20, 4, true); // type: DT_DIR
  out.set(name, 24);
  return out;
}

export class FuseGate {
  #open = false;
  #held: bigint[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  readonly #buffer = new Uint8Array((1 << 20) + 4096);

  private constructor(readonly mountpoint: string, private readonly fd: number) {}

  /** The directory whose lookup waits for {@link open}. */
  get dir(): string {
    return `${this.mountpoint}/${HELD}`;
  }

  /** Lookups of {@link dir} waiting for the gate now. */
  get waiting(): number {
    return this.#held.length;
  }

  /** Mounts a gate at `at` (an empty directory, removed at unmount), else at a new temporary one. */
  static async mount(at?: string): Promise<FuseGate> {
    const mountpoint = at ?? await Deno.makeTempDir({ prefix: "jobworker-fuse-gate-" });
    const fd = libc.symbols.open(cString("/dev/fuse"), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw new Error(`cannot open /dev/fuse (errno ${errno()})`);
    const options = `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other`;
    const r = libc.symbols.mount(
      cString("jobworker-gate"),
      cString(mountpoint),
      cString("fuse.jobworker-gate"),
      BigInt(MS_NOSUID | MS_NODEV),
      cString(options),
    );
    if (r !== 0) {
      const e = errno();
      libc.symbols.close(fd);
      throw new Error(`cannot mount FUSE at ${mountpoint} (errno ${e})`);
    }
    const gate = new FuseGate(mountpoint, fd);
    gate.#poll();
    return gate;
  }

  /** Lets every waiting and later lookup of {@link dir} through. */
  open(): void {
    this.#open = true;
    for (const unique of this.#held.splice(0)) this.#replyEntry(unique);
  }

  /** Unmounts (a lookup still waiting fails with ENOTCONN). */
  async unmount(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    libc.symbols.umount2(cString(this.mountpoint), MNT_DETACH);
    libc.symbols.close(this.fd);
    await Deno.remove(this.mountpoint).catch(() => {});
  }

  #poll(): void {
    if (this.#closed) return;
    for (;;) {
      const n = Number(libc.symbols.read(this.fd, this.#buffer, BigInt(this.#buffer.length)));
      if (n < 0) {
        const e = errno();
        if (e === EAGAIN) break;
        return; // ENODEV: unmounted
      }
      this.#handle(this.#buffer.subarray(0, n));
    }
    this.#timer = setTimeout(() => this.#poll(), 2);
  }

  #handle(request: Uint8Array): void {
    const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
    const opcode = view.getUint32(4, true);
    const unique = view.getBigUint64(8, true);
    const node = view.getBigUint64(16, true);
    switch (opcode) {
      case OP.INIT: {
        const out = new DataView(new ArrayBuffer(64));
        out.setUint32(0, 7, true); // major
        out.setUint32(4, 31, true); // minor
        out.setUint32(20, 4096, true); // max_write
        out.setUint32(24, 1, true); // time_gran
        return this.#reply(unique, 0, new Uint8Array(out.buffer));
      }
      case OP.LOOKUP: {
        const name = new TextDecoder().decode(request.subarray(40, request.indexOf(0, 40)));
        if (node !== 1n || name !== HELD) return this.#reply(unique, -ENOENT);
        if (this.#open) return this.#replyEntry(unique);
        this.#held.push(unique);
        return;
      }
      case OP.GETATTR: {
        const out = new DataView(new ArrayBuffer(104));
        out.setBigUint64(0, 1n, true); // attr_valid (s)
        dirAttr(out, 16, node);
        return this.#reply(unique, 0, new Uint8Array(out.buffer));
      }
      case OP.ACCESS:
      case OP.RELEASEDIR:
        return this.#reply(unique, 0);
      case OP.OPENDIR:
        return this.#reply(unique, 0, new Uint8Array(16));
      case OP.READDIR: {
        // struct fuse_read_in after the 40-byte header: fh, then the offset to list from.
        const offset = view.getBigUint64(48, true);
        if (node !== 1n || offset > 0n) return this.#reply(unique, 0);
        return this.#reply(unique, 0, heldDirent());
      }
      case OP.FORGET:
      case OP.BATCH_FORGET:
      case OP.INTERRUPT:
      case OP.DESTROY:
        return;
      default:
        return this.#reply(unique, -ENOSYS);
    }
  }

  #replyEntry(unique: bigint): void {
    const out = new DataView(new ArrayBuffer(128));
    out.setBigUint64(0, HELD_NODE, true); // nodeid
    out.setBigUint64(16, 1n, true); // entry_valid (s)
    out.setBigUint64(24, 1n, true); // attr_valid (s)
    dirAttr(out, 40, HELD_NODE);
    this.#reply(unique, 0, new Uint8Array(out.buffer));
  }

  #reply(unique: bigint, error: number, payload = new Uint8Array(0)): void {
    const message = new Uint8Array(16 + payload.length);
    const view = new DataView(message.buffer);
    view.setUint32(0, message.length, true);
    view.setInt32(4, error, true);
    view.setBigUint64(8, unique, true);
    message.set(payload, 16);
    // A request interrupted meanwhile (its process killed) gives ENOENT here: nothing to do.
    libc.symbols.write(this.fd, message, BigInt(message.length));
  }
}
