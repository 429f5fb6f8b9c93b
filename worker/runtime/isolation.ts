/**
 * The isolation every job gets from this worker, as GetServerInfo reports it. The one list to
 * extend when the runtime isolates jobs in more ways.
 */
export const ISOLATION: readonly string[] = ["pid", "mount", "ipc", "uts"];
