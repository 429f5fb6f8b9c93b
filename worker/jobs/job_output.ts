/**
 * A running job's output: its two pipes pumped into the job's log as they are read, a log that
 * cannot be written (disk full) turned into recorded loss rather than a blocked job, and the pipes
 * drained at the job's end.
 */
import type { LaunchedProcess } from "../runtime/launcher.ts";
import { log } from "../log/logger.ts";
import type { Job } from "./job.ts";
import type { StreamId } from "./output_log.ts";
import type { JobEvents } from "./events.ts";
import type { OutputSink, OutputSinks } from "../runtime/output_pipe.ts";
import { delay, message } from "./running.ts";

/**
 * How long a job's output pipes may stay open, with no process of the job left, through a writer
 * that escaped the job (a descriptor passed to a process outside it). Without such a writer the
 * output is read to its end however long that takes.
 */
const OUTPUT_DRAIN_MS = 5000;
const DRAIN_CHECK_MS = 250;

/**
 * Where the job's pipes deliver (given when they are opened: Launcher.launch, adoptedProcess): each
 * read appended to the job's log.
 */
export function outputSinks(job: Job, events: JobEvents | undefined): OutputSinks {
  // The bytes are valid only during the call (output_pipe.ts): appended synchronously.
  const sink = (stream: StreamId): OutputSink => (bytes) => {
    events?.outputIngested(bytes.byteLength);
    appendOutput(job, stream, bytes);
  };
  return { stdout: sink(1), stderr: sink(2) };
}

/** Resolves when both of the job's pipes reached EOF (their reads go to {@link outputSinks}). */
export function outputEnded(job: Job, process: LaunchedProcess): Promise<unknown> {
  return Promise.all([untilClosed(job, process.stdout), untilClosed(job, process.stderr)]);
}

async function untilClosed(job: Job, pipe: LaunchedProcess["stdout"]): Promise<void> {
  const { error } = await pipe.closed;
  if (error !== undefined) log.warn("job output error", { id: job.id, error });
}

export function appendOutput(job: Job, stream: StreamId, chunk: Uint8Array): void {
  const output = job.output!;
  try {
    output.append(stream, chunk);
  } catch (e) {
    // Disk full or the like: the output log stops here (readers see it end), but the
    // pipe is still drained so the job itself is not blocked and the worker lives on.
    if (!output.finished) {
      job.outputLost = { offset: output.size, error: message(e) };
      log.error("cannot store the job's output; the rest of it is lost", {
        id: job.id,
        offset: output.size,
        error: message(e),
      });
      output.finish();
    }
  }
}

/**
 * Reads the job's output pipes to their end; false when a writer outside the job held one open for
 * OUTPUT_DRAIN_MS (the pipes are then closed, the rest of the output lost).
 */
export async function drainOutput(
  process: LaunchedProcess,
  outputDone: Promise<unknown>,
): Promise<boolean> {
  const done = outputDone.then(() => true);
  let heldMs = 0;
  for (;;) {
    if (await Promise.race([done, delay(DRAIN_CHECK_MS).then(() => false)])) return true;
    const held = process.stdout.hasWriters() || process.stderr.hasWriters();
    heldMs = held ? heldMs + DRAIN_CHECK_MS : 0;
    if (heldMs >= OUTPUT_DRAIN_MS) {
      process.stdout.destroy();
      process.stderr.destroy();
      return false;
    }
  }
}
