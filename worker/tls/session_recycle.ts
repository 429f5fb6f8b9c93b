/**
 * Recycles the worker in place once it has served many HTTP/2 sessions, at a moment when no client
 * is connected: the same reload as SIGHUP (same PID, running jobs kept, see runtime/reload.ts).
 *
 * Why: Deno 2.8.3 never frees a closed HTTP/2 session's native state. Its Http2Session never calls
 * nghttp2_session_del (there is no Drop for it), so the nghttp2 session, its callback table and
 * Deno's per-session struct (~18 KiB measured) stay allocated for every connection ever served,
 * and nothing reachable from JavaScript frees them (session_release.ts frees everything else).
 * Fixed upstream by denoland/deno#36043, first released in 2.9.1, which this worker cannot take
 * (2.9 aborts inside nghttp2, see README). Only a new process image gives that memory back.
 *
 * Like gunicorn's max_requests, but gentler: it waits for an idle moment (no TCP connection open),
 * and calls the recycle off if a client connected while the reload got ready (checked at the last
 * moment, right before the server stops), so no call is cut. A recycle that did not happen is
 * tried again at the next idle moment after {@link RETRY_MS}. Only a reload the recycler alone
 * asked for is called off: a SIGHUP is the operator's, and cuts calls as it always does.
 *
 * Streams leave native memory behind too: an HTTP/2 stream that ends before its output left
 * (the client cancelled it, or its connection dropped) keeps the bytes still in Deno's native
 * per-stream buffer for good (Deno 2.8.3 queues every write there; fixed upstream by
 * denoland/deno#36044, 2.9.x). The send loop reports those bytes as it ends
 * ({@link strand}, the meter of api/http2_unsent.ts), so the recycle is also due, at an idle
 * moment, once the native memory they hold (estimated as {@link NATIVE_PER_STRANDED_BYTE} times
 * the stranded bytes) passes a soft limit. A client that stays connected and cancels in a loop
 * would never let the worker be idle: past a hard limit the recycle goes ahead with clients
 * connected, like a SIGHUP (their calls are cut; the CLI's `stream` resumes where it was).
 *
 * The sessions served keep their own limit for the idle recycle (a count, 0: never), but their
 * native state counts toward the hard limit with the stranded output's ({@link nativeEstimate}):
 * a client that stays connected (a dashboard following a job, a hostile one holding a connection)
 * while others connect and leave would otherwise never let the worker be idle, and each session
 * served would stay for good: about 18 MiB per 1,000 connections, without end.
 *
 * A recycle called off because a client connected holds the idle recycle back for
 * {@link RETRY_MS}, but the forced one only for {@link FORCED_RETRY_MS}: a client could otherwise
 * have a recycle called off on purpose (disconnect, reconnect while it gets ready) and then strand
 * freely for a minute past the hard limit. A reload refused (starting jobs did not settle, the exec
 * failed) holds both back for {@link RETRY_MS}.
 */
import type { Server } from "@grpc/grpc-js";
import { log } from "../log/logger.ts";
import { http2ServersOf } from "./internals.ts";

/** Native state Deno 2.8.3 keeps per session served (measured, issue 12). */
const KIB_PER_SESSION = 18;
const MIB = 1024 * 1024;
/**
 * Native memory per stranded byte: over 600 streams on a large ended job, each cancelled after 3
 * messages, the worker's RSS grew by 1.9 times the stranded figure on one connection (107 to 555
 * MiB, 232 MiB stranded) and 2.2 times on a connection each (105 to 795 MiB, 312 MiB, sessions
 * included); per 100 cancels the ratio swung from 1.2 to 3.0.
 */
export const NATIVE_PER_STRANDED_BYTE = 2;

/** The limits on the native memory only a recycle frees (bytes; 0: none). */
export interface NativeLimits {
  /** Past this of stranded output ({@link SessionRecycler.strandedEstimate}), recycle when idle. */
  soft: number;
  /** Past this of all of it ({@link SessionRecycler.nativeEstimate}), recycle even with clients. */
  hard: number;
}

/** After a refused recycle, the next try waits at least this long. */
export const RETRY_MS = 60_000;

