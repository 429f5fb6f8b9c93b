/** Whether a retried create asks for the same job: every field of the spec, in any key order. */
import type { JobSpec } from "./job.ts";

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

export function sameSpec(a: JobSpec, b: JobSpec): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}
