// jwstart: the direct start. A job's first process is made ready by this small static program
// instead of a `jobworker init` (a Deno start, tens of ms of CPU): the worker's clone execs it in
// the job's new namespaces, and it takes the steps init would take for the job and execs the
// command.
//
// The steps come as a plan the worker recorded (init/direct_plan.ts) from the very sequence init
// runs (init/job_steps.ts), so what a job gets is decided in one place. The worker's clone shares
// the worker's memory until it execs (see jwshim.c), so it execs this program at once and every
// step runs here, in a process of its own: a step that waits (a cgroup move's RCU grace period, a
// workDir on a hung NFS server or a FUSE mount, a CPU limit the job's cgroup puts on it) holds up
// the job alone, never the worker.
//
// Descriptors: 0 /dev/null, 1 and 2 the job's output, 3 the plan (read to EOF), 4 the status pipe.
// The plan: steps back to back, each an op byte then its operands: text NUL-terminated, numbers
// as 4-byte little-endian words. On failure it writes {"step":i,"errno":e} (step -1: the plan could
// not be read) to the status pipe and exits 127; the worker turns that into init's InitFailure
// through the plan's labels. For a command that cannot be found or run the report adds "kind"
// (as init/resolve_command.ts names it) and, when the file was looked up in PATH, "entry": the
// index of the PATH entry it was found under. The report never carries a path: the worker has the
// command and PATH in its plan and names the file from them in full, however long (a path of
// PATH_MAX bytes, JSON-escaped, would be up to six times that; a fixed report once cut such paths
// short). A successful exec closes the status pipe (close-on-exec): its EOF tells the worker the job
// runs. Under the minimal init the status pipe stays open across the exec of jwinit, as
// JW_STATUS_FD (jw_report.h), for jwinit to report its command's exec (see jwinit.c).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "forwarded_signals.h"
#include "jw_report.h"
#include "jwshim.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// The ops, numbered as init/direct_plan.ts numbers them.
enum op {
  OP_PRIVATE_MOUNTS = 1,
  OP_MOUNT_PROC = 2,
  OP_HOSTNAME = 3,
  OP_LOOPBACK_UP = 4,
  OP_JOIN_CGROUP = 5,
  OP_OPEN_MINIMAL_INIT = 6,
  OP_PRIVATE_DEV = 7,
  OP_MASK = 8,
  OP_BIND_READONLY = 9,
  OP_MAKE_READONLY = 10,
  OP_LIMIT_CAPABILITIES = 11,
  OP_SET_USER = 12,
  OP_NO_NEW_PRIVS = 13,
  OP_CHDIR = 14,
  OP_EXEC = 15,
};

#define PLAN_FD 3
// Far more than any plan: the worker refuses a job spec over 1 MiB.
#define MAX_PLAN (64 * 1024 * 1024)

struct step {
  int op;
  const char *text;  // a path or name; OP_EXEC: the command as given
  const char *search;  // OP_EXEC: the PATH to look a bare command up in
  uint32_t n1, n2;   // OP_MAKE_READONLY: recursive; OP_LIMIT_CAPABILITIES: keep (low, high word);
                     // OP_SET_USER: uid, gid
  uint32_t n3;       // OP_LIMIT_CAPABILITIES: inheritable; OP_SET_USER: number of groups
  uint32_t *groups;  // OP_SET_USER
  char **argv;       // OP_EXEC: argv of the command, and room for the minimal init's two first
  char **envp;       // OP_EXEC
};

struct plan {
  struct step *steps;
  int nsteps;
};

// --- reading the plan ---

struct reader {
  const char *at, *end;
  int bad;
};

static const char *read_text(struct reader *r) {
  const char *nul = r->at < r->end ? memchr(r->at, '\0', (size_t)(r->end - r->at)) : NULL;
  if (nul == NULL) {
    r->bad = 1;
    return "";
  }
  const char *text = r->at;
  r->at = nul + 1;
  return text;
}