/**
 * After a recycle was called off for a client that connected, a forced recycle (past the hard
 * limit) waits at least this long (at most the retry delay).
 */
export const FORCED_RETRY_MS = 1_000;

/** A testing knob: {@link RETRY_MS} in milliseconds, so a test sees the retry without waiting. */
export const RETRY_MS_ENV = "JOB_WORKER_RECYCLE_RETRY_MS";

/** The retry delay: {@link RETRY_MS_ENV} when set to a positive integer, else {@link RETRY_MS}. */
export function retryMs(env: (name: string) => string | undefined): number {
  const text = env(RETRY_MS_ENV);
  if (text === undefined || text === "") return RETRY_MS;
  const ms = Number(text);
  if (Number.isSafeInteger(ms) && ms >= 1) return ms;
  log.warn(`${RETRY_MS_ENV} is not a positive number of milliseconds; ignored`, { value: text });
  return RETRY_MS;
}

export class SessionRecycler {
  #served = 0;
  #open = 0;
  #requested = false;
  /** The idle recycle is not tried before this (a refusal or a call-off). */
  #notBefore = 0;
  /** The forced recycle is not tried before this (a refusal; a call-off only briefly). */
  #forcedNotBefore = 0;
  /** The last recycle asked for was called off by {@link checkStillIdle} (not refused). */
  #calledOff = false;
  /** The worker is shutting down: nothing more is recycled, or warned about. */
  #stopped = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #forcedRetry: ReturnType<typeof setTimeout> | undefined;
  #stranded = 0;
  /** The recycle asked for was forced (past the hard limit): it is not called off for clients. */
  #forced = false;

  /**
   * `limit`: sessions served before a recycle is due (0: never). `recycle` starts the reload; it
   * is called at most once until {@link notRecycled}. `retryAfterMs`: see {@link RETRY_MS}.
   * `native`: the limits on the native memory only a recycle frees ({@link NativeLimits}).
   */
  constructor(
    private readonly limit: number,
    private readonly recycle: () => void,
    private readonly retryAfterMs = RETRY_MS,
    private readonly native: NativeLimits = { soft: 0, hard: 0 },
  ) {}

  /** HTTP/2 sessions this process has served: each holds native memory until the process ends. */
  get served(): number {
    return this.#served;
  }

  /** Output bytes left in native stream buffers by streams that ended before it was sent. */
  get stranded(): number {
    return this.#stranded;
  }

  /**
   * The native memory the stranded output holds, estimated as {@link NATIVE_PER_STRANDED_BYTE}
   * times the stranded bytes (measured 1.2 to 3 times): what the soft limit applies to.
   */
  get strandedEstimate(): number {
    return this.#stranded * NATIVE_PER_STRANDED_BYTE;
  }

  /**
   * All the native memory Deno 2.8.3 keeps that only a recycle frees, estimated: the sessions
   * served ({@link KIB_PER_SESSION} each) and the stranded output ({@link strandedEstimate}). The
   * hard limit applies to it.
   */
  get nativeEstimate(): number {
    return this.#served * KIB_PER_SESSION * 1024 + this.strandedEstimate;
  }

  /**
   * A stream ended with `bytes` of its output still in its native buffer (called once per
   * stream, as it ends: nothing on the send loop's path).
   */
  strand(bytes: number): void {
    if (!(bytes > 0)) return;
    this.#stranded += bytes;
    this.#maybeRecycle();
  }

