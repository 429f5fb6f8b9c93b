/**
 * The isolation this worker offers jobs, as GetServerInfo reports it: the namespaces every job
 * gets, "network-none" (CreateJob's network "none": a network namespace with only loopback) and
 * "user" (CreateJob's user: running as another user). The one list to extend when the runtime
 * isolates jobs in more ways.
 */
export const ISOLATION: readonly string[] = ["pid", "mount", "ipc", "uts", "network-none", "user"];
