/**
 * Plain gRPC calls of every JobService RPC (ListJobs, DeleteJob, GetServerInfo included), with the
 * request as given: for tests of the server's side of the contract, independent of the CLI client.
 */
import * as grpc from "@grpc/grpc-js";
import { createSecureContext } from "node:tls";
import { jobServiceDefinition, jobworker } from "../../proto/service.ts";
import type { ClientName } from "./pki.ts";

type Methods = typeof jobServiceDefinition;

export class ApiCalls {
  readonly #client: grpc.Client;

  constructor(certDir: string, address: string, name: ClientName = "admin") {
    const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
    const context = createSecureContext({
      ca: read("ca-cert.pem"),
      cert: read(`${name}-client-cert.pem`),
      key: read(`${name}-client-key.pem`),
      minVersion: "TLSv1.3",
    });
    this.#client = new grpc.Client(
      address,
      grpc.credentials.createFromSecureContext(context),
      {
        "grpc.ssl_target_name_override": "localhost",
        "grpc.max_receive_message_length": 64 * 1024 * 1024,
      },
    );
  }

  /** The decoded response is an instance of the response class (R). */
  #call<R>(name: keyof Methods, request: unknown): Promise<R> {
    const method = jobServiceDefinition[name] as grpc.MethodDefinition<unknown, unknown>;
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + 60_000 },
        (err, res) => err ? reject(err) : resolve(res as R),
      );
    });
  }

  createJob(req: jobworker.ICreateJobReq): Promise<jobworker.Job> {
    return this.#call<jobworker.CreateJobRes>("CreateJob", jobworker.CreateJobReq.create(req))
      .then((r) => r.job as jobworker.Job);
  }

  getJob(id: string): Promise<jobworker.Job> {
    return this.#call<jobworker.GetJobRes>("GetJob", jobworker.GetJobReq.create({ id }))
      .then((r) => r.job as jobworker.Job);
  }

  getJobs(): Promise<jobworker.Jobs> {
    return this.#call<jobworker.Jobs>("GetJobs", jobworker.EmptyRequest.create());
  }

  listJobs(req: jobworker.IListJobsReq = {}): Promise<jobworker.Jobs> {
    return this.#call<jobworker.Jobs>("ListJobs", jobworker.ListJobsReq.create(req));
  }

  /** Every job matching the filter, following nextPageToken; also the number of pages. */
  async listAll(
    req: jobworker.IListJobsReq = {},
  ): Promise<{ jobs: jobworker.Job[]; pages: number }> {
    const jobs: jobworker.Job[] = [];
    let pageToken = req.pageToken ?? "";
    let pages = 0;
    do {
      const page = await this.listJobs({ ...req, pageToken });
      pages++;
      jobs.push(...(page.jobs as jobworker.Job[]));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return { jobs, pages };
  }

  stopJob(id: string, force = true): Promise<jobworker.Job> {
    return this.#call<jobworker.StopJobRes>("StopJob", jobworker.StopJobReq.create({ id, force }))
      .then((r) => r.job as jobworker.Job);
  }

  deleteJob(id: string): Promise<jobworker.DeleteJobRes> {
    return this.#call<jobworker.DeleteJobRes>("DeleteJob", jobworker.DeleteJobReq.create({ id }));
  }

  serverInfo(): Promise<jobworker.ServerInfo> {
    return this.#call<jobworker.ServerInfo>("GetServerInfo", jobworker.EmptyRequest.create());
  }

  close(): void {
    this.#client.close();
  }
}

export interface GrpcError {
  code: number;
  details: string;
}

/** Awaits `promise`, which must fail with `code`; returns the error. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: grpc.status,
): Promise<GrpcError> {
  try {
    await promise;
  } catch (e) {
    const error = e as Partial<GrpcError>;
    if (typeof error.code !== "number") throw e;
    if (error.code !== code) {
      throw new Error(`expected gRPC code ${code}, got ${error.code}: ${error.details}`);
    }
    return error as GrpcError;
  }
  throw new Error(`expected gRPC code ${code}, but the call succeeded`);
}