  /** Counts the sessions and connections of every HTTP/2 server of `server` (after bindAsync). */
  attach(server: Server): boolean {
    const servers = http2ServersOf(server);
    for (const s of servers) {
      s.prependListener("connection", (socket) => {
        this.#open++;
        socket.once("close", () => {
          this.#open--;
          this.#maybeRecycle();
        });
      });
      s.on("session", () => this.#served++);
    }
    return servers.length > 0;
  }

  /**
   * Called right before the server stops, for a reload the recycler alone asked for (never for
   * a SIGHUP): a client that connected since the recycle was decided would have its calls cut,
   * so the recycle is called off (throws), unless the native estimate is past the hard limit.
   */
  checkStillIdle(): void {
    if (this.#open === 0 || this.#forced) return;
    if (this.#pastHard()) {
      this.#forced = true;
      this.#warnForced();
      return;
    }
    this.#calledOff = true;
    throw new Error("a client connected while the worker was getting ready to recycle");
  }

  /** The worker is shutting down: no recycle from now on (its retry timers are cleared). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#forcedRetry);
  }

  /** The reload did not happen (refused, abandoned or failed): try again later. */
  notRecycled(): void {
    if (!this.#requested) return;
    const calledOff = this.#calledOff;
    this.#requested = false;
    this.#forced = false;
    this.#calledOff = false;
    const now = performance.now();
    this.#notBefore = now + this.retryAfterMs;
    const forcedAfter = calledOff
      ? Math.min(FORCED_RETRY_MS, this.retryAfterMs)
      : this.retryAfterMs;
    this.#forcedNotBefore = now + forcedAfter;
    clearTimeout(this.#retry);
    clearTimeout(this.#forcedRetry);
    this.#retry = this.#retryIn(this.retryAfterMs);
    if (forcedAfter < this.retryAfterMs) this.#forcedRetry = this.#retryIn(forcedAfter);
  }

  /**
   * Back-offs are on the monotonic clock (a wall-clock step would strand a deadline), and the
   * timer runs 1 ms past its deadline: a timer is never early, but the two clocks round apart.
   */
  #retryIn(ms: number): ReturnType<typeof setTimeout> {
    const retry = setTimeout(() => this.#maybeRecycle(), ms + 1);
    Deno.unrefTimer(retry);
    return retry;
  }

  #pastHard(): boolean {
    const { hard } = this.native;
    return hard > 0 && this.nativeEstimate > hard;
  }

  #maybeRecycle(): void {
    if (this.#requested || this.#stopped) return;
    const now = performance.now();
    const pastHard = this.#pastHard();
    if (pastHard && this.#open > 0) {
      if (now < this.#forcedNotBefore) return;
      // Never idle (a client cancelling streams in a loop): go ahead, and cut the calls.
      this.#requested = true;
      this.#forced = true;
      this.#warnForced();
      this.recycle();
      return;
    }
    if (now < this.#notBefore && !(pastHard && now >= this.#forcedNotBefore)) return;
    const { soft } = this.native;
    const reasons = [
      ...(this.limit > 0 && this.#served >= this.limit ? ["sessions"] : []),
      ...(soft > 0 && this.strandedEstimate > soft ? ["stranded"] : []),
      ...(pastHard ? ["hard"] : []),
    ];
    if (reasons.length === 0 || this.#open > 0) return;
    this.#requested = true;
    log.info(
      "recycling the worker in place: no client connected, and the HTTP/2 sessions served " +
        "or the output of streams cut off hold native memory Deno 2.8.3 never frees",
      { reason: reasons.join(","), ...this.#figures() },
    );
    this.recycle();
  }

  #warnForced(): void {
    log.warn(
      "recycling the worker in place with clients connected, cutting their calls: the native " +
        "memory Deno 2.8.3 never frees (the sessions served, output stranded by streams cut " +
        "off) passed the hard limit",
      { ...this.#figures(), connections: this.#open },
    );
  }

  #figures() {
    const { soft, hard } = this.native;
    return {
      sessions: this.#served,
      heldMiB: Math.round(this.#served * KIB_PER_SESSION / 1024),
      limit: "JOB_WORKER_RECYCLE_AFTER_SESSIONS=" + this.limit,
      strandedMiB: Math.round(this.#stranded / MIB * 10) / 10,
      strandedEstimateMiB: Math.round(this.strandedEstimate / MIB * 10) / 10,
      nativeEstimateMiB: Math.round(this.nativeEstimate / MIB * 10) / 10,
      nativeLimitMiB: `soft ${soft > 0 ? Math.round(soft / MIB) : "off"} (stranded output), hard ${
        hard > 0 ? Math.round(hard / MIB) : "off"
      } (all)`,
    };
  }
}
