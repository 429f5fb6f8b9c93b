/**
 * What {@linkcode JobClient} needs from a gRPC transport: unary and server-streaming calls of
 * methods described by path and (de)serialisers, over one mutual-TLS connection. Two transports
 * implement it: `grpc_js.ts` (the grpc-js library) and `http2.ts` (our own HTTP/2 client in h2/
 * over node:tls, which starts much faster; the command line uses it).
 *
 * @module
 */

/**
 * Server name the grpc-js transport sends (SNI) when the target is an IP address, which TLS cannot
 * carry as a name (http2.ts sends none).
 */
export const IP_TARGET_SERVERNAME = "jobworker-server";

/** One method of the service, as the generated service definition describes it. */
export interface RpcMethod<Req, Res> {
  /** `/package.Service/Method`. */
  path: string;
  /** Request message to bytes. */
  requestSerialize(value: Req): Uint8Array;
  /** Bytes to response message. */
  responseDeserialize(bytes: Uint8Array): Res;
}

/** Where and how a transport connects; the TLS settings are already checked by the caller. */
export interface TransportSettings {
  /** `host:port` (IPv6 in brackets) to connect to. */
  target: string;
  /** Host name or IP address, without brackets. */
  host: string;
  /** TCP port. */
  port: number;
  /** 4 or 6 when `host` is an IP address, 0 for a name. */
  family: 0 | 4 | 6;
  /** PEM of the CA the server's certificate must chain to. */
  caPem: string;
  /** PEM of the client certificate. */
  certPem: string;
  /** PEM of the client's private key. */
  keyPem: string;
  /** Extra grpc-js channel options (the grpc-js transport only). */
  channelOptions?: Record<string, string | number>;
}

/** A transport: calls over one connection, made when the first call needs it. */
export interface RpcTransport {
  /** One request, one response; rejects with an {@linkcode RpcError}-shaped error. */
  unary<Req, Res>(method: RpcMethod<Req, Res>, request: Req, deadlineMs: number): Promise<Res>;
  /**
   * One request, a stream of responses. The call starts when the iteration does; it ends when the
   * server ends the stream (a status other than OK throws); stopping the iteration or aborting
   * `signal` cancels the call.
   */
  serverStream<Req, Res>(
    method: RpcMethod<Req, Res>,
    request: Req,
    signal?: AbortSignal,
  ): AsyncIterable<Res>;
  /** Close the connection; calls in progress are cancelled. */
  close(): void;
}

/** What answered at the address when it is not a jobworker server (see RpcError.foreign). */
export type ForeignService = "not-tls" | "not-h2";

/** A call that ended with a gRPC status other than OK: the shape of grpc-js's `ServiceError`. */
export class RpcError extends Error {
  /** The error's name. */
  override name = "RpcError";

  /**
   * @param code The gRPC status code.
   * @param details The status message (the server's words, or what went wrong locally).
   */
  constructor(
    readonly code: number,
    readonly details: string,
    /**
     * True when the server never answered on the connection at all (no TLS handshake, or no
     * HTTP/2 after it): the request cannot have reached it, and asking again is pointless.
     */
    readonly unanswered = false,
    /**
     * What answered instead of a jobworker server, seen in the TLS handshake: "not-tls" (no TLS
     * record came back: plain HTTP, an ssh banner, ...), "not-h2" (TLS, but no HTTP/2 chosen).
     */
    readonly foreign?: ForeignService,
  ) {
    super(`${code} ${STATUS_WORDS[code] ?? "STATUS"}: ${details}`);
  }
}

const STATUS_WORDS: Record<number, string> = {
  1: "CANCELLED",
  2: "UNKNOWN",
  4: "DEADLINE_EXCEEDED",
  8: "RESOURCE_EXHAUSTED",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
};
