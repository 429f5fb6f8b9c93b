/**
 * Byte output of the command line: writes that complete before the next one starts, and a closed
 * reader (`jobworker stream ID | head`) reported as {@linkcode OutputClosedError}, not a crash.
 *
 * @module
 */

/** Where output goes. `write` resolves once every byte is written. */
export interface Sink {
  /**
   * Write all of `bytes`.
   *
   * @throws {OutputClosedError} When the reading end is gone (EPIPE).
   */
  write(bytes: Uint8Array): Promise<void>;
}

/** The reader of an output went away; the command should stop quietly. */
export class OutputClosedError extends Error {
  /** The error's name. */
  override name = "OutputClosedError";
}

/** Something bytes can be written to in parts, like `Deno.stdout`. */
export interface PartialWriter {
  /** Write some of `bytes`; resolves to how many were written. */
  write(bytes: Uint8Array): Promise<number>;
}

/** A sink writing to a file such as `Deno.stdout`. */
export function fileSink(file: PartialWriter): Sink {
  return {
    async write(bytes) {
      let rest = bytes;
      try {
        while (rest.length > 0) rest = rest.subarray(await file.write(rest));
      } catch (err) {
        if (err instanceof Deno.errors.BrokenPipe) throw new OutputClosedError("Output closed");
        throw err;
      }
    },
  };
}

const encoder = new TextEncoder();

/** Write text as UTF-8. */
export function writeText(sink: Sink, text: string): Promise<void> {
  return sink.write(encoder.encode(text));
}
