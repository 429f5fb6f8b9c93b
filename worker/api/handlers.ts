/**
 * The gRPC handlers of JobService: authorize, validate, call the job manager, convert.
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { jobworker } from "../../proto/service.ts";
import type { Limits } from "../cgroups/types.ts";
import { type Identity, identityOf } from "../auth/identity.ts";
import { denial, type Rpc } from "../auth/policy.ts";
import { JobError } from "../jobs/errors.ts";
import type { Job } from "../jobs/job.ts";
import type { JobManager } from "../jobs/manager.ts";
import { streamOutput } from "./stream_output.ts";
import { isServiceError, serviceError, toServiceError } from "./status.ts";
import { toProtoJob } from "./convert.ts";
import { listPage } from "./list_jobs.ts";
import { type ServerFacts, serverInfo } from "./server_info.ts";
import { graceFrom, jobSpecFrom, offsetFrom, pageSizeFrom, statusesFrom } from "./validation.ts";

export interface HandlerOptions {
  defaults: Limits;
  /** Largest payload of one DataChunk. */
  chunkBytes: number;
  /** Most GetJobsStream calls at once. */
  maxStreams: number;
  /** The largest message the server sends: list pages stay within it. */
  maxSendMsgSize: number;
  server: ServerFacts;
}

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;

/** The caller when it may call `rpc`; throws PERMISSION_DENIED otherwise. */
function authorize(call: AnyCall, rpc: Rpc): Identity {
  const identity = identityOf(call.getAuthContext());
  const why = denial(identity, rpc);
  if (why !== null) throw serviceError(status.PERMISSION_DENIED, why);
  return identity;
}

function unary<Req, Res>(
  rpc: Rpc,
  handle: (req: Req, caller: Identity) => Promise<Res> | Res,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    (async () => {
      const caller = authorize(call, rpc);
      return await handle(call.request, caller);
    })().then(
      (response) => callback(null, response),
      (error) => callback(isServiceError(error) ? error : toServiceError(error, rpc)),
    );
  };
}

export function jobServiceHandlers(
  manager: JobManager,
  options: HandlerOptions,
): UntypedServiceImplementation {
  const find = (id: string | null | undefined): Job => {
    const job = manager.get(id ?? "");
    if (!job) throw new JobError("not-found", `no job with id "${id ?? ""}"`);
    return job;
  };
  const view = (job: Job) => toProtoJob(job, manager.usage(job));
  let streams = 0;

  const createJob = unary<jobworker.CreateJobReq, jobworker.CreateJobRes>(
    "CreateJob",
    async (req, caller) => {
      const job = await manager.create(jobSpecFrom(req, options.defaults), caller.commonName);
      return jobworker.CreateJobRes.create({ job: view(job) });
    },
  );
  const getJob = unary<jobworker.GetJobReq, jobworker.GetJobRes>(
    "GetJob",
    (req) => jobworker.GetJobRes.create({ job: view(find(req.id)) }),
  );
  const stopJob = unary<jobworker.StopJobReq, jobworker.StopJobRes>(
    "StopJob",
    async (req) => {
      const graceSeconds = graceFrom(req);
      find(req.id);
      const job = await manager.stop(req.id, {
        ...(graceSeconds > 0 ? { graceSeconds } : {}),
        force: req.force === true,
      });
      return jobworker.StopJobRes.create({ job: view(job) });
    },
  );
  const getJobs = unary<jobworker.EmptyRequest, jobworker.Jobs>(
    "GetJobs",
    () =>
      listPage(manager, view, {
        filter: {},
        pageSize: 0,
        pageToken: "",
        maxBytes: options.maxSendMsgSize,
      }),
  );
  const listJobs = unary<jobworker.ListJobsReq, jobworker.Jobs>(
    "ListJobs",
    (req) =>
      listPage(manager, view, {
        filter: { statuses: statusesFrom(req), owner: req.owner ?? "" },
        pageSize: pageSizeFrom(req),
        pageToken: req.pageToken ?? "",
        maxBytes: options.maxSendMsgSize,
      }),
  );
  const deleteJob = unary<jobworker.DeleteJobReq, jobworker.DeleteJobRes>(
    "DeleteJob",
    async (req) => {
      await manager.delete(req.id ?? "");
      return jobworker.DeleteJobRes.create();
    },
  );
  const getServerInfo = unary<jobworker.EmptyRequest, jobworker.ServerInfo>(
    "GetServerInfo",
    (_req, caller) => serverInfo(options.server, manager, caller),
  );
  const getJobsStream: handleServerStreamingCall<
    jobworker.GetJobsStreamReq,
    jobworker.DataChunk
  > = (call) => {
    (async () => {
      authorize(call, "GetJobsStream");
      const offset = offsetFrom(call.request);
      const job = find(call.request.id);
      if (streams >= options.maxStreams) {
        throw serviceError(
          status.RESOURCE_EXHAUSTED,
          `the server already serves ${streams} output streams, its limit (JOB_WORKER_MAX_STREAMS)`,
        );
      }
      streams++;
      try {
        await streamOutput(call, manager.output(job), {
          offset,
          follow: !call.request.noFollow,
          chunkBytes: options.chunkBytes,
        });
      } finally {
        streams--;
      }
    })().catch((error) => {
      if (call.cancelled) return;
      // grpc-js sends a streaming call's error status from its 'error' handler; destroy() would
      // leave the client waiting.
      call.emit(
        "error",
        "code" in (error as object) ? error : toServiceError(error, "GetJobsStream"),
      );
    });
  };
  return {
    CreateJob: createJob,
    GetJob: getJob,
    StopJob: stopJob,
    GetJobs: getJobs,
    ListJobs: listJobs,
    DeleteJob: deleteJob,
    GetServerInfo: getServerInfo,
    GetJobsStream: getJobsStream,
  } as UntypedServiceImplementation;
}
