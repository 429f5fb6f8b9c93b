/**
 * The block devices IO limits are written for: the whole disks backing the filesystems a job can
 * write (writable mounts in /proc/self/mountinfo), never a hard-coded device. Partitions are
 * replaced by their disk (throttling is per disk); filesystems without a block device (major 0:
 * tmpfs, proc, overlay, ...) are skipped unless their source names a /dev block device (btrfs).
 */
import { parseMountInfo } from "./layout.ts";
import { exists, readText } from "./files.ts";

const MAJOR_MINOR = /^\d+:\d+$/;

/** True for a "major:minor" string. */
export function isMajorMinor(value: string): boolean {
  return MAJOR_MINOR.test(value);
}

/**
 * The whole disk of a block device: itself for a disk, the parent for a partition (which has a
 * `partition` file; its parent directory in the /sys/dev/block realpath is the disk). Undefined
 * when the device is not a block device.
 */
export function wholeDisk(majorMinor: string, sysRoot = "/sys"): string | undefined {
  let real: string;
  try {
    real = Deno.realPathSync(`${sysRoot}/dev/block/${majorMinor}`);
  } catch {
    return undefined;
  }
  if (!exists(`${real}/partition`)) return majorMinor;
  const parent = readText(`${real.slice(0, real.lastIndexOf("/"))}/dev`)?.trim();
  return parent && isMajorMinor(parent) ? parent : majorMinor;
}

/** "major:minor" of a device node's rdev (Linux dev_t encoding). */
function rdevToMajorMinor(rdev: number): string {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** The device of a mount whose mountinfo shows major 0 but whose source is a block device node. */
function sourceDevice(source: string): string | undefined {
  if (!source.startsWith("/dev/")) return undefined;
  try {
    const stat = Deno.statSync(source);
    return stat.isBlockDevice && stat.rdev !== null ? rdevToMajorMinor(stat.rdev) : undefined;
  } catch {
    return undefined;
  }
}

/** Sorts "major:minor" strings numerically. */
function byNumber(a: string, b: string): number {
  const [am = 0, an = 0] = a.split(":").map(Number);
  const [bm = 0, bn = 0] = b.split(":").map(Number);
  return am - bm || an - bn;
}

/**
 * Detects the whole disks behind every writable block-device filesystem this process sees.
 * `procSelf` and `sysRoot` let tests use a fake tree; with a fake tree, mount sources are not
 * looked up in the real /dev.
 */
export function detectIoDevices(procSelf = "/proc/self", sysRoot = "/sys"): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${procSelf}/mountinfo`);
  } catch {
    return [];
  }
  const devices = new Set<string>();
  for (const mount of parseMountInfo(text)) {
    if (!mount.options.includes("rw") || mount.superOptions.includes("ro")) continue;
    let device: string | undefined = mount.majorMinor;
    if (!isMajorMinor(device)) continue;
    if (device.startsWith("0:")) {
      device = sysRoot === "/sys" ? sourceDevice(mount.source) : undefined;
      if (!device) continue;
    }
    const disk = wholeDisk(device, sysRoot);
    if (disk && !disk.startsWith("0:")) devices.add(disk);
  }
  return [...devices].sort(byNumber);
}
