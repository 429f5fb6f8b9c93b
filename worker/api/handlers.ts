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
import { callerOf, type Identity } from "../auth/identity.ts";
import { denial, type Rpc } from "../auth/policy.ts";
import type { RevocationList } from "../auth/revocation.ts";
import { canSee, hidesEnv, type ViewersSee, withoutValues } from "../auth/visibility.ts";
import { JobError } from "../jobs/errors.ts";
import type { Job } from "../jobs/job.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { JobFilter } from "../jobs/store.ts";
import { streamOutput } from "./stream_output.ts";
import { isServiceError, serviceError, toServiceError } from "./status.ts";
import { toProtoJob } from "./convert.ts";
import { EntryCache, type JobView, listPage } from "./list_jobs.ts";
import { type ServerFacts, serverInfo } from "./server_info.ts";
import {
  graceFrom,
  type JobPolicy,
  jobSpecFrom,
  offsetFrom,
  pageSizeFrom,
  statusesFrom,
} from "./validation.ts";
import { quote } from "../log/quoted.ts";

export interface HandlerOptions {
  defaults: Limits;
  /** Largest payload of one DataChunk. */
  chunkBytes: number;
  /** Most GetJobsStream calls at once. */
  maxStreams: number;
  /** Most GetJobsStream calls at once of one caller (certificate CN). */
  maxStreamsPerClient: number;
  /** The largest message the server sends: list pages stay within it. */
  maxSendMsgSize: number;
  server: ServerFacts;
  /** Who jobs run as by default, whether privileged jobs are allowed. */
  policy?: JobPolicy;
  /** JOB_WORKER_REVOKED, when set. */
  revoked?: RevocationList;
  /** JOB_WORKER_VIEWERS_SEE (default "all"). */
  viewersSee?: ViewersSee;
}

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;

/**
 * The caller when it may call `rpc`; throws UNAUTHENTICATED for a revoked certificate,
 * PERMISSION_DENIED for a role that may not.
 */
function authorize(call: AnyCall, rpc: Rpc, revoked: RevocationList | undefined): Identity {
  const identity = callerOf(call);
  if (revoked?.isRevoked(identity.serialNumber)) {
    throw serviceError(
      status.UNAUTHENTICATED,
      `the client certificate (serial ${identity.serialNumber}, CN "${identity.commonName}") ` +
        "has been revoked",
    );
  }
  const why = denial(identity, rpc);
  if (why !== null) throw serviceError(status.PERMISSION_DENIED, why);
  return identity;
}

