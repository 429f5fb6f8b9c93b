/**
 * A typed client of jobworker.JobService over mutual TLS 1.3. The command line uses it, and so do
 * the end-to-end tests: it knows nothing about flags, files or terminals.
 *
 * Errors of the calls are gRPC status errors (`code`, `details`: grpc-js's `ServiceError`, or
 * the same shape from the `http2` transport), passed on unchanged.
 *
 * @module
 */
import { jobServiceDefinition, jobworker } from "../proto/service.ts";
import { parseServerAddress } from "./address.ts";
import { Status } from "./status.ts";
import { Http2Transport } from "./transport/http2.ts";
import type { RpcMethod, RpcTransport, TransportSettings } from "./transport/types.ts";

/** Where and how to connect. */
export interface ConnectionSettings {
  /** `HOST:PORT`; the host may be a DNS name, an IPv4 address or an IPv6 address in brackets. */
  server: string;
  /** PEM of the CA that signed the server's certificate. */
  caPem: string;
  /** PEM of the client certificate (its OU is the role, its CN the owner of created jobs). */
  certPem: string;
  /** PEM of the client certificate's private key. */
  keyPem: string;
  /** Extra grpc-js channel options; they override the client's own (grpc-js transport only). */
  channelOptions?: Record<string, string | number>;
  /** Deadline of each unary call (default {@linkcode UNARY_DEADLINE_MS}); StopJob adds the grace. */
  callTimeoutMs?: number;
  /**
   * How calls travel: `grpc-js` (the library; the default) or `http2` (our own HTTP/2
   * client over node:tls, cli/transport/h2/, much faster to load: the command line's).
   */
  transport?: "grpc-js" | "http2";
  /**
   * Retry unary calls that fail UNAVAILABLE (the server not reached, or restarting), and creates
   * that carry a requestId also on DEADLINE_EXCEEDED (the key makes a repeat return the same job).
   * Off by default.
   */
  retry?: boolean;
}

/** Delays before the retries of a call, when retrying is on. */
const RETRY_DELAYS_MS = [100, 300, 1000];
const STATUS_UNAVAILABLE = Status.UNAVAILABLE;
const STATUS_DEADLINE_EXCEEDED = Status.DEADLINE_EXCEEDED;
const STATUS_UNIMPLEMENTED = Status.UNIMPLEMENTED;

/** Options of {@linkcode JobClient.stopJob}. */
export interface StopOptions {
  /** Seconds between SIGTERM and SIGKILL; 0 or absent: the server's default. */
  graceSeconds?: number;
  /** SIGKILL every process at once. */
  force?: boolean;
}

/** Options of {@linkcode JobClient.stream}. */
export interface StreamOptions {
  /** Byte offset in the job's output to start from (default 0). */
  offset?: number;
  /** Send only the output written so far, then end. */
  noFollow?: boolean;
  /** Aborting it cancels the call; the iteration then throws the signal's reason. */
  signal?: AbortSignal;
}

/** Deadline of the unary calls. */
export const UNARY_DEADLINE_MS = 30_000;
/** The longest deadline a call gets (a week). */
const MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000;
/** Grace period StopJob is assumed to take when the server's default applies. */
const DEFAULT_GRACE_ALLOWANCE_S = 60;

/**
 * A connection to a jobworker server.
 *
 * @example
 * ```ts
 * const client = JobClient.connect({ server: "127.0.0.1:50051", caPem, certPem, keyPem });
 * try {
 *   const job = await client.createJob({ command: "echo", args: ["hi"] });
 *   for await (const chunk of client.stream(job.id)) console.log(chunk.payload);
 * } finally {
 *   client.close();
 * }
 * ```
 */
export class JobClient {
  readonly #transport: RpcTransport;
  readonly #retry: boolean;
  readonly #timeoutMs: number;

