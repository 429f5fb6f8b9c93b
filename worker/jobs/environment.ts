/**
 * A job's environment: a small, predictable base (never the worker's own environment, which may
 * hold secrets), overridden by the KEY=VALUE entries the client asked for.
 */

const BASE: readonly string[] = [
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "HOME=/root",
  "LANG=C.UTF-8",
];

export function jobEnvironment(jobId: string, requested: readonly string[]): string[] {
  const merged = new Map<string, string>();
  for (const entry of [...BASE, `HOSTNAME=${jobId}`, `JOBWORKER_JOB_ID=${jobId}`, ...requested]) {
    merged.set(entry.slice(0, entry.indexOf("=")), entry);
  }
  return [...merged.values()];
}
