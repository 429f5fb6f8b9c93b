/**
 * The read end of a pipe as a node:net Socket that is freed once closed.
 *
 * Deno 2.8.3 never frees such a Socket nor its native handle (worker/tls/internals.ts,
 * pipeHandleOf): every job's pipes kept the job's whole object graph, and about 3 KiB of native
 * memory each, for as long as the worker ran, deleted jobs included. At the Socket's close its
 * handle's reading is stopped, which lets the handle go, and its link to the Socket is cut. Where
 * the handle is not as checked, the Socket is returned as it is and that is logged once.
 *
 * @module
 */
import net from "node:net";
import { log } from "../log/logger.ts";
import { CHECKED_AGAINST, pipeHandleOf, releasePipeHandle } from "../tls/internals.ts";

let warned = false;

/** `new net.Socket(options)` (options with the pipe's `fd`), freed once closed. */
export function pipeSocket(options: net.SocketConstructorOpts): net.Socket {
  const socket = new net.Socket(options);
  const handle = pipeHandleOf(socket);
  if (handle !== undefined) {
    socket.once("close", () => releasePipeHandle(handle));
  } else if (!warned) {
    warned = true;
    log.error("node:net's pipe handle is not where expected: closed pipes stay in memory", {
      checkedAgainst: `Deno ${CHECKED_AGAINST.deno}`,
    });
  }
  return socket;
}
