/**
 * `jobworker init` processes cloned ahead of demand (JOB_WORKER_INIT_POOL), so a job's start does
 * not wait for Deno to start. Each member is already PID 1 of its own PID, mount, IPC and UTS
 * namespaces (host network), has made every mount private and mounted a fresh /proc, and blocks
 * reading a job's spec. Everything job-specific (hostname, network namespace, cgroup, profile,
 * user, workDir) happens only once the Launcher hands it a spec.
 *
 * A waiting member is not a job: the job table never sees it, and it counts against no limit. Its
 * pipes and pidfd are made at fill time and handed to the job that claims it. Without slots it sits
 * in the worker's own cgroup and joins the job's when claimed (a cgroup move: an RCU grace period,
 * 5-24 ms here, on the start path). With slots (cgroup v1, {@link CgroupSlots}) each member gets a
 * cgroup of its own, without limits, which it joins once its Deno start is done (that memory stays
 * charged to the worker); a job claims a member through {@link InitPool.adopt}, which writes the
 * job's limits into the member's slot and renames it to the job's cgroup, so nothing moves on the
 * start path. A slot goes when its member goes (drain, death, dismissal); slots a crashed worker
 * left are removed at start like any stale job cgroup.
 *
 * The pool refills one clone per event-loop turn, at most {@link WARMING} Deno starts at a time,
 * after every claim. A burst that drains it falls back to cloning a fresh init per job. A member
 * that died while waiting is reaped, never handed a job, and replaced (with a growing pause when
 * members keep dying before they are ready, so a broken program does not clone in a loop).
 */
import type { Shim } from "../../init/shim/ffi.ts";
import type { CgroupSlots, JobCgroup, Limits } from "../cgroups/types.ts";
import type { Reaper } from "./reaper.ts";
import type { SelfCommand } from "./self_exec.ts";
import { closeQuietly, initLogText, type InitProcess, spawnInit } from "./init_process.ts";
import { POOL_READY } from "../../init/spec.ts";
import { log } from "../log/logger.ts";
import { SlotHealth } from "./slot_health.ts";

/**
 * What {@link InitPool.adopt} made of a job's cgroup: a waiting member's slot became it
 * (`adopted`); no member with a slot waited (`none`); or the slot could not take the job's limits
 * or name (`failed`, with why: the caller creates the cgroup as usual and, if that works, tells
 * the pool through {@link InitPool.adoptFailed} that the slot was at fault).
 */
export type Adoption =
  | { readonly kind: "adopted"; readonly cgroup: JobCgroup }
  | { readonly kind: "none" }
  | { readonly kind: "failed"; readonly error: string };

/** Deno starts of members under way at once (the machine's other work needs the CPU too). */
const WARMING = 2;
/** Pause after members keep dying before they are ready: doubles from here, up to the max. */
const BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;
const SIGKILL = 9;
/** How long emptying the pool waits for its members to be reaped. */
const DRAIN_MS = 5000;
/** How often the mount table is polled while members wait (a poll syscall; read only on a change). */
const MOUNT_WATCH_MS = 1000;

/** What the pool tells an observer (metrics). */
export interface InitPoolEvents {
  /** A job started from a pooled init (true) or from a freshly cloned one (false). */
  claimed(pooled: boolean): void;
  /** A member died while waiting and was dropped. */
  memberLost(): void;
}

interface Member {
  init: InitProcess;
  ready: boolean;
  /** Its slot's name (it joins the slot once started); undefined: it waits in the worker's cgroup. */
  slot?: string;
  /** Given to a job: its slot, if any, is the job's cgroup now. */
  handed?: boolean;
  /**
   * The worker's mount table just before the member was cloned (it has this one or newer); with
   * the lines of the table read just after, if it changed during the clone (it may hold those too).
   */
  mounts: string;
}

export class InitPool {
  readonly #members: Member[] = [];
  #stopped = true;
  #scheduled = false;
  #failures = 0;
  #pausedUntil = 0;
  /** The worker's mount table, polled at each claim (-1: not open). */
  #mounts = -1;
  /** Its text as last read (read again only when the poll says it changed). */
  #mountTable = "";
  /** Bumped at each read of the table; the watch compares members once per new version. */
  #tableVersion = 0;
  #watchedVersion = 0;
  /** The pool-wide poll of the mount table while members wait (undefined: not running). */
  #watch: ReturnType<typeof setInterval> | undefined;
  /** Reaps of dismissed members and removals of their slots still outstanding. */
  readonly #dismissed = new Set<Promise<unknown>>();
  /** Members adopted by a job's cgroup (by job id), until the Launcher claims them. */
  readonly #adopted = new Map<string, Member>();
  /** Whether members get slots: off for a while when slots keep failing (see slot_health.ts). */
  readonly #slotHealth = new SlotHealth();

