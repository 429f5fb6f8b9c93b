/**
 * Turning requested limits into the numbers both cgroup versions write, and refusing values no
 * cgroup can express, before anything is created.
 */
import { isMajorMinor } from "./io_devices.ts";
import { LimitError, type LimitName, type Limits } from "./types.ts";

/** CFS period used for CPU limits: 100 ms. */
export const CPU_PERIOD_USEC = 100_000;

/** CPU quota per period for `percent` of one core. */
export function cpuQuotaUsec(percent: number): number {
  return Math.round(percent * CPU_PERIOD_USEC / 100);
}

/** Memory limit in bytes for `mib` MiB. */
export function memoryBytes(mib: number): number {
  return Math.round(mib * 1024 * 1024);
}

const NAMES: Record<keyof Limits, LimitName> = {
  cpuPercent: "maxCPU",
  memoryMiB: "maxMemory",
  ioBps: "maxIOBPS",
  pids: "maxPids",
};

/**
 * Throws a LimitError for a negative, non-finite or non-integral (pids, ioBps) limit, and for an
 * IO limit without any valid device.
 */
export function checkLimits(limits: Limits, ioDevices: readonly string[]): void {
  for (const key of Object.keys(NAMES) as (keyof Limits)[]) {
    const value = limits[key];
    const integral = key === "pids" || key === "ioBps";
    if (!Number.isFinite(value) || value < 0 || (integral && !Number.isInteger(value))) {
      throw new LimitError(`Cannot apply ${NAMES[key]}: invalid value ${value}`, {
        limit: NAMES[key],
      });
    }
  }
  if (limits.ioBps > 0) {
    if (ioDevices.length === 0) {
      throw new LimitError(
        "Cannot apply maxIOBPS: no block device found to limit (none backs a writable filesystem;" +
          " set JOB_WORKER_IO_DEVICES)",
        { limit: "maxIOBPS" },
      );
    }
    const bad = ioDevices.find((d) => !isMajorMinor(d));
    if (bad !== undefined) {
      throw new LimitError(`Cannot apply maxIOBPS: IO device "${bad}" is not major:minor`, {
        limit: "maxIOBPS",
      });
    }
  }
}
