/**
 * The worker's Prometheus metrics (prom-client). Counters and histograms are fed by events (job
 * lifecycle from the manager, RPCs from the API layer); gauges that the job table already knows
 * are computed when scraped.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { JobEvents, StopKind } from "../jobs/events.ts";
import type { Job, JobStatus } from "../jobs/job.ts";
import type { RpcObserver, RpcRecord } from "../api/instrument.ts";
import type { InitPoolEvents } from "../runtime/init_pool.ts";

const STATES: readonly JobStatus[] = ["INITIALIZING", "RUNNING", "COMPLETED", "FAILED", "STOPPED"];
const isOutputStream = (service: string, method: string) =>
  service === "jobworker.JobService" && method === "GetJobsStream";
const STOP_KINDS: readonly StopKind[] = ["request", "timeout", "shutdown"];

/** What the metrics read from the job table at scrape time. */
export interface JobTable {
  /** Jobs by status, over every job the record holds. */
  countByStatus(filter: Record<string, never>): Record<JobStatus, number>;
}

/** What the metrics read from the init pool at scrape time. */
export interface InitPoolView {
  readonly waiting: number;
  readonly ready: number;
}

/** What the metrics read of the HTTP/2 sessions at scrape time (tls/session_recycle.ts). */
export interface Http2SessionsView {
  readonly served: number;
  readonly stranded: number;
  readonly strandedEstimate: number;
  readonly nativeEstimate: number;
}

export class WorkerMetrics implements JobEvents, RpcObserver, InitPoolEvents {
  readonly registry = new Registry();
  #jobs: JobTable | undefined;
  #pool: InitPoolView | undefined;
  #sessions: Http2SessionsView | undefined;
  #activeStreams = 0;