static uint32_t read_u32(struct reader *r) {
  if (r->end - r->at < 4) {
    r->bad = 1;
    return 0;
  }
  const unsigned char *b = (const unsigned char *)r->at;
  r->at += 4;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

// n texts as a NULL-terminated vector, `room` slots left free at its front.
static char **read_vector(struct reader *r, uint32_t n, int room) {
  if (n > 1u << 20) {
    r->bad = 1;
    return NULL;
  }
  char **vec = calloc((size_t)n + (size_t)room + 1, sizeof(char *));
  if (vec == NULL) {
    r->bad = 1;
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) vec[room + i] = (char *)read_text(r);
  return vec;
}

static void free_plan(struct plan *p) {
  for (int i = 0; i < p->nsteps; i++) {
    free(p->steps[i].groups);
    free(p->steps[i].argv);
    free(p->steps[i].envp);
  }
  free(p->steps);
}

// Reads the plan into p->steps; -EINVAL when it is malformed, -ENOMEM.
static int read_plan(const char *bytes, int len, struct plan *p) {
  int room = 0;
  struct reader r = {bytes, bytes + len, 0};
  while (r.at < r.end && !r.bad) {
    if (p->nsteps == room) {
      room = room == 0 ? 64 : room * 2;
      struct step *grown = realloc(p->steps, (size_t)room * sizeof(struct step));
      if (grown == NULL) {
        free_plan(p);
        return -ENOMEM;
      }
      p->steps = grown;
    }
    struct step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->op = (unsigned char)*r.at++;
    switch (s->op) {
      case OP_PRIVATE_MOUNTS:
      case OP_MOUNT_PROC:
      case OP_LOOPBACK_UP:
      case OP_PRIVATE_DEV:
      case OP_NO_NEW_PRIVS:
        break;
      case OP_HOSTNAME:
      case OP_JOIN_CGROUP:
      case OP_OPEN_MINIMAL_INIT:
      case OP_MASK:
      case OP_BIND_READONLY:
      case OP_CHDIR:
        s->text = read_text(&r);
        break;
      case OP_MAKE_READONLY:
        s->text = read_text(&r);
        s->n1 = read_u32(&r);
        break;
      case OP_LIMIT_CAPABILITIES:
        s->n1 = read_u32(&r);
        s->n2 = read_u32(&r);
        s->n3 = read_u32(&r);
        break;
      case OP_SET_USER:
        s->n1 = read_u32(&r);
        s->n2 = read_u32(&r);
        s->n3 = read_u32(&r);
        if (s->n3 > 65536 || (s->groups = calloc((size_t)s->n3 + 1, sizeof(uint32_t))) == NULL) {
          r.bad = 1;
          break;
        }
        for (uint32_t i = 0; i < s->n3; i++) s->groups[i] = read_u32(&r);
        break;
      case OP_EXEC: {
        s->text = read_text(&r);
        s->search = read_text(&r);
        uint32_t argc = read_u32(&r);
        // Two slots in front: the minimal init's own name and the command's path.
        s->argv = read_vector(&r, argc, 2);
        uint32_t envc = read_u32(&r);
        if (!r.bad) s->envp = read_vector(&r, envc, 0);
        // The command's argv[0] is required, and nothing may follow the exec.
        if (!r.bad && (argc == 0 || r.at != r.end)) r.bad = 1;
        break;
      }
      default:
        r.bad = 1;
    }
  }
  if (r.bad || p->nsteps == 0 || p->steps[p->nsteps - 1].op != OP_EXEC) {
    free_plan(p);
    return -EINVAL;
  }
  return 0;
}

// --- taking its steps ---

// Tells the worker which step failed and why, and exits as init does. `kind`: why the command
// cannot be used (NULL for any other failure); `entry`: the PATH entry of the file, -1 for the
// command as given.
static void fail(int step, int err, const char *kind, int entry) {
  struct jw_report r = {.len = 0};
  jw_put(&r, "{\"step\":");
  jw_put_int(&r, step);
  jw_put(&r, ",\"errno\":");
  jw_put_int(&r, err);
  if (kind != NULL) {
    jw_put(&r, ",\"kind\":\"");
    jw_put(&r, kind);
    jw_put(&r, "\"");
    if (entry >= 0) {
      jw_put(&r, ",\"entry\":");
      jw_put_int(&r, entry);
    }
  }
  jw_put(&r, "}");
  jw_send(JW_STATUS_FD, &r);
  _exit(127);
}

// A path that is not there (ENOENT) is not found; any other errno (ELOOP, ENOTDIR, ENAMETOOLONG)
// cannot be looked up, and is said.
static const char *unresolved(int errnum, int *err) {
  *err = errnum;
  return errnum == ENOENT ? "not-found" : "unresolvable";
}

// Why `path` cannot be the job's command, as init/resolve_command.ts says it (NULL: it can).
static const char *unusable(const char *path, int *err) {
  if (faccessat(AT_FDCWD, path, F_OK, AT_EACCESS) != 0 && errno != EACCES) {
    return unresolved(errno, err);
  }
  struct stat st;
  if (stat(path, &st) != 0) {
    // As Deno's PermissionDenied, which init/resolve_command.ts tells apart, covers both.
    if (errno == EACCES || errno == EPERM) {
      *err = EACCES;
      return "unreachable";
    }
    return unresolved(errno, err);
  }
  if (S_ISDIR(st.st_mode)) {
    *err = EISDIR;
    return "directory";
  }
  if ((st.st_mode & 0111) == 0) {
    *err = EACCES;
    return "not-executable";
  }
  if (faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) != 0) {
    *err = errno;
    return "denied";
  }
  return NULL;
}

