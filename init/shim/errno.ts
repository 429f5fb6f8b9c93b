/** Linux errno names and descriptions, for messages a person can read. */

const ERRNO: Record<number, [string, string]> = {
  1: ["EPERM", "operation not permitted"],
  2: ["ENOENT", "no such file or directory"],
  3: ["ESRCH", "no such process"],
  4: ["EINTR", "interrupted system call"],
  5: ["EIO", "input/output error"],
  6: ["ENXIO", "no such device or address"],
  7: ["E2BIG", "argument list too long"],
  8: ["ENOEXEC", "exec format error"],
  9: ["EBADF", "bad file descriptor"],
  10: ["ECHILD", "no child processes"],
  11: ["EAGAIN", "resource temporarily unavailable"],
  12: ["ENOMEM", "cannot allocate memory"],
  13: ["EACCES", "permission denied"],
  16: ["EBUSY", "device or resource busy"],
  17: ["EEXIST", "file exists"],
  19: ["ENODEV", "no such device"],
  20: ["ENOTDIR", "not a directory"],
  21: ["EISDIR", "is a directory"],
  22: ["EINVAL", "invalid argument"],
  24: ["EMFILE", "too many open files"],
  26: ["ETXTBSY", "text file busy"],
  28: ["ENOSPC", "no space left on device"],
  30: ["EROFS", "read-only file system"],
  34: ["ERANGE", "numerical result out of range"],
  36: ["ENAMETOOLONG", "file name too long"],
  38: ["ENOSYS", "function not implemented"],
  39: ["ENOTEMPTY", "directory not empty"],
  40: ["ELOOP", "too many levels of symbolic links"],
  95: ["EOPNOTSUPP", "operation not supported"],
  105: ["ENOBUFS", "no buffer space available"],
  125: ["ECANCELED", "operation canceled"],
};

/** The symbolic name of an errno value, e.g. 2 → "ENOENT". */
export function errnoName(errno: number): string {
  return ERRNO[errno]?.[0] ?? `errno ${errno}`;
}

/** The errno value of a symbolic name, e.g. "ELOOP" → 40; undefined for a name not listed. */
export function errnoNumber(name: string): number | undefined {
  for (const [value, [n]] of Object.entries(ERRNO)) if (n === name) return Number(value);
  return undefined;
}

/** A short description of an errno value, e.g. 2 → "no such file or directory". */
export function strerror(errno: number): string {
  return ERRNO[errno]?.[1] ?? "unknown error";
}