  constructor(
    private readonly shim: Shim,
    private readonly self: SelfCommand,
    private readonly reaper: Reaper,
    readonly size: number,
    private readonly events?: InitPoolEvents,
    private readonly slots?: CgroupSlots,
  ) {}

  /** Members waiting for a job (ready or still starting). */
  get waiting(): number {
    return this.#members.length;
  }

  /** Members blocked reading a spec, ready to become a job at once. */
  get ready(): number {
    return this.#members.filter((m) => m.ready).length;
  }

  /** Starts (or restarts) filling the pool. */
  start(): void {
    if (this.size <= 0) return;
    if (this.#mounts < 0) {
      this.#mounts = this.shim.mountsOpen();
      this.#mountTable = readMountTable();
    }
    this.#stopped = false;
    this.#schedule();
  }

  /**
   * A member for job `jobId`, taken out of the pool: the one {@link adopt} gave the job's cgroup,
   * else one without a slot (ready ones first); undefined when there is none (the caller clones a
   * fresh init). Dead members are dropped on the way.
   */
  claim(jobId?: string): InitProcess | undefined {
    if (this.size <= 0) {
      this.events?.claimed(false);
      return undefined;
    }
    const adopted = jobId === undefined ? undefined : this.#adopted.get(jobId);
    if (adopted !== undefined) this.#adopted.delete(jobId!);
    const found = adopted?.init ?? this.#take((m) => m.slot === undefined)?.init;
    this.events?.claimed(found !== undefined);
    return found;
  }

  /** A slot could not take limits that an ordinary cgroup then took: the slot was at fault. */
  adoptFailed(error: string): void {
    this.#slotHealth.failed("adopt", error);
  }

  /**
   * The cgroup of job `jobId` made from a waiting member's slot (limits written, then renamed to
   * the job's), that member kept for the job's {@link claim}; see {@link Adoption} for when it is
   * not (the caller then creates the cgroup as usual, which reports any real problem). Throws
   * LimitError for limits no cgroup can have.
   */
  async adopt(jobId: string, limits: Limits): Promise<Adoption> {
    if (this.size <= 0 || this.slots === undefined) return { kind: "none" };
    // Limits the job cannot have cost no member: only a failure to write them does.
    this.slots.check(jobId, limits);
    const member = this.#take((m) => m.slot !== undefined);
    if (member === undefined) return { kind: "none" };
    let cgroup: JobCgroup;
    try {
      cgroup = await this.slots.adopt(member.slot!, jobId, limits);
    } catch (e) {
      log.warn("a pool slot could not become a job's cgroup; creating the cgroup as usual", {
        job: jobId,
        slot: member.slot,
        error: String(e),
      });
      this.#dismiss(member);
      // Counted against the slots only once the same limits made an ordinary cgroup
      // (adoptFailed): limits the kernel refuses anyway are the job's fault, not the slot's.
      return { kind: "failed", error: String(e) };
    }
    this.#slotHealth.worked("adopt");
    member.handed = true;
    this.#adopted.set(jobId, member);
    const remove = cgroup.remove.bind(cgroup);
    // A job that fails before its launch takes the member: the member goes with the cgroup.
    cgroup.remove = () => {
      if (this.#adopted.get(jobId) === member) {
        this.#adopted.delete(jobId);
        this.#dismiss({ ...member, slot: undefined });
      }
      return remove();
    };
    return { kind: "adopted", cgroup };
  }

  /**
   * Takes the first usable member that `fits` out of the pool (ready ones first). Members cloned
   * before a mount that is still there go (they would not see it); dead ones are dropped.
   */
  #take(fits: (member: Member) => boolean): Member | undefined {
    // Members copied the mount table when they were cloned: one cloned before a mount that is still
    // there would not see it (an NFS share, a FUSE file system a job's workDir is on). Mounts that
    // came and went since (another runtime's container start) leave the table as it was.
    this.#mountsChanged();
    const stale = this.#members.filter((m) => m.mounts !== this.#mountTable);
    if (stale.length > 0) {
      log.info("the host's mounts changed: replacing the waiting inits", { count: stale.length });
      for (const member of stale) {
        this.#members.splice(this.#members.indexOf(member), 1);
        // One found dead here is lost like one found dead below (the metric counts both).
        if (this.#alive(member.init)) this.#dismiss(member);
        else this.#lost(member, "claim");
      }
    }
    let found: Member | undefined;
    while (found === undefined) {
      const at = this.#members.findIndex((m) => m.ready && fits(m));
      const index = at >= 0 ? at : this.#members.findIndex(fits);
      if (index < 0) break;
      const [member] = this.#members.splice(index, 1);
      if (!this.#alive(member!.init)) {
        this.#lost(member!, "claim");
        continue;
      }
      found = member;
    }
    this.#schedule();
    return found;
  }