  private constructor(transport: RpcTransport, retry: boolean, timeoutMs: number) {
    this.#transport = transport;
    this.#retry = retry;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Make a client. It connects lazily, on the first call. The connection requires TLS 1.3 and
   * verifies the server's certificate against `caPem`: for a host name, as usual; for an IP address,
   * the certificate must hold that IP address as a subject alternative name.
   *
   * @throws {TypeError} When the address is malformed.
   */
  static connect(settings: ConnectionSettings): JobClient {
    const address = parseServerAddress(settings.server);
    const transportSettings: TransportSettings = {
      target: address.target,
      host: address.host,
      port: address.port,
      family: address.family,
      caPem: settings.caPem,
      certPem: settings.certPem,
      keyPem: settings.keyPem,
      channelOptions: settings.channelOptions,
    };
    const transport = settings.transport === "http2"
      ? new Http2Transport(transportSettings)
      : new LazyTransport(async () =>
        new (await import("./transport/grpc_js.ts")).GrpcJsTransport(transportSettings)
      );
    return new JobClient(
      transport,
      settings.retry ?? false,
      settings.callTimeoutMs ?? UNARY_DEADLINE_MS,
    );
  }

  /**
   * Create a job and start it; resolves once it runs (or already ended). With a `requestId` and
   * retrying on, a create that timed out is repeated with the same key, so it never starts twice.
   */
  async createJob(req: jobworker.ICreateJobReq): Promise<jobworker.Job> {
    const res = await this.#unary(
      jobServiceDefinition.CreateJob,
      jobworker.CreateJobReq.create(req),
      this.#timeoutMs,
      req.requestId ? [STATUS_UNAVAILABLE, STATUS_DEADLINE_EXCEEDED] : [STATUS_UNAVAILABLE],
    );
    return jobOf(res.job);
  }

