/** The cgroup layer: detectCgroups() and the types the rest of the worker uses. */
export { detectCgroups } from "./detect.ts";
export { detectIoDevices } from "./io_devices.ts";
export {
  type CgroupManager,
  type CgroupOptions,
  type DetectedCgroupManager,
  type JobCgroup,
  LimitError,
  type LimitName,
  type Limits,
  type Usage,
} from "./types.ts";