  /**
   * Reads the mount table again if it changed since the last look (a poll, no read, if not);
   * whether it did.
   */
  #mountsChanged(): boolean {
    if (this.#mounts < 0) return false;
    let changed: boolean;
    try {
      changed = this.shim.mountsChanged(this.#mounts);
    } catch {
      changed = true;
    }
    if (!changed) return false;
    this.#mountTable = readMountTable();
    this.#tableVersion++;
    return true;
  }

  /**
   * Polls the mount table once a second while members wait: a waiting member's private copy of a
   * mount the host has since unmounted keeps that file system alive (a USB disk, an NFS share, a
   * loop image the operator released), and a member may wait for hours. One unref'd timer for the
   * pool, running only while it holds members.
   */
  #startWatch(): void {
    if (this.#watch !== undefined || this.#mounts < 0) return;
    const watch = setInterval(() => {
      if (this.#stopped || this.#members.length === 0) return this.#stopWatch();
      this.#mountsChanged();
      if (this.#watchedVersion === this.#tableVersion) return;
      this.#watchedVersion = this.#tableVersion;
      this.#dropPinning();
    }, MOUNT_WATCH_MS);
    Deno.unrefTimer(watch);
    this.#watch = watch;
  }

  #stopWatch(): void {
    if (this.#watch !== undefined) clearInterval(this.#watch);
    this.#watch = undefined;
  }

  /**
   * Dismisses the members that hold a mount the worker no longer has (a line of their table is not
   * in today's); the refill replaces them. Members that only lack a newer mount wait on: the claim
   * replaces those.
   */
  #dropPinning(): void {
    const today = new Set(this.#mountTable.split("\n"));
    const pinning = this.#members.filter((m) => m.mounts.split("\n").some((l) => !today.has(l)));
    if (pinning.length === 0) return;
    log.info("the host unmounted a file system: replacing the waiting inits that hold it", {
      count: pinning.length,
    });
    for (const member of pinning) {
      this.#members.splice(this.#members.indexOf(member), 1);
      if (this.#alive(member.init)) this.#dismiss(member);
      else this.#lost(member, "claim");
    }
    this.#schedule();
  }

  /**
   * Whether a member can still take a job. The pidfd turns readable only once every thread has
   * exited; a Deno process killed a moment ago may still be winding its threads down, its
   * leader already a zombie or SIGKILL pending: /proc shows that (the pid is still ours, unreaped).
   */
  #alive(init: InitProcess): boolean {
    try {
      if (this.shim.pidfdExited(init.pidfd)) return false;
      const status = Deno.readTextFileSync(`/proc/${init.pid}/status`);
      const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? "X";
      const shared = BigInt(`0x${/^ShdPnd:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
      const own = BigInt(`0x${/^SigPnd:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
      const sigkill = 1n << BigInt(SIGKILL - 1);
      return state !== "Z" && state !== "X" && ((shared | own) & sigkill) === 0n;
    } catch {
      return false;
    }
  }

  /**
   * Empties the pool and stops refilling: every member is killed and reaped (for shutdown and
   * before a reload's exec, which must leave no process it does not hand over).
   */
  async drain(): Promise<void> {
    this.#stopped = true;
    this.#stopWatch();
    for (const member of this.#members.splice(0)) this.#dismiss(member);
    // SIGKILL ends them at once; a process stuck in the kernel must not hang a shutdown.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, DRAIN_MS));
    await Promise.race([Promise.all([...this.#dismissed]), late]);
    clearTimeout(timer);
    if (this.#dismissed.size > 0) {
      log.warn("pooled inits not reaped yet after SIGKILL", { count: this.#dismissed.size });
    }
  }

  #schedule(): void {
    if (this.#stopped || this.#scheduled) return;
    if (this.#members.length >= this.size) return;
    this.#scheduled = true;
    const wait = Math.max(0, this.#pausedUntil - Date.now());
    setTimeout(() => {
      this.#scheduled = false;
      this.#fillOne();
    }, wait);
  }

  #fillOne(): void {
    if (this.#stopped || this.#members.length >= this.size) return;
    if (this.#members.filter((m) => !m.ready).length >= WARMING) return;
    let init: InitProcess;
    // Read before the clone: a mount made in between makes the member look older than it is
    // (replaced once too often), never newer.
    this.#mountsChanged();
    const mounts = this.#mountTable;
    const slot = this.#makeSlot();
    try {
      init = spawnInit(this.shim, this.self, {
        pooled: true,
        newNetwork: false,
        slotFds: slot?.fds ?? [],
      });
    } catch (e) {
      this.#failed(`cannot clone a pooled init: ${e instanceof Error ? e.message : e}`);
      if (slot) this.#dropSlot(slot.name);
      this.#schedule();
      return;
    } finally {
      closeQuietly(this.shim, slot?.fds ?? []);
    }
    // A mount made during the clone may be in the member and not in `mounts`: had it been
    // unmounted later, no line would tell. Counting the later table's lines too covers it.
    const recorded = this.#mountsChanged() ? `${mounts}\n${this.#mountTable}` : mounts;
    const member: Member = {
      init,
      ready: false,
      mounts: recorded,
      ...(slot ? { slot: slot.name } : {}),
    };
    this.#members.push(member);
    this.#startWatch();
    init.status.firstData.then(() => {
      // Anything else first (a failure of its mounts) is no readiness: it exits and is replaced.
      if (!this.#members.includes(member) || !init.status.text.startsWith(POOL_READY)) return;
      member.ready = true;
      if (member.slot !== undefined) this.#slotHealth.worked("ready");
      this.#failures = 0;
      this.#schedule();
    });
    // Once claimed, the job's own watch takes the pid over and this one never settles.
    this.reaper.watch(init.pid).then((status) => {
      // Dead while waiting or at a claim that found it dead: its slot goes too.
      if (member.slot !== undefined && !member.handed) this.#dropSlot(member.slot);
      const at = this.#members.indexOf(member);
      if (at < 0) return;
      this.#members.splice(at, 1);
      log.warn("a pooled init died while waiting for a job", {
        pid: init.pid,
        exitCode: status.exitCode,
        signal: status.signal,
        ...(init.initLog.text.trim()
          ? { stderr: initLogText(init.initLog, init.initLog.text, 500) }
          : {}),
      });
      this.#lost(member, "reaped");
    });
    this.#schedule();
  }

  /**
   * A member found dead: its descriptors go, and a member that never got ready counts as a
   * failure.
   */
  #lost(member: Member, how: "claim" | "reaped"): void {
    this.events?.memberLost();
    if (how === "claim") {
      // Not reaped yet: the pool's watch still holds the pid and reaps it.
      log.warn("a pooled init had died; not handing it a job", { pid: member.init.pid });
    }
    this.#release(member.init);
    if (!member.ready && member.slot !== undefined) {
      this.#slotHealth.failed("join", "a pooled init in a slot died before it was ready");
    }
    if (!member.ready) this.#failed("a pooled init died before it was ready");
    this.#schedule();
  }

  #failed(why: string): void {
    this.#failures++;
    if (this.#failures >= 3) {
      const pause = Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** (this.#failures - 3));
      this.#pausedUntil = Date.now() + pause;
      log.warn("the init pool pauses its refill", { reason: why, pauseMs: pause });
    }
  }

  #dismiss(member: Member): void {
    const { init } = member;
    // The spec pipe's end tells init to exit; SIGKILL makes sure, even mid-start.
    try {
      this.shim.pidfdSignal(init.pidfd, SIGKILL);
    } catch { /* already ended */ }
    const reaped = this.reaper.watch(init.pid).then(async () => {
      this.#release(init);
      if (member.slot !== undefined) await this.#dropSlot(member.slot);
      this.#dismissed.delete(reaped);
    });
    this.#dismissed.add(reaped);
  }

  /** A new slot and its cgroup.procs files opened for the member; undefined: none (no slots). */
  #makeSlot(): { name: string; fds: number[] } | undefined {
    if (this.slots === undefined || !this.#slotHealth.on) return undefined;
    const name = `pool-${crypto.randomUUID().slice(0, 13)}`;
    const fds: number[] = [];
    try {
      for (const file of this.slots.make(name)) fds.push(this.shim.openWrite(file));
      return { name, fds };
    } catch (e) {
      closeQuietly(this.shim, fds);
      this.#dropSlot(name);
      // This member waits in the worker's cgroup and pays the cgroup move when claimed; it works.
      this.#slotHealth.failed("make", e instanceof Error ? e.message : String(e));
      return undefined;
    }
  }

  /** Removes a slot once its member is gone (drain waits for it). */
  #dropSlot(name: string): Promise<void> {
    const removed = this.slots!.remove(name).catch((e: unknown) => {
      log.warn("cannot remove a pool slot", { slot: name, error: String(e) });
    }).finally(() => this.#dismissed.delete(removed));
    this.#dismissed.add(removed);
    return removed;
  }

  #release(init: InitProcess): void {
    closeQuietly(this.shim, [init.specW, init.outR, init.errR, init.pidfd]);
    init.status.destroy();
    init.initLog.destroy();
  }
}

/** The worker's mount table as text ("" if it cannot be read: every member then looks current). */
function readMountTable(): string {
  try {
    return Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return "";
  }
}
