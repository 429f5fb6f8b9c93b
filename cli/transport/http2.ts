/**
 * gRPC over HTTP/2 for the command line: unary and server-streaming calls, which is all
 * jobworker.JobService has. It exists for start-up time: loading grpc-js and its module graph
 * costs a short-lived `jobworker list` more than the call itself, and so does node:http2 (about
 * 10 ms of module loading, see bench/README.md "Client start-up"); HTTP/2 itself is our own small
 * client in h2/ (frames, HPACK, one session) over a node:tls connection.
 *
 * The TLS connection is made as grpc-js makes it: `tls.connect` with the CA, the client
 * pair, TLS 1.3 at least, ALPN h2 (a server that does not choose h2 is refused), and for an IP
 * address our own check that the certificate holds that IP address as a SAN (no server name is
 * sent for it; grpc-js sends a fixed one); the server's certificate must be signed by our CA
 * (our_ca.ts).
 *
 * The wire format (gRPC over HTTP/2): a POST to the method's path with `content-type:
 * application/grpc` and `te: trailers`; each message is framed as one flag byte (compressed or
 * not; we never compress and accept no compressed message), a 4-byte big-endian length and the
 * bytes; the status arrives in the trailers (`grpc-status`, `grpc-message`), or in the headers
 * of a response that has no body ("Trailers-Only").
 *
 * @module
 */
import type { Socket } from "node:net";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { Status } from "../status.ts";
import { ErrorCode } from "./h2/frames.ts";
import { H2Session, type H2Stream, type Headers, type SessionIo } from "./h2/session.ts";
import {
  type ForeignService,
  RpcError,
  type RpcMethod,
  type RpcTransport,
  type TransportSettings,
} from "./types.ts";

const MiB = 1024 * 1024;
/** The largest message accepted from the server (as the grpc-js client is configured). */
const MAX_RECEIVE_BYTES = 64 * MiB;
/** What a message's buffer may hold beyond the bytes that came (MessageReader). */
const GROW_BYTES = MiB;
/** HTTP/2 flow-control window for the connection and each stream (streaming throughput). */
const WINDOW_BYTES = 8 * MiB;
/** How long an ended connection may take to send what is left (its GOAWAY) before it is closed. */
const CLOSE_GRACE_MS = 2000;
/**
 * Decrypted bytes are read into one buffer of this size per connection (node:net's `onread`),
 * then copied out. Why: Deno 2.8.3's TLS socket (ext/node/ops/tls_wrap.rs, `do_emit_read`) hands
 * each read to 'data' listeners in a new ArrayBuffer that it fills one byte at a time through
 * V8's backing-store API, three calls per byte: about 40% of this client's CPU while streaming.
 * With `onread` it copies the read into our buffer with one memcpy instead. A read larger than the
 * buffer comes in several callbacks; streaming, one TLS cycle's plaintext was at most about 68 KiB.
 */
const READ_BUFFER_BYTES = 256 * 1024;

/**
 * node:tls (and the CA check), loaded at the first call rather than with this module: commands
 * that do not connect (help, completion, context) need neither.
 */
let netModules:
  | Promise<[typeof import("node:tls"), typeof import("./our_ca.ts")]>
  | undefined;
function loadNetModules() {
  return netModules ??= Promise.all([import("node:tls"), import("./our_ca.ts")]);
}

/** gRPC statuses for HTTP statuses that are not 200 (the gRPC HTTP/2 mapping). */
const HTTP_TO_GRPC: Record<number, number> = {
  400: Status.INTERNAL,
  401: Status.UNAUTHENTICATED,
  403: Status.PERMISSION_DENIED,
  404: Status.UNIMPLEMENTED,
  429: Status.UNAVAILABLE,
  502: Status.UNAVAILABLE,
  503: Status.UNAVAILABLE,
  504: Status.UNAVAILABLE,
};

/** gRPC statuses for the HTTP/2 error codes of a reset stream. */
function statusOfReset(code: number): number {
  switch (code) {
    case ErrorCode.REFUSED_STREAM:
      return Status.UNAVAILABLE;
    case ErrorCode.CANCEL:
      return Status.CANCELLED;
    case ErrorCode.ENHANCE_YOUR_CALM:
      return Status.RESOURCE_EXHAUSTED;
    case ErrorCode.INADEQUATE_SECURITY:
      return Status.PERMISSION_DENIED;
    default:
      return Status.INTERNAL;
  }
}