// The command's file, looked up as init/resolve_command.ts does (into `found`, PATH_MAX bytes): a
// name with a slash as it is, a bare name in `search` (the job's PATH), as bash looks it up (an
// entry where it is not found or cannot be looked up is passed over); reports and exits when there
// is none.
static void look_up(int step, const char *command, const char *search, char *found) {
  int err = 0;
  if (strchr(command, '/') != NULL) {
    size_t len = strlen(command);
    // What stat(2) says of a path of PATH_MAX bytes or more.
    if (len >= 4096) fail(step, ENAMETOOLONG, "unresolvable", -1);
    memcpy(found, command, len + 1);
    const char *why = unusable(found, &err);
    if (why != NULL) fail(step, err, why, -1);
    return;
  }
  const char *first_kind = NULL;
  int first_err = 0, first_entry = -1;
  size_t command_len = strlen(command);
  int entry = 0;
  for (const char *dir = search;; entry++) {
    const char *colon = strchr(dir, ':');
    size_t dir_len = colon != NULL ? (size_t)(colon - dir) : strlen(dir);
    const char *from = dir_len == 0 ? "." : dir;  // an empty entry is the working directory
    if (dir_len == 0) dir_len = 1;
    // A longer path cannot be looked up (ENAMETOOLONG): passed over, as init passes it over.
    if (dir_len + 1 + command_len < 4096) {
      memcpy(found, from, dir_len);
      found[dir_len] = '/';
      memcpy(found + dir_len + 1, command, command_len + 1);
      const char *why = unusable(found, &err);
      if (why == NULL) return;
      int passed_over = strcmp(why, "not-found") == 0 || strcmp(why, "unresolvable") == 0;
      if (!passed_over && first_kind == NULL) {
        first_kind = why;
        first_err = err;
        first_entry = entry;
      }
    }
    if (colon == NULL) break;
    dir = colon + 1;
  }
  if (first_kind != NULL) fail(step, first_err, first_kind, first_entry);
  fail(step, ENOENT, "not-in-path", -1);
}

// Looks the command up, then execs it (under the minimal init when one is open as `init_fd`).
static void exec_command(int step, const struct step *s, int init_fd) {
  char path[4096];
  look_up(step, s->text, s->search, path);
  // The status descriptor (and the minimal init's) close as the exec succeeds; under the minimal
  // init the status pipe stays open for jwinit, which reports its command's exec on it.
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(step, errno, NULL, -1);
  if (init_fd >= 0) {
    if (fcntl(JW_STATUS_FD, F_SETFD, 0) != 0) fail(step, errno, NULL, -1);
    // Blocked across the exec, as init execs jwinit: jwinit takes them once its handlers exist.
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int i = 0; i < JW_NFORWARDED; i++) sigaddset(&forwarded, jw_forwarded[i]);
    jw_reset_signals(&forwarded);
    s->argv[0] = "jwinit";
    s->argv[1] = path;
    syscall(SYS_execveat, init_fd, "", s->argv, s->envp, AT_EMPTY_PATH);
  } else {
    jw_reset_signals_unblocked();
    execve(path, s->argv + 2, s->envp);
  }
  fail(step, errno, NULL, -1);
}

