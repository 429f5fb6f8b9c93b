/**
 * Picks the cgroup implementation for this machine: v2 when cgroup2 is mounted on /sys/fs/cgroup,
 * v1 otherwise. Never throws for a base that does not exist: create() reports it instead, so the
 * server still starts and CreateJob fails with a clear error.
 */
import { detectIoDevices } from "./io_devices.ts";
import { cgroupLayout } from "./layout.ts";
import type { CgroupOptions, DetectedCgroupManager } from "./types.ts";
import { V1Manager } from "./v1.ts";
import { V2Manager } from "./v2.ts";

/** The cgroup manager for this machine (or for the fake /proc/self and /sys in `options`). */
export function detectCgroups(options: CgroupOptions): DetectedCgroupManager {
  const procSelf = options.procSelf ?? "/proc/self";
  const sysRoot = options.sysRoot ?? "/sys";
  const layout = cgroupLayout(procSelf, sysRoot);
  const ioDevices = options.ioDevices?.length
    ? [...options.ioDevices]
    : detectIoDevices(procSelf, sysRoot);
  return layout.version === 2
    ? new V2Manager(layout, options, ioDevices)
    : new V1Manager(layout.hierarchies, options, ioDevices);
}