/** The `grpc-timeout` header: at most 8 digits and a unit. */
export function grpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  if (whole < 1e8) return `${whole}m`;
  const seconds = Math.ceil(whole / 1000);
  if (seconds < 1e8) return `${seconds}S`;
  return `${Math.min(99_999_999, Math.ceil(seconds / 3600))}H`;
}

/** The status of a finished response from its trailers (or Trailers-Only headers). */
function statusOf(headers: Headers): { code: number; details: string } | undefined {
  const raw = headers["grpc-status"];
  if (raw === undefined) return undefined;
  const code = Number(raw.split(",")[0]);
  let details = headers["grpc-message"] ?? "";
  try {
    details = decodeURIComponent(details);
  } catch {
    // Not percent-encoded after all: keep it as it came.
  }
  return Number.isInteger(code) && code >= 0 && code <= 16
    ? { code, details }
    : { code: Status.UNKNOWN, details: `bad grpc-status ${JSON.stringify(raw)}: ${details}` };
}

/**
 * Splits the response body into gRPC messages. A message within one chunk is a view of it (no
 * copy); one that spans chunks is copied, as its chunks come, into one buffer: one copy per
 * message up to 1 MiB (about two beyond), not one per HTTP/2 frame, and nothing held but that
 * buffer and a prefix. (Keeping the
 * chunks until the message is whole would keep the socket chunks they are views of: 4 KiB DATA
 * frames each in a 64 KiB socket chunk made one 64 MiB message keep 1 GiB.) The buffer follows
 * the bytes that came, not the length the prefix claims: it starts at what has come plus
 * {@link GROW_BYTES} and doubles as needed, so a server cannot make us hold 64 MiB with 5 bytes.
 */
export class MessageReader {
  /** The prefix being read (5 bytes), and how much of it has come. */
  readonly #prefix = new Uint8Array(5);
  #prefixFilled = 0;
  /** The buffer of the message whose prefix was read; undefined between messages. */
  #message: Uint8Array | undefined;
  /** That message's length, as its prefix said, and how much of it has come. */
  #length = 0;
  #filled = 0;

