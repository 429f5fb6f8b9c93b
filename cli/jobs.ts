/**
 * Jobs as the commands ask for them: every page of a listing, an id from any unique prefix, and
 * the shortest unique length to show ids at.
 *
 * @module
 */
import type { jobworker } from "../proto/service.ts";
import type { JobApi } from "./context.ts";
import { CliError, EXIT_FAILURE, UsageError } from "./errors.ts";

/** Length of a full job id (a UUID). */
const FULL_ID_LENGTH = 36;
/** The fewest characters `list` shows of an id. */
export const MIN_SHORT_ID = 8;

/** Every job matching `req`, following the pages; the counts are the first page's. */
export async function listAllJobs(
  client: JobApi,
  req: jobworker.IListJobsReq = {},
): Promise<{ jobs: jobworker.IJob[]; countByStatus: Record<string, number> }> {
  const jobs: jobworker.IJob[] = [];
  let countByStatus: Record<string, number> = {};
  let pageToken = "";
  for (let page = 0;; page++) {
    const res = await client.listJobsPage({ ...req, pageToken });
    if (page === 0) countByStatus = { ...res.countByStatus };
    jobs.push(...res.jobs);
    if (!res.nextPageToken || res.nextPageToken === pageToken) break;
    pageToken = res.nextPageToken;
  }
  return { jobs, countByStatus };
}

/**
 * The id of the one job whose id starts with `prefix`. A full id is taken as it is (the server
 * says whether it exists).
 *
 * @throws {CliError} When no job matches (exit 1).
 * @throws {UsageError} When several match; the message lists them.
 */
export async function resolveJobId(client: JobApi, prefix: string): Promise<string> {
  return (await resolveJobIds(client, [prefix]))[0]!;
}

/** Resolve several prefixes with one listing (when any is short). */
export async function resolveJobIds(client: JobApi, prefixes: string[]): Promise<string[]> {
  if (prefixes.includes("")) throw new UsageError("A job id cannot be empty");
  if (prefixes.every((p) => p.length >= FULL_ID_LENGTH)) return prefixes;
  const { jobs } = await listAllJobs(client);
  return prefixes.map((prefix) => matchPrefix(jobs, prefix));
}

/** The one job of `jobs` whose id starts with `prefix` (a full id as it is). */
function matchPrefix(jobs: jobworker.IJob[], prefix: string): string {
  if (prefix.length >= FULL_ID_LENGTH) return prefix;
  const matches = jobs.filter((job) => (job.id ?? "").startsWith(prefix));
  if (matches.length === 1) return matches[0]!.id!;
  if (matches.length === 0) throw new CliError(`No job with id "${prefix}"`, EXIT_FAILURE);
  const shown = matches.slice(0, 10).map((job) => `  ${job.id} ${job.command ?? ""}`);
  const more = matches.length > 10 ? `\n  ... and ${matches.length - 10} more` : "";
  throw new UsageError(
    `The id prefix "${prefix}" is ambiguous: ${matches.length} jobs match:\n` +
      shown.join("\n") + more,
  );
}

/**
 * The length at which every id of `ids` is unique among them, at least `MIN_SHORT_ID`.
 *
 * @example
 * ```ts
 * shortIdLength(["aaaaaaaa1", "aaaaaaaa2"]); // 9
 * ```
 */
export function shortIdLength(ids: readonly string[]): number {
  const sorted = [...ids].sort();
  let length = MIN_SHORT_ID;
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    let common = 0;
    while (common < a.length && a[common] === b[common]) common++;
    length = Math.max(length, common + 1);
  }
  return Math.min(length, Math.max(MIN_SHORT_ID, ...ids.map((id) => id.length)));
}
