/**
 * A job's environment: a small, predictable base (never the worker's own environment, which may
 * hold secrets), overridden by the KEY=VALUE entries the client asked for.
 */

const BASE: readonly string[] = [
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "LANG=C.UTF-8",
];

/** The job's environment; HOME is the home of the user it runs as. */
export function jobEnvironment(
  jobId: string,
  requested: readonly string[],
  home = "/root",
): string[] {
  const merged = new Map<string, string>();
  const fixed = [...BASE, `HOME=${home}`, `HOSTNAME=${jobId}`, `JOBWORKER_JOB_ID=${jobId}`];
  for (const entry of [...fixed, ...requested]) {
    merged.set(entry.slice(0, entry.indexOf("=")), entry);
  }
  return [...merged.values()];
}