function unary<Req, Res>(
  rpc: Rpc,
  revoked: RevocationList | undefined,
  handle: (req: Req, caller: Identity) => Promise<Res> | Res,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    (async () => {
      const caller = authorize(call, rpc, revoked);
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
  const viewersSee = options.viewersSee ?? "all";
  const revoked = options.revoked;
  /** The job, when it exists and `caller` may see it: else NOT_FOUND, the same either way. */
  const find = (id: string | null | undefined, caller: Identity): Job => {
    const job = manager.get(id ?? "");
    if (!job || !canSee(caller, job.owner, viewersSee)) {
      throw new JobError("not-found", `no job with id ${quote(id ?? "")}`);
    }
    return job;
  };
  const view = (job: Job, caller: Identity) => {
    const proto = toProtoJob(job, manager.usage(job));
    if (hidesEnv(caller, viewersSee)) proto.env = withoutValues(proto.env);
    return proto;
  };
  /** How `caller` sees jobs in a list: the same entry for everyone who sees them alike. */
  const listView = (caller: Identity): JobView => ({
    key: hidesEnv(caller, viewersSee) ? "env-hidden" : "full",
    of: (job) => view(job, caller),
  });
  const listed = new EntryCache();
  /** The filter narrowed to what `caller` may see (a viewer's own jobs with VIEWERS_SEE=own). */
  const visibleTo = (caller: Identity, filter: JobFilter): JobFilter => {
    if (!hidesEnv(caller, viewersSee)) return filter;
    // A viewer asking for another owner's jobs sees none of them.
    if (filter.owner && filter.owner !== caller.commonName) return { ...filter, owner: "\0" };
    return { ...filter, owner: caller.commonName };
  };
  let streams = 0;
  const streamsOf = new Map<string, number>();

  const createJob = unary<jobworker.CreateJobReq, jobworker.CreateJobRes>(
    "CreateJob",
    revoked,
    async (req, caller) => {
      const spec = jobSpecFrom(req, options.defaults, options.policy);
      const job = await manager.create(spec, caller.commonName);
      return jobworker.CreateJobRes.create({ job: view(job, caller) });
    },
  );
  const getJob = unary<jobworker.GetJobReq, jobworker.GetJobRes>(
    "GetJob",
    revoked,
    (req, caller) => jobworker.GetJobRes.create({ job: view(find(req.id, caller), caller) }),
  );
  const stopJob = unary<jobworker.StopJobReq, jobworker.StopJobRes>(
    "StopJob",
    revoked,
    async (req, caller) => {
      const graceSeconds = graceFrom(req);
      find(req.id, caller);
      const job = await manager.stop(req.id, {
        ...(graceSeconds > 0 ? { graceSeconds } : {}),
        force: req.force === true,
      });
      return jobworker.StopJobRes.create({ job: view(job, caller) });
    },
  );
  const getJobs = unary<jobworker.EmptyRequest, jobworker.Jobs>(
    "GetJobs",
    revoked,
    (_req, caller) =>
      listPage(manager, listView(caller), {
        filter: visibleTo(caller, {}),
        pageSize: 0,
        pageToken: "",
        maxBytes: options.maxSendMsgSize,
      }, listed),
  );
  const listJobs = unary<jobworker.ListJobsReq, jobworker.Jobs>(
    "ListJobs",
    revoked,
    (req, caller) =>
      listPage(manager, listView(caller), {
        filter: visibleTo(caller, { statuses: statusesFrom(req), owner: req.owner ?? "" }),
        pageSize: pageSizeFrom(req),
        pageToken: req.pageToken ?? "",
        maxBytes: options.maxSendMsgSize,
      }, listed),
  );
  const deleteJob = unary<jobworker.DeleteJobReq, jobworker.DeleteJobRes>(
    "DeleteJob",
    revoked,
    async (req, caller) => {
      find(req.id, caller);
      await manager.delete(req.id ?? "");
      return jobworker.DeleteJobRes.create();
    },
  );
  const getServerInfo = unary<jobworker.EmptyRequest, jobworker.ServerInfo>(
    "GetServerInfo",
    revoked,
    (_req, caller) => serverInfo(options.server, manager, caller),
  );
  const getJobsStream: handleServerStreamingCall<
    jobworker.GetJobsStreamReq,
    jobworker.DataChunk
  > = (call) => {
    (async () => {
      const caller = authorize(call, "GetJobsStream", revoked);
      const offset = offsetFrom(call.request);
      const job = find(call.request.id, caller);
      if (streams >= options.maxStreams) {
        throw serviceError(
          status.RESOURCE_EXHAUSTED,
          `the server already serves ${streams} output streams, its limit (JOB_WORKER_MAX_STREAMS)`,
        );
      }
      const mine = streamsOf.get(caller.commonName) ?? 0;
      if (mine >= options.maxStreamsPerClient) {
        throw serviceError(
          status.RESOURCE_EXHAUSTED,
          `you already have ${mine} output streams open, the limit per client ` +
            "(JOB_WORKER_MAX_STREAMS_PER_CLIENT)",
        );
      }
      streams++;
      streamsOf.set(caller.commonName, mine + 1);
      const read = manager.reading(job.id);
      try {
        await streamOutput(call, manager.output(job), {
          offset,
          follow: !call.request.noFollow,
          chunkBytes: options.chunkBytes,
        });
      } finally {
        read();
        streams--;
        const left = (streamsOf.get(caller.commonName) ?? 1) - 1;
        if (left > 0) streamsOf.set(caller.commonName, left);
        else streamsOf.delete(caller.commonName);
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
