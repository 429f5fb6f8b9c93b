/**
 * gRPC through the grpc-js library: the transport of {@linkcode JobClient} unless it is asked for
 * `http2` (the command line's). The tests' clients use it, so the server is also exercised by a
 * gRPC implementation that is not ours.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { checkServerIdentity, createSecureContext } from "node:tls";
import {
  IP_TARGET_SERVERNAME,
  type RpcMethod,
  type RpcTransport,
  type TransportSettings,
} from "./types.ts";
import { signedByOurCa } from "./our_ca.ts";

const MiB = 1024 * 1024;
/** The longest deadline a call gets (a week). */
const MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000;

/** Channel options every client gets unless `channelOptions` overrides them. */
const BASE_CHANNEL_OPTIONS: Record<string, string | number> = {
  // A larger HTTP/2 window about doubles streaming throughput (see shared/platform.md).
  "grpc-node.flow_control_window": 8 * MiB,
  "grpc.max_receive_message_length": 64 * MiB,
};

/** A grpc-js channel to the server; it connects lazily, on the first call. */
export class GrpcJsTransport implements RpcTransport {
  readonly #client: grpc.Client;

  /** @throws {Error} When the PEM data cannot be loaded. */
  constructor(settings: TransportSettings) {
    const options: Record<string, string | number> = {
      ...BASE_CHANNEL_OPTIONS,
      ...settings.channelOptions,
    };
    let checkName = checkServerIdentity;
    if (settings.family !== 0 && options["grpc.ssl_target_name_override"] === undefined) {
      // Node's TLS refuses an IP address as servername, so send a name and check the IP ourselves.
      options["grpc.ssl_target_name_override"] = IP_TARGET_SERVERNAME;
      checkName = (_name, cert) => checkServerIdentity(settings.host, cert);
    }
    const verifyOptions: grpc.VerifyOptions = {
      checkServerIdentity: signedByOurCa(settings.caPem, checkName),
      rejectUnauthorized: true, // whatever NODE_TLS_REJECT_UNAUTHORIZED says
    };
    const secureContext = createSecureContext({
      ca: settings.caPem,
      cert: settings.certPem,
      key: settings.keyPem,
      minVersion: "TLSv1.3",
    });
    const credentials = grpc.credentials.createFromSecureContext(secureContext, verifyOptions);
    this.#client = new grpc.Client(settings.target, credentials, options);
  }

  unary<Req, Res>(method: RpcMethod<Req, Res>, request: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        method.path,
        (value: Req) => Buffer.from(method.requestSerialize(value)),
        (bytes: Buffer) => method.responseDeserialize(bytes),
        request,
        new grpc.Metadata(),
        // Capped: timers fire at once beyond 2^31 - 1 ms, and grpc-js servers round a long
        // grpc-timeout up past that, so an enormous grace would end the call immediately.
        { deadline: Date.now() + Math.min(deadlineMs, MAX_DEADLINE_MS) },
        (err, res) => {
          if (err) reject(err);
          else if (res === undefined) reject(new Error(`Empty response to ${method.path}`));
          else resolve(res);
        },
      );
    });
  }

  async *serverStream<Req, Res>(
    method: RpcMethod<Req, Res>,
    request: Req,
    signal?: AbortSignal,
  ): AsyncIterable<Res> {
    signal?.throwIfAborted();
    const call = this.#client.makeServerStreamRequest(
      method.path,
      (value: Req) => Buffer.from(method.requestSerialize(value)),
      (bytes: Buffer) => method.responseDeserialize(bytes),
      request,
      new grpc.Metadata(),
      {},
    );
    const cancel = () => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    let ended = false;
    try {
      for await (const message of call as AsyncIterable<Res>) yield message;
      ended = true;
    } catch (err) {
      ended = true;
      if (signal?.aborted) throw signal.reason;
      throw err;
    } finally {
      signal?.removeEventListener("abort", cancel);
      if (!ended) call.cancel(); // the consumer stopped early
    }
  }

  close(): void {
    this.#client.close();
  }
}
