/* LD_PRELOAD shim for Debian's UML 6.1 on hosts with AMX: the host kernel accepts
 * PTRACE_SETREGSET NT_X86_XSTATE only with a buffer of the full XSAVE size (~11 KiB with AMX
 * tile data), larger than UML's fixed buffer -> EFAULT ("ptrace set fp regs failed, errno = 14").
 * Pad UML's buffer with the tracee's current state up to the full size. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(int, pid_t, void *, void *);
static char full[65536] __attribute__((aligned(64)));

long ptrace(enum __ptrace_request request, ...) {
  va_list ap;
  va_start(ap, request);
  pid_t pid = va_arg(ap, pid_t);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);
  static ptrace_fn real;
  if (!real) real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
  if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE) {
    struct iovec *iov = data;
    struct iovec fiov = {full, sizeof full};
    if (real(PTRACE_GETREGSET, pid, addr, &fiov) == 0 && fiov.iov_len > iov->iov_len) {
      memcpy(full, iov->iov_base, iov->iov_len);
      return real(PTRACE_SETREGSET, pid, addr, &fiov);
    }
  }
  return real(request, pid, addr, data);
}