  /**
   * One page of jobs, newest first, filtered (ListJobs). A server older than ListJobs answers
   * through GetJobs, filtered here, in one page.
   */
  async listJobsPage(req: jobworker.IListJobsReq = {}): Promise<jobworker.Jobs> {
    try {
      const res = await this.#unary(
        jobServiceDefinition.ListJobs,
        jobworker.ListJobsReq.create(req),
        this.#timeoutMs,
      );
      return res instanceof jobworker.Jobs ? res : jobworker.Jobs.create(res);
    } catch (err) {
      if ((err as { code?: unknown }).code !== STATUS_UNIMPLEMENTED || req.pageToken) throw err;
    }
    const all = await this.listJobs();
    const statuses = req.statuses ?? [];
    const jobs = all.jobs.filter((job) =>
      (statuses.length === 0 || statuses.includes(job.status ?? 0)) &&
      (!req.owner || job.owner === req.owner)
    );
    const countByStatus: Record<string, number> = {};
    for (const job of jobs) {
      const name = jobworker.JobStatus[job.status ?? 0] ?? String(job.status);
      countByStatus[name] = (countByStatus[name] ?? 0) + 1;
    }
    return jobworker.Jobs.create({ jobs, countByStatus });
  }

  /** Forget an ended job and its output. */
  async deleteJob(id: string): Promise<void> {
    await this.#unary(
      jobServiceDefinition.DeleteJob,
      jobworker.DeleteJobReq.create({ id }),
      this.#timeoutMs,
    );
  }

  /** What the server is and can do, and who the caller is to it. */
  async serverInfo(): Promise<jobworker.ServerInfo> {
    const res = await this.#unary(
      jobServiceDefinition.GetServerInfo,
      jobworker.EmptyRequest.create(),
      this.#timeoutMs,
    );
    return res instanceof jobworker.ServerInfo ? res : jobworker.ServerInfo.create(res);
  }

  /** One job, with its current resource usage. */
  async getJob(id: string): Promise<jobworker.Job> {
    const res = await this.#unary(
      jobServiceDefinition.GetJob,
      jobworker.GetJobReq.create({ id }),
      this.#timeoutMs,
    );
    return jobOf(res.job);
  }

  /**
   * Stop a job; resolves once no process of it is left. The deadline allows for the grace period.
   */
  async stopJob(id: string, options: StopOptions = {}): Promise<jobworker.Job> {
    const grace = options.graceSeconds ?? 0;
    const allowance = options.force ? 0 : grace > 0 ? grace : DEFAULT_GRACE_ALLOWANCE_S;
    const res = await this.#unary(
      jobServiceDefinition.StopJob,
      jobworker.StopJobReq.create({ id, graceSeconds: grace, force: options.force ?? false }),
      this.#timeoutMs + allowance * 1000,
    );
    return jobOf(res.job);
  }

  /** Every job the server knows, newest first, with a count per status. */
  async listJobs(): Promise<jobworker.Jobs> {
    const res = await this.#unary(
      jobServiceDefinition.GetJobs,
      jobworker.EmptyRequest.create(),
      this.#timeoutMs,
    );
    return res instanceof jobworker.Jobs ? res : jobworker.Jobs.create(res);
  }

  /**
   * The job's output as an async iterable of chunks, in order. The call starts when the iteration
   * does. It ends when the server ends the stream; breaking out of the loop or aborting
   * `options.signal` cancels the call.
   */
  async *stream(id: string, options: StreamOptions = {}): AsyncIterable<jobworker.DataChunk> {
    yield* this.#transport.serverStream(
      jobServiceDefinition.GetJobsStream,
      jobworker.GetJobsStreamReq.create({
        id,
        offset: options.offset ?? 0,
        noFollow: options.noFollow ?? false,
      }),
      options.signal,
    ) as AsyncIterable<jobworker.DataChunk>;
  }

  /** Close the channel; calls in progress are cancelled. */
  close(): void {
    this.#transport.close();
  }

  async #unary<Req, Res>(
    method: RpcMethod<Req, Res>,
    request: Req,
    deadlineMs: number,
    retryOn: readonly number[] = [STATUS_UNAVAILABLE],
  ): Promise<Res> {
    for (let attempt = 0;; attempt++) {
      try {
        return await this.#unaryOnce(method, request, deadlineMs);
      } catch (err) {
        const delay = RETRY_DELAYS_MS[attempt];
        const { code, unanswered } = err as { code?: unknown; unanswered?: unknown };
        if (!this.#retry || delay === undefined || !retryOn.includes(code as number)) throw err;
        // A server that never answered on the connection (see RpcError.unanswered) gets no
        // second deadline to wait out.
        if (unanswered === true) throw err;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  #unaryOnce<Req, Res>(method: RpcMethod<Req, Res>, request: Req, deadlineMs: number) {
    // Capped: timers fire at once beyond 2^31 - 1 ms, and grpc-js servers round a long
    // grpc-timeout up past that, so an enormous grace would end the call immediately.
    return this.#transport.unary(method, request, Math.min(deadlineMs, MAX_DEADLINE_MS));
  }
}

/** A transport whose module is loaded at the first call (grpc-js is slow to load). */
class LazyTransport implements RpcTransport {
  readonly #loading: Promise<RpcTransport>;

  constructor(load: () => Promise<RpcTransport>) {
    this.#loading = load();
    this.#loading.catch(() => {}); // reported by the first call
  }

  async unary<Req, Res>(method: RpcMethod<Req, Res>, request: Req, deadlineMs: number) {
    return await (await this.#loading).unary(method, request, deadlineMs);
  }

  async *serverStream<Req, Res>(method: RpcMethod<Req, Res>, request: Req, signal?: AbortSignal) {
    yield* (await this.#loading).serverStream(method, request, signal);
  }

  close(): void {
    this.#loading.then((transport) => transport.close(), () => {});
  }
}

function jobOf(job: jobworker.IJob | null | undefined): jobworker.Job {
  if (!job) throw new Error("The server's response holds no job");
  return job instanceof jobworker.Job ? job : jobworker.Job.create(job);
}