  readonly #starts = new Counter({
    name: "jobworker_job_starts_total",
    help: "Jobs that reached RUNNING.",
    registers: [this.registry],
  });
  readonly #startFailures = new Counter({
    name: "jobworker_job_start_failures_total",
    help: "Jobs that could not be started (cgroup, launch or init failure).",
    registers: [this.registry],
  });
  readonly #startSeconds = new Histogram({
    name: "jobworker_job_start_duration_seconds",
    help: "Time from CreateJob reaching the job manager to the job running.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly #initStarts = new Counter({
    name: "jobworker_init_starts_total",
    help:
      "Job starts by source: pool (an init started ahead, JOB_WORKER_INIT_POOL) or fresh (jwstart or an init cloned for the job).",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly #poolLost = new Counter({
    name: "jobworker_init_pool_lost_total",
    help: "Pooled inits found dead while waiting for a job (dropped and replaced).",
    registers: [this.registry],
  });
  readonly #oomKills = new Counter({
    name: "jobworker_job_oom_kills_total",
    help: "Jobs whose cgroup saw the OOM killer.",
    registers: [this.registry],
  });
  readonly #stops = new Counter({
    name: "jobworker_job_stops_total",
    help: "Stops that reached a job's processes, by kind: request (StopJob), timeout, shutdown.",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly #ingested = new Counter({
    name: "jobworker_output_ingested_bytes_total",
    help: "Bytes of job output read from the jobs' pipes.",
    registers: [this.registry],
  });
  readonly #streamed = new Counter({
    name: "jobworker_output_streamed_bytes_total",
    help: "Bytes of job output sent to clients.",
    registers: [this.registry],
  });
  readonly #rpcs = new Counter({
    name: "jobworker_rpcs_total",
    help: "RPCs handled, by service, method and gRPC status code.",
    labelNames: ["service", "method", "code"] as const,
    registers: [this.registry],
  });
  readonly #rpcSeconds = new Histogram({
    name: "jobworker_rpc_duration_seconds",
    help: "RPC duration by method (streams: until their end).",
    labelNames: ["service", "method"] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
    registers: [this.registry],
  });
  readonly eventLoopDelay = new Histogram({
    name: "jobworker_event_loop_delay_seconds",
    help: "How late a periodic timer fired: time the event loop was busy with other work.",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  /** The longest delay since the previous scrape (a histogram cannot say how long the worst was). */
  #loopDelayMax = 0;

  constructor() {
    const counts = () => this.#jobs?.countByStatus({});
    const activeStreams = () => this.#activeStreams;
    new Gauge({
      name: "jobworker_jobs",
      help: "Jobs the worker knows, by state.",
      labelNames: ["state"] as const,
      registers: [this.registry],
      collect() {
        const byStatus = counts();
        for (const state of STATES) this.set({ state }, byStatus?.[state] ?? 0);
      },
    });
    new Gauge({
      name: "jobworker_output_streams_active",
      help: "Output streams (GetJobsStream calls) open now.",
      registers: [this.registry],
      collect() {
        this.set(activeStreams());
      },
    });
    const pool = () => this.#pool;
    new Gauge({
      name: "jobworker_init_pool_waiting",
      help: "Pooled inits waiting for a job, by state: ready (blocked reading a spec) or starting.",
      labelNames: ["state"] as const,
      registers: [this.registry],
      collect() {
        const view = pool();
        this.set({ state: "ready" }, view?.ready ?? 0);
        this.set({ state: "starting" }, (view?.waiting ?? 0) - (view?.ready ?? 0));
      },
    });
    const sessions = () => this.#sessions;
    new Gauge({
      name: "jobworker_http2_sessions_served",
      help: "HTTP/2 sessions this process has served: Deno 2.8.3 keeps about 18 KiB of native " +
        "state for each until the worker recycles (JOB_WORKER_RECYCLE_AFTER_SESSIONS when idle, " +
        "JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB in any case).",
      registers: [this.registry],
      collect() {
        this.set(sessions()?.served ?? 0);
      },
    });
    new Gauge({
      name: "jobworker_http2_stranded_bytes",
      help: "Output bytes left unsent in native HTTP/2 stream buffers by streams that ended " +
        "early (cancelled by the client or cut off): Deno 2.8.3 never frees them, so the worker " +
        "recycles (JOB_WORKER_RECYCLE_AT_NATIVE_MIB, JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB).",
      registers: [this.registry],
      collect() {
        this.set(sessions()?.stranded ?? 0);
      },
    });
    new Gauge({
      name: "jobworker_http2_stranded_estimate_bytes",
      help: "The native memory the stranded output holds, estimated as 2x " +
        "jobworker_http2_stranded_bytes (measured 1.2-3x): what JOB_WORKER_RECYCLE_AT_NATIVE_MIB " +
        "applies to (closed sessions do not count here).",
      registers: [this.registry],
      collect() {
        this.set(sessions()?.strandedEstimate ?? 0);
      },
    });
    new Gauge({
      name: "jobworker_http2_native_estimate_bytes",
      help: "All the native memory Deno 2.8.3 keeps until the worker recycles, estimated: 18 KiB " +
        "per session served plus jobworker_http2_stranded_estimate_bytes. Past " +
        "JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB the worker recycles even with clients connected.",
      registers: [this.registry],
      collect() {
        this.set(sessions()?.nativeEstimate ?? 0);
      },
    });
    const loopDelayMax = () => {
      const max = this.#loopDelayMax;
      this.#loopDelayMax = 0;
      return max;
    };
    new Gauge({
      name: "jobworker_event_loop_delay_max_seconds",
      help: "The longest event-loop delay since the previous scrape.",
      registers: [this.registry],
      collect() {
        this.set(loopDelayMax());
      },
    });
    // Every label value from the start, so rate() sees the first increment.
    for (const kind of STOP_KINDS) this.#stops.inc({ kind }, 0);
    for (const source of ["pool", "fresh"]) this.#initStarts.inc({ source }, 0);
  }

  /** The HTTP/2 session count the gauge reads when scraped. */
  watchSessions(sessions: Http2SessionsView): void {
    this.#sessions = sessions;
  }

  /** How late the event loop's periodic timer fired (see event_loop.ts). */
  loopDelayed(seconds: number): void {
    this.eventLoopDelay.observe(seconds);
    this.#loopDelayMax = Math.max(this.#loopDelayMax, seconds);
  }

  /** The init pool the gauges read when scraped. */
  watchPool(pool: InitPoolView): void {
    this.#pool = pool;
  }

  claimed(pooled: boolean): void {
    this.#initStarts.inc({ source: pooled ? "pool" : "fresh" });
  }

  memberLost(): void {
    this.#poolLost.inc();
  }

  /** The job table the gauges read when scraped. */
  watch(jobs: JobTable): void {
    this.#jobs = jobs;
  }

  started(_job: Job, seconds: number): void {
    this.#starts.inc();
    this.#startSeconds.observe(seconds);
  }

  startFailed(): void {
    this.#startFailures.inc();
  }

  stopping(_job: Job, kind: StopKind): void {
    this.#stops.inc({ kind });
  }

  ended(job: Job): void {
    if (job.oomKilled) this.#oomKills.inc();
  }

  outputIngested(bytes: number): void {
    this.#ingested.inc(bytes);
  }

  rpcStarted(service: string, method: string): void {
    if (isOutputStream(service, method)) this.#activeStreams++;
  }

  streamed(bytes: number): void {
    this.#streamed.inc(bytes);
  }

  rpcEnded(record: RpcRecord): void {
    if (isOutputStream(record.service, record.method)) this.#activeStreams--;
    const { service, method, code } = record;
    this.#rpcs.inc({ service, method, code });
    this.#rpcSeconds.observe({ service, method }, record.durationMs / 1000);
  }

  async text(): Promise<string> {
    return await this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
