/**
 * The default profile of a job, applied by `jobworker init` between its namespaces and the exec of
 * the command: what Docker and runc give a container by default, on the host's filesystem.
 *
 * - {@link protectFilesystem}: a private /dev, runc's masked and read-only /proc and /sys
 *   entries, /sys (with the cgroup mounts) read-only, the worker's own paths covered and its
 *   program read-only. Needs CAP_SYS_ADMIN, so it runs before {@link dropPrivileges}.
 * - {@link dropPrivileges}: Docker's default capabilities without MKNOD, the job's user, and
 *   no_new_privs for a non-root user.
 *
 * A privileged job gets neither the filesystem protection nor the capability limit; it still
 * runs as the user it asked for. Imports only the shim bindings, so init stays light. The same
 * calls are recorded for a job started directly by the shim (init/direct_plan.ts).
 */
import type { Shim } from "./shim/ffi.ts";
import type { InitSpec } from "./spec.ts";

/** The calls the profile makes: the shim's, run by init, or recorded for a direct start. */
export type ProfileCalls = Pick<
  Shim,
  | "privateDev"
  | "mask"
  | "bindReadonly"
  | "makeReadonly"
  | "limitCapabilities"
  | "setUser"
  | "noNewPrivs"
>;

/** Docker's default capability set without CAP_MKNOD (numbers from linux/capability.h). */
export const DEFAULT_CAPABILITIES: Readonly<Record<string, number>> = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  FOWNER: 3,
  FSETID: 4,
  KILL: 5,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  NET_BIND_SERVICE: 10,
  NET_RAW: 13,
  SYS_CHROOT: 18,
  AUDIT_WRITE: 29,
  SETFCAP: 31,
};

/** runc's (and Docker's) masked paths: hidden behind an empty tmpfs or /dev/null. */
export const MASKED_PATHS: readonly string[] = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

/** runc's (and Docker's) read-only paths of /proc. */
export const READONLY_PROC_PATHS: readonly string[] = [
  "/proc/bus",
  "/proc/fs",
  "/proc/irq",
  "/proc/sys",
  "/proc/sysrq-trigger",
];

function capabilityMask(caps: Iterable<number>): bigint {
  let mask = 0n;
  for (const cap of caps) mask |= 1n << BigInt(cap);
  return mask;
}

/**
 * Hides what a job must not reach and makes read-only what it must not change. Runs after the
 * job has joined its cgroup (the cgroup files become read-only here) and after /proc is fresh.
 */
export function protectFilesystem(shim: ProfileCalls, spec: InitSpec): void {
  shim.privateDev();
  for (const path of MASKED_PATHS) shim.mask(path);
  for (const path of READONLY_PROC_PATHS) shim.bindReadonly(path);
  shim.makeReadonly("/sys", true);
  // Read-only binds first: a mask inside one of them (a state directory inside the checkout)
  // then covers the read-only copy.
  for (const path of spec.readonlyPaths) shim.bindReadonly(path);
  for (const path of spec.maskPaths) shim.mask(path);
}

/** Limits capabilities and becomes the job's user; the last step before the workDir and exec. */
export function dropPrivileges(shim: ProfileCalls, spec: InitSpec): void {
  const { uid, gid, groups } = spec.user;
  if (!spec.privileged) {
    // Root keeps the set in all of permitted, effective and inheritable; another user loses
    // permitted and effective when it leaves root below, and gets no inheritable capabilities
    // (which file capabilities could otherwise raise again).
    shim.limitCapabilities(capabilityMask(Object.values(DEFAULT_CAPABILITIES)), uid === 0);
  }
  shim.setUser(uid, gid, groups);
  if (uid !== 0) shim.noNewPrivs();
}
