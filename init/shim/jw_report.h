// The status pipe of a job's first process, and the short JSON reports the start path's C programs
// (jwstart, jwinit, init's jw_exec) write there: built in a fixed buffer, without allocation.
//
// The status pipe is descriptor JW_STATUS_FD in the job's first process (STATUS_FD in init/spec.ts
// is the same number for TypeScript; keep them equal). Its EOF tells the worker that the command
// was exec'd: every writer holds it close-on-exec. The starter of an `init: true` job (jwstart, or
// init through jw_exec) leaves it open across the exec of jwinit, which hands it to its child,
// close-on-exec, and closes its own copy before that child may exec the command (see jwinit.c).
#ifndef JW_REPORT_H
#define JW_REPORT_H
#include <errno.h>
#include <stddef.h>
#include <unistd.h>

#define JW_STATUS_FD 4

// A few numbers and names, far below the size of the buffer (text beyond it is dropped).
struct jw_report {
  char text[256];
  size_t len;
};

static inline void jw_put(struct jw_report *r, const char *s) {
  while (*s != '\0' && r->len + 1 < sizeof r->text) r->text[r->len++] = *s++;
}

static inline void jw_put_int(struct jw_report *r, int n) {
  char digits[12];
  size_t count = 0;
  unsigned v = n < 0 ? 0u - (unsigned)n : (unsigned)n;
  do digits[count++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  if (n < 0) digits[count++] = '-';
  while (count > 0 && r->len + 1 < sizeof r->text) r->text[r->len++] = digits[--count];
}

// Writes the report whole to `fd` (quietly gives up when the pipe is gone).
static inline void jw_send(int fd, const struct jw_report *r) {
  for (size_t done = 0; done < r->len;) {
    ssize_t n = write(fd, r->text + done, r->len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += (size_t)n;
  }
}

#endif