// jwstart has one thread, so moving that thread moves the whole process. Where the hierarchy has a
// `tasks` file (cgroup v1), a thread that moves itself there ("0") skips the kernel's global
// migration lock, whose first writer after a quiet moment waits for an RCU grace period (7-42 ms
// measured here: most of a job's start); a write to cgroup.procs (all v2 has) always takes it.
// Anything but success through `tasks` goes the usual way, and that way's error is the one told.
// On v2 the plan usually has no join: the worker's clone put this process in the job's cgroup
// (CLONE_INTO_CGROUP); it joins only when the kernel refused that (worker/runtime/direct_start.ts).
static int join_cgroup(const char *procs_file) {
  static const char procs[] = "cgroup.procs";
  size_t len = strlen(procs_file);
  size_t dir = len - (sizeof procs - 1);
  if (len >= sizeof procs && len < PATH_MAX && strcmp(procs_file + dir, procs) == 0 &&
      (dir == 0 || procs_file[dir - 1] == '/')) {
    char tasks[PATH_MAX];
    memcpy(tasks, procs_file, dir);
    memcpy(tasks + dir, "tasks", sizeof "tasks");
    if (jw_join_cgroup(tasks) == 0) return 0;
  }
  return jw_join_cgroup(procs_file);
}

static int run_step(const struct step *s, int *init_fd) {
  switch (s->op) {
    case OP_PRIVATE_MOUNTS:
      return jw_make_mounts_private();
    case OP_MOUNT_PROC:
      return jw_mount_proc();
    case OP_HOSTNAME:
      return jw_set_hostname(s->text);
    case OP_LOOPBACK_UP:
      return jw_loopback_up();
    case OP_JOIN_CGROUP:
      return join_cgroup(s->text);
    case OP_OPEN_MINIMAL_INIT: {
      int fd = jw_open_path(s->text);
      if (fd < 0) return fd;
      *init_fd = fd;
      return 0;
    }
    case OP_PRIVATE_DEV:
      return jw_private_dev();
    case OP_MASK:
      return jw_mask(s->text);
    case OP_BIND_READONLY:
      return jw_bind_readonly(s->text);
    case OP_MAKE_READONLY:
      return jw_make_readonly(s->text, (int)s->n1);
    case OP_LIMIT_CAPABILITIES:
      return jw_limit_capabilities((uint64_t)s->n2 << 32 | s->n1, (int)s->n3);
    case OP_SET_USER:
      return jw_set_user(s->n1, s->n2, s->groups, (int)s->n3);
    case OP_NO_NEW_PRIVS:
      return jw_no_new_privs();
    case OP_CHDIR:
      return jw_chdir(s->text);
  }
  return -EINVAL;
}

// All of `fd` until EOF into a buffer of its own (*len bytes); NULL when it cannot be read.
static char *read_all(int fd, int *len) {
  size_t size = 64 * 1024, used = 0;
  char *buf = malloc(size);
  while (buf != NULL) {
    if (used == size) {
      char *grown = size < MAX_PLAN ? realloc(buf, size * 2) : NULL;
      if (grown == NULL) break;
      buf = grown;
      size *= 2;
    }
    ssize_t n = read(fd, buf + used, size - used);
    if (n == 0) {
      *len = (int)used;
      return buf;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    used += (size_t)n;
  }
  free(buf);
  return NULL;
}

// Whether the worker still reads the status pipe: the parent-death signal covers a worker that dies
// later, not one that died before it was set (at the clone, or again after the change of user).
static int worker_gone(void) {
  struct pollfd p = {JW_STATUS_FD, POLLOUT, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
}

int main(void) {
  if (worker_gone()) return 127;
  int len = 0;
  char *bytes = read_all(PLAN_FD, &len);
  if (bytes == NULL) fail(-1, errno != 0 ? errno : ENOMEM, NULL, -1);
  close(PLAN_FD);
  struct plan p = {.steps = NULL, .nsteps = 0};
  int r = len > 0 ? read_plan(bytes, len, &p) : -EINVAL;
  if (r < 0) fail(-1, -r, NULL, -1);
  int init_fd = -1;
  for (int i = 0; i < p.nsteps; i++) {
    const struct step *s = &p.steps[i];
    if (s->op == OP_EXEC) exec_command(i, s, init_fd);
    r = run_step(s, &init_fd);
    if (r < 0) fail(i, -r, NULL, -1);
    if (s->op == OP_SET_USER && worker_gone()) return 127;
  }
  return 127;
}
