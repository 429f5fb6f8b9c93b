/** What the bench reads of /proc/<pid>/stat. @module */

/** The kernel's USER_HZ (clock ticks of /proc/stat and /proc/<pid>/stat): 100 on Linux. */
export const TICK_MS = 10;

/**
 * The fields of /proc/<pid>/stat after the process's name (which may hold spaces and parentheses),
 * from 0 (its state): ppid is 1, utime 11, stime 12, cutime 13, cstime 14, the times in clock
 * ticks. Undefined if unreadable.
 */
export function procStatFields(pid: number | "self"): string[] | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}