  /** Feed bytes; returns the messages now complete. */
  push(bytes: Uint8Array): Uint8Array[] {
    const messages: Uint8Array[] = [];
    let at = 0;
    for (;;) {
      if (!this.#message) {
        const part = Math.min(5 - this.#prefixFilled, bytes.length - at);
        this.#prefix.set(bytes.subarray(at, at + part), this.#prefixFilled);
        this.#prefixFilled += part;
        at += part;
        if (this.#prefixFilled < 5) break;
        const view = new DataView(this.#prefix.buffer);
        if (view.getUint8(0) !== 0) {
          throw new RpcError(Status.INTERNAL, "the server sent a compressed message unasked");
        }
        const length = view.getUint32(1);
        if (length > MAX_RECEIVE_BYTES) {
          throw new RpcError(
            Status.RESOURCE_EXHAUSTED,
            `Received message larger than max (${length} vs. ${MAX_RECEIVE_BYTES})`,
          );
        }
        this.#prefixFilled = 0;
        if (bytes.length - at >= length) { // all of it in this chunk: a view
          messages.push(bytes.subarray(at, at + length));
          at += length;
          continue;
        }
        this.#message = new Uint8Array(Math.min(length, bytes.length - at + GROW_BYTES));
        this.#length = length;
        this.#filled = 0;
      }
      const part = Math.min(this.#length - this.#filled, bytes.length - at);
      let message = this.#message;
      if (this.#filled + part > message.length) {
        const grown = new Uint8Array(
          Math.min(this.#length, Math.max(2 * message.length, this.#filled + part)),
        );
        grown.set(message.subarray(0, this.#filled));
        message = this.#message = grown;
      }
      message.set(bytes.subarray(at, at + part), this.#filled);
      this.#filled += part;
      at += part;
      if (this.#filled < this.#length) break;
      messages.push(message);
      this.#message = undefined;
    }
    return messages;
  }

  /** The bytes of the buffers held for messages not yet complete (the prefix's 5 included). */
  get held(): number {
    return 5 + (this.#message?.length ?? 0);
  }

  /** Whether a message was cut off by the end of the body. */
  get pending(): boolean {
    return this.#prefixFilled > 0 || this.#message !== undefined;
  }
}

export function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/**
 * How a session writes to its socket and ends it. Ending: our FIN after the GOAWAY, then the
 * socket destroyed once that is sent, not left half-open until the server's FIN; destroyed at
 * once when the server does not read (the session gave up on its backlog), and at the latest
 * {@linkcode CLOSE_GRACE_MS} after the end otherwise (a server that stops reading below the
 * backlog cap would keep it, and what is unsent, open for good).
 */
export function socketIo(socket: Socket): SessionIo {
  return {
    write: (bytes) => void socket.write(bytes),
    backlog: () => socket.writableLength,
    close: (drain) => {
      if (!drain) return void socket.destroy();
      socket.end(() => socket.destroy());
      const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
      Deno.unrefTimer(timer);
      socket.once("close", () => clearTimeout(timer));
    },
  };
}

/**
 * node:net's `onread` option, which node:tls passes on (Node and Deno alike) but whose types
 * leave out: reads land in `buffer`, and `callback` gets how many bytes came (the socket emits no
 * 'data'). The bytes are valid only until the callback returns.
 */
interface ReadIntoBuffer {
  onread: { buffer: Uint8Array; callback: (bytes: number, buffer: Uint8Array) => void };
}

/** One HTTP/2 connection and what became of it. */
interface Connection {
  session: H2Session;
  socket: TLSSocket;
  /** Our side of the TLS handshake completed (and the server chose h2). */
  secure: boolean;
  /** Set when the handshake showed something other than a jobworker server answers. */
  foreign?: ForeignService;
}

/**
 * The TLS client's error when the first bytes back are no TLS record (plain HTTP's reply, an SSH
 * banner): rustls's "received corrupt message of type InvalidContentType", which Deno's node:tls
 * gives the code ERR_SSL_WRONG_VERSION_NUMBER. Only before the handshake completes: later, the
 * same words would be a broken connection to a real server.
 */
function isNotTls(err: Error): boolean {
  return (err as { code?: unknown }).code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    /\bInvalidContentType\b/.test(err.message);
}

/** gRPC calls over one HTTP/2 connection, made at the first call and again after it broke. */
export class Http2Transport implements RpcTransport {
  readonly #settings: TransportSettings;
  #connection: Connection | undefined;
  readonly #calls = new Set<H2Stream>();
  #closed = false;

  constructor(settings: TransportSettings) {
    this.#settings = settings;
  }

  async unary<Req, Res>(method: RpcMethod<Req, Res>, request: Req, deadlineMs: number) {
    let response: Res | undefined;
    let count = 0;
    for await (const message of this.#call(method, request, deadlineMs)) {
      response = message;
      count++;
    }
    if (count !== 1) {
      throw new RpcError(
        count === 0 ? Status.UNIMPLEMENTED : Status.INTERNAL,
        `${count} response messages to the unary call ${method.path}`,
      );
    }
    return response as Res;
  }

  serverStream<Req, Res>(method: RpcMethod<Req, Res>, request: Req, signal?: AbortSignal) {
    return this.#call(method, request, undefined, signal);
  }

  close(): void {
    this.#closed = true;
    for (const call of this.#calls) call.close(ErrorCode.CANCEL);
    this.#connection?.session.close();
    this.#connection = undefined;
  }

  async #connect(): Promise<Connection> {
    const current = this.#connection;
    if (current?.session.usable) return current;
    const [{ checkServerIdentity, connect: tlsConnect }, { signedByOurCa }] =
      await loadNetModules();
    const again = this.#connection; // made by a call that loaded the modules first
    if (again?.session.usable) return again;
    const s = this.#settings;
    const ip = s.family !== 0;
    const options: ConnectionOptions & ReadIntoBuffer = {
      host: s.host,
      port: s.port,
      ca: s.caPem,
      cert: s.certPem,
      key: s.keyPem,
      minVersion: "TLSv1.3",
      // Whatever NODE_TLS_REJECT_UNAUTHORIZED says (node:tls's default follows it): a server whose
      // certificate fails the checks below is dropped before anything is sent to it.
      rejectUnauthorized: true,
      ALPNProtocols: ["h2"],
      // No SNI for an IP address (RFC 6066 has no IP names; Node's TLS refuses one): the IP is
      // checked by us below. Not a made-up name either: node:tls tests every servername against
      // its IPv6 pattern, which costs about 1 ms to compile at the first use (bench/README.md,
      // "Client start-up").
      servername: ip ? undefined : s.host,
      checkServerIdentity: signedByOurCa(
        s.caPem,
        ip ? (_name, cert) => checkServerIdentity(s.host, cert) : checkServerIdentity,
      ),
      // The session keeps views of what it is given: it gets a copy, the buffer is read into again.
      onread: {
        buffer: new Uint8Array(READ_BUFFER_BYTES),
        callback: (bytes: number, buffer: Uint8Array) => {
          session.receive(buffer.slice(0, bytes));
        },
      },
    };
    const socket = tlsConnect(options);
    socket.setNoDelay(true);
    // What the session writes before the handshake ends (preface, SETTINGS, the first request)
    // leaves in one write once it has: uncorked, the socket sent the preface alone and the rest
    // after that write's round trip through Deno, about 0.5 ms later.
    socket.cork();
    const session = new H2Session(socketIo(socket), { windowBytes: WINDOW_BYTES });
    const connection: Connection = { session, socket, secure: false };
    const forget = () => {
      if (this.#connection === connection) this.#connection = undefined;
    };
    session.onUnusable = forget;
    // Destroyed, not drained: what the session wrote may be waiting for the handshake.
    socket.on("error", (err: Error) => {
      if (!connection.secure && isNotTls(err)) connection.foreign = "not-tls";
      socket.destroy();
      session.destroy(err, false);
    });
    socket.on("close", () => session.destroy(new Error("the connection closed")));
    socket.once("secureConnect", () => {
      if (socket.alpnProtocol !== "h2") {
        const chosen = socket.alpnProtocol || "none";
        const err = new Error(`the server did not choose HTTP/2 in TLS (ALPN ${chosen})`);
        connection.foreign = "not-h2";
        // The socket first: a session closed meanwhile (`close()` during the handshake) has
        // uncorked it with its GOAWAY, and what it wrote must not reach this server.
        socket.destroy();
        session.destroy(err, false);
        return;
      }
      connection.secure = true;
      socket.uncork();
    });
    this.#connection = connection;
    return connection;
  }

  async *#call<Req, Res>(
    method: RpcMethod<Req, Res>,
    request: Req,
    deadlineMs?: number,
    signal?: AbortSignal,
  ): AsyncGenerator<Res> {
    signal?.throwIfAborted();
    if (this.#closed) throw new RpcError(Status.CANCELLED, "the client was closed");
    const connection = await this.#connect();
    const headers: [string, string][] = [
      [":method", "POST"],
      [":scheme", "https"],
      [":path", method.path],
      [":authority", this.#settings.target],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ["user-agent", "jobworker-cli"],
    ];
    if (deadlineMs !== undefined) headers.push(["grpc-timeout", grpcTimeout(deadlineMs)]);
    let stream: H2Stream;
    try {
      stream = connection.session.request(headers, frame(method.requestSerialize(request)));
    } catch (err) {
      throw unavailable(connection, err);
    }
    this.#calls.add(stream);
    let local: RpcError | undefined;
    const end = (error: RpcError) => {
      local ??= error;
      stream.close(ErrorCode.CANCEL);
    };
    const timer = deadlineMs === undefined ? undefined : setTimeout(() => {
      const error = deadlineExceeded(connection, deadlineMs);
      end(error);
      // A connection that never got going is not kept for the next call: that one starts afresh.
      if (error.unanswered) connection.socket.destroy();
    }, deadlineMs);
    const onAbort = () => end(new RpcError(Status.CANCELLED, "Cancelled on client"));
    signal?.addEventListener("abort", onAbort, { once: true });
    let finished = false;
    try {
      yield* this.#read(stream, connection, method, () => local);
      finished = true;
    } catch (err) {
      // The consumer learns of its own abort through the signal's reason.
      if (signal?.aborted) throw signal.reason;
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.#calls.delete(stream);
      if (!finished) stream.close(ErrorCode.CANCEL); // or give back what it left unread
    }
  }

  /** Yield the response messages, then check the status. */
  async *#read<Req, Res>(
    stream: H2Stream,
    connection: Connection,
    method: RpcMethod<Req, Res>,
    local: () => RpcError | undefined,
  ): AsyncGenerator<Res> {
    const reader = new MessageReader();
    try {
      for await (const chunk of stream) {
        for (const message of reader.push(chunk)) {
          if (local()) break;
          yield method.responseDeserialize(message);
        }
        if (local()) break;
      }
    } catch (err) {
      throw local() ?? (err instanceof RpcError ? err : streamError(connection, stream, err));
    }
    const failed = local();
    if (failed) throw failed;
    if (stream.rstCode !== undefined && stream.rstCode !== ErrorCode.NO_ERROR) {
      throw streamError(connection, stream, undefined);
    }
    const headers = stream.headers;
    const status = statusOf(stream.trailers ?? {}) ?? statusOf(headers ?? {});
    if (!status) {
      const httpStatus = Number(headers?.[":status"] ?? 0);
      if (headers && httpStatus !== 200) {
        throw new RpcError(
          HTTP_TO_GRPC[httpStatus] ?? Status.UNKNOWN,
          `Received HTTP status code ${httpStatus}`,
        );
      }
      throw streamError(connection, stream, new Error("the response ended without a gRPC status"));
    }
    if (status.code !== Status.OK) throw new RpcError(status.code, status.details);
    if (reader.pending) throw new RpcError(Status.INTERNAL, "the response ended mid-message");
  }
}

/**
 * The deadline passed: say how far the connection got. Something that accepts TCP but never
 * completes a TLS handshake, or never begins HTTP/2 after it, is not a working jobworker server
 * (a hung process, another service on that port); such a call is marked unanswered, so that a
 * create is not asked again (each try waited the whole deadline: four of them, two minutes).
 */
function deadlineExceeded(connection: Connection, deadlineMs: number): RpcError {
  const seconds = Math.round(deadlineMs / 100) / 10;
  if (!connection.secure) {
    return new RpcError(
      Status.DEADLINE_EXCEEDED,
      `it accepted the connection but did not complete a TLS handshake in ${seconds} s: ` +
        "a hung server, or another service on that port",
      true,
    );
  }
  if (!connection.session.started) {
    return new RpcError(
      Status.DEADLINE_EXCEEDED,
      `the TLS handshake completed but HTTP/2 did not begin in ${seconds} s: ` +
        "a hung server, or a TLS service other than jobworker on that port",
      true,
    );
  }
  return new RpcError(Status.DEADLINE_EXCEEDED, "Deadline exceeded");
}

/** Why a call's stream ended without a status: its connection's fate, or its reset code. */
function streamError(connection: Connection, stream: H2Stream, err: unknown): RpcError {
  const rst = stream.rstCode;
  const broken = connection.session.error !== undefined;
  if (!broken && rst !== undefined && rst !== ErrorCode.NO_ERROR) {
    return new RpcError(statusOfReset(rst), `Received RST_STREAM with code ${rst}`);
  }
  return unavailable(connection, connection.session.error ?? err);
}

/** UNAVAILABLE, saying why; a connection closed before HTTP/2 began was refused in TLS. */
function unavailable(connection: Connection, err: unknown): RpcError {
  const reason = err instanceof Error ? err.message : "the connection closed";
  // Not a jobworker server: nothing was sent to it (the session is corked until the handshake
  // chose h2), and asking again would get the same answer.
  if (connection.foreign) return new RpcError(Status.UNAVAILABLE, reason, true, connection.foreign);
  if (!connection.secure || connection.session.started) {
    return new RpcError(Status.UNAVAILABLE, reason);
  }
  // TLS 1.3 clients finish their handshake before the server checks the client certificate;
  // a server that refuses it closes the connection before HTTP/2 starts.
  return new RpcError(
    Status.UNAVAILABLE,
    `the server closed the connection after the TLS handshake, before HTTP/2 began (${reason})`,
  );
}
