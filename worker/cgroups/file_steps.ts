/**
 * A job cgroup's creation as steps: each a file operation (file_batch.ts) and the LimitError its
 * failure is told as, all run as one batch that stops at the first failure.
 */
import type { FileBatch, FileOp } from "./file_batch.ts";
import { errnoOf, mkdirError, writeError } from "./files.ts";
import { LimitError, type LimitName } from "./types.ts";

/** One file operation of a create, and the LimitError its failure is told as. */
export interface Step {
  op: FileOp;
  failure(error: Error): LimitError;
}

export function mkdirStep(dir: string): Step {
  return {
    op: { kind: "mkdir", path: dir },
    failure: (error) =>
      errnoOf(error) === "EEXIST"
        ? new LimitError(`cgroup ${dir} already exists`)
        : mkdirError(dir, error),
  };
}

export function writeStep(
  what: string,
  limit: LimitName | undefined,
  path: string,
  value: string,
): Step {
  return {
    op: { kind: "write", path, data: value },
    failure: (error) => writeError(what, limit, path, value, error),
  };
}

/** Writing a limit: its failure names the limit ("Cannot apply maxMemory: writing ..."). */
export function limitStep(limit: LimitName, path: string, value: string): Step {
  return writeStep(`Cannot apply ${limit}`, limit, path, value);
}

/** Runs the steps as one batch; the first that failed (its index and error), if one did. */
export async function runSteps(
  files: FileBatch,
  steps: Step[],
): Promise<{ at: number; error: LimitError } | undefined> {
  const results = await files.run(steps.map((step) => step.op), true);
  const at = results.findIndex((result) => result.error);
  return at < 0 ? undefined : { at, error: steps[at]!.failure(results[at]!.error!) };
}
