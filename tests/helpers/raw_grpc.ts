/**
 * A gRPC client over the same mutual TLS 1.3 as the product's, that sends request bytes as given
 * (malformed, truncated, hostile) to any method and reports the status it gets back.
 */
import { Buffer } from "node:buffer";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { ClientName } from "./pki.ts";

export interface RawAnswer {
  code: grpc.status;
  details: string;
  /** Messages received (a streaming call may answer some before its status). */
  messages: number;
}

export class RawGrpcClient {
  readonly #client: grpc.Client;

  constructor(certDir: string, address: string, name: ClientName = "admin") {
    const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
    const credentials = grpc.credentials.createFromSecureContext(
      createSecureContext({
        ca: read("ca-cert.pem"),
        cert: read(`${name}-client-cert.pem`),
        key: read(`${name}-client-key.pem`),
        minVersion: "TLSv1.3",
      }),
    );
    this.#client = new grpc.Client(address, credentials, {
      "grpc.ssl_target_name_override": "localhost",
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
    });
  }

  /** Sends `body` to /jobworker.JobService/<method>; resolves with the call's status. */
  call(
    method: string,
    body: Uint8Array,
    streaming: boolean,
    deadlineMs = 10_000,
  ): Promise<RawAnswer> {
    const path = `/jobworker.JobService/${method}`;
    const serialize = (b: Buffer) => b;
    const deserialize = (b: Buffer) => b;
    const deadline = Date.now() + deadlineMs;
    return new Promise((resolve) => {
      let messages = 0;
      if (!streaming) {
        this.#client.makeUnaryRequest(
          path,
          serialize,
          deserialize,
          Buffer.from(body),
          new grpc.Metadata(),
          { deadline },
          (err) => {
            resolve(
              err
                ? { code: err.code, details: err.details, messages }
                : { code: grpc.status.OK, details: "", messages: 1 },
            );
          },
        );
        return;
      }
      const call = this.#client.makeServerStreamRequest(
        path,
        serialize,
        deserialize,
        Buffer.from(body),
        new grpc.Metadata(),
        { deadline },
      );
      call.on("data", () => {
        messages++;
      });
      call.on("error", () => {});
      call.on("status", (s: grpc.StatusObject) => {
        resolve({ code: s.code, details: s.details, messages });
      });
    });
  }

  /**
   * Opens a streaming call to /jobworker.JobService/<method> and cancels it after its
   * `messages`th message (grpc-js's default 64 KiB window: the worker's output piles up unsent);
   * resolves once the call ended.
   */
  cancelAfter(method: string, body: Uint8Array, messages: number): Promise<void> {
    const call = this.#client.makeServerStreamRequest(
      `/jobworker.JobService/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      new grpc.Metadata(),
      {},
    );
    let got = 0;
    return new Promise((resolve) => {
      call.on("error", () => resolve());
      call.on("end", () => resolve());
      call.on("data", () => {
        if (++got === messages) call.cancel();
      });
    });
  }

  close(): void {
    this.#client.close();
  }
}
