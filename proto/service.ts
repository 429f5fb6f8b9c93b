/**
 * The grpc-js service definition of jobworker.JobService, built on the generated protobufjs
 * classes. This is the only place that ties message classes to RPC paths; the server and the
 * client both use it.
 */
// @ts-types="./gen/jobworker.d.ts"
import { google, jobworker } from "./gen/jobworker.js";
import { Buffer } from "node:buffer";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

import protobuf from "protobufjs/minimal";
import { MalformedMessage, strictDecoding } from "./strict_decoding.ts";
import { EncodedDataChunk } from "./data_chunk.ts";
import { EncodedJobs, jobEntryBytes } from "./encoded_jobs.ts";

// int64 fields as plain numbers (offsets stay far below 2^53), never Long objects.
protobuf.util.Long = undefined as unknown as typeof protobuf.util.Long;
protobuf.configure();
strictDecoding();

/**
 * What the server gets instead of a request that does not decode: grpc-js answers INTERNAL for an
 * exception thrown by requestDeserialize, but a malformed request is the client's fault, so the
 * handlers refuse this marker with INVALID_ARGUMENT (see worker/api/malformed.ts).
 */
export class MalformedRequest {
  constructor(readonly problem: string) {}
}

function decodeRequest<T>(request: MessageClass<T>, bytes: Uint8Array): T {
  try {
    return request.decode(bytes);
  } catch (e) {
    const problem = e instanceof MalformedMessage
      ? e.message
      : `undecodable: ${e instanceof Error ? e.message : String(e)}`;
    return new MalformedRequest(problem) as unknown as T;
  }
}

export { EncodedDataChunk, EncodedJobs, google, jobEntryBytes, jobworker };
export type Job = jobworker.Job;
export type IJob = jobworker.IJob;

interface MessageClass<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(reader: Uint8Array): T;
}

/** The bytes as a Buffer for grpc-js, without copying them (protobufjs gives a Buffer already). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Encodes a DataChunk; one built in its wire form (see data_chunk.ts) is sent as it is. */
function serializeDataChunk(chunk: jobworker.DataChunk): Buffer {
  return chunk instanceof EncodedDataChunk
    ? chunk.wire
    : asBuffer(jobworker.DataChunk.encode(chunk).finish());
}

/** Encodes a Jobs page; one built in its wire form (see encoded_jobs.ts) is sent as it is. */
function serializeJobs(jobs: jobworker.Jobs): Buffer {
  return jobs instanceof EncodedJobs ? jobs.wire : asBuffer(jobworker.Jobs.encode(jobs).finish());
}

function method<Req, Res>(
  name: string,
  request: MessageClass<Req>,
  response: MessageClass<Res>,
  responseStream = false,
  responseSerialize = (value: Res) => asBuffer(response.encode(value).finish()),
): MethodDefinition<Req, Res> {
  return {
    path: `/jobworker.JobService/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: (value: Req) => asBuffer(request.encode(value).finish()),
    requestDeserialize: (bytes: Uint8Array) => decodeRequest(request, bytes),
    responseSerialize,
    responseDeserialize: (bytes: Uint8Array) => response.decode(bytes),
    originalName: name.charAt(0).toLowerCase() + name.slice(1),
  };
}

export const jobServiceDefinition = {
  CreateJob: method("CreateJob", jobworker.CreateJobReq, jobworker.CreateJobRes),
  GetJob: method("GetJob", jobworker.GetJobReq, jobworker.GetJobRes),
  StopJob: method("StopJob", jobworker.StopJobReq, jobworker.StopJobRes),
  GetJobs: method("GetJobs", jobworker.EmptyRequest, jobworker.Jobs, false, serializeJobs),
  GetJobsStream: method(
    "GetJobsStream",
    jobworker.GetJobsStreamReq,
    jobworker.DataChunk,
    true,
    serializeDataChunk,
  ),
  ListJobs: method("ListJobs", jobworker.ListJobsReq, jobworker.Jobs, false, serializeJobs),
  DeleteJob: method("DeleteJob", jobworker.DeleteJobReq, jobworker.DeleteJobRes),
  GetServerInfo: method("GetServerInfo", jobworker.EmptyRequest, jobworker.ServerInfo),
} satisfies ServiceDefinition;

export type JobServiceDefinition = typeof jobServiceDefinition;
