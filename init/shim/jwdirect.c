// jwdirect: the direct start. A job's first process is made ready by the worker's own clone,
// without a `jobworker init` (a Deno start, tens of ms of CPU): the child, between clone3 and
// execve, takes the steps init would take for the job and execs the command itself.
//
// The steps come as a plan the worker recorded (init/direct_plan.ts) from the very sequence init
// runs (init/job_steps.ts), so what a job gets is decided in one place. jw_spawn_direct reads the
// plan in the parent, before clone3, into vectors the child walks: the child (sharing the worker's
// memory until it execs, see jwshim.c) parses, allocates and formats nothing but its one failure
// report, built on its own stack.
//
// The plan: steps back to back, each an op byte then its operands: text NUL-terminated, numbers
// as 4-byte little-endian words. On failure the child writes {"step":i,"errno":e} (with "kind"
// and "path" for a command that cannot be found or run) to the status descriptor and exits 127;
// the worker turns that into init's InitFailure through the plan's labels. A successful exec
// closes the status descriptor (close-on-exec): its EOF tells the worker the job runs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "forwarded_signals.h"
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

// The child's descriptors: 0 /dev/null, 1 and 2 the job's output, 3 the status pipe.
#define STATUS_FD 3
#define DIRECT_FDS 4

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
  int fds[DIRECT_FDS];
};

// --- reading the plan (in the parent) ---

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
  p->steps = calloc((size_t)len + 1, sizeof(struct step));  // at least a byte per step
  if (p->steps == NULL) return -ENOMEM;
  struct reader r = {bytes, bytes + len, 0};
  while (r.at < r.end && !r.bad) {
    struct step *s = &p->steps[p->nsteps++];
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
        if (!r.bad && argc == 0) r.bad = 1;
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

// --- the child ---

struct report {
  char text[6144];
  size_t len;
};

static void put(struct report *r, const char *s) {
  while (*s != '\0' && r->len + 1 < sizeof r->text) r->text[r->len++] = *s++;
}

static void put_number(struct report *r, int n) {
  char digits[12];
  jw_format_uint(digits, n < 0 ? 0u : (unsigned)n);
  put(r, digits);
}

// `s` as the inside of a JSON string.
static void put_json_text(struct report *r, const char *s) {
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (r->len + 8 >= sizeof r->text) return;
    if (*c == '"' || *c == '\\') {
      r->text[r->len++] = '\\';
      r->text[r->len++] = (char)*c;
    } else if (*c < 0x20) {
      put(r, "\\u00");
      r->text[r->len++] = hex[*c >> 4];
      r->text[r->len++] = hex[*c & 15];
    } else {
      r->text[r->len++] = (char)*c;
    }
  }
}

// Tells the worker which step failed and why, and exits as init does.
static void fail(int step, int err, const char *kind, const char *path) {
  struct report r = {.len = 0};
  put(&r, "{\"step\":");
  put_number(&r, step);
  put(&r, ",\"errno\":");
  put_number(&r, err);
  if (kind != NULL) {
    put(&r, ",\"kind\":\"");
    put(&r, kind);
    put(&r, "\",\"path\":\"");
    put_json_text(&r, path);
    put(&r, "\"");
  }
  put(&r, "}");
  ssize_t ignored = write(STATUS_FD, r.text, r.len);
  (void)ignored;
  _exit(127);
}

static int join_cgroup(const char *procs_file) {
  int fd = open(procs_file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, "0", 1);
  int err = errno;
  close(fd);
  return n == 1 ? 0 : -err;
}

// Why `path` cannot be the job's command, as init/resolve_command.ts says it (NULL: it can).
static const char *unusable(const char *path, int *err) {
  if (faccessat(AT_FDCWD, path, F_OK, AT_EACCESS) != 0 && errno != EACCES) {
    *err = ENOENT;
    return "not-found";
  }
  struct stat st;
  if (stat(path, &st) != 0) {
    *err = errno == EACCES ? EACCES : ENOENT;
    return errno == EACCES ? "unreachable" : "not-found";
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
// name with a slash as it is, a bare name in `search` (the job's PATH); reports and exits when
// there is none.
static void look_up(int step, const char *command, const char *search, char *found) {
  int err = 0;
  if (strchr(command, '/') != NULL) {
    size_t len = strlen(command);
    if (len >= 4096) fail(step, ENAMETOOLONG, "not-found", command);
    memcpy(found, command, len + 1);
    const char *why = unusable(found, &err);
    if (why != NULL) fail(step, err, why, found);
    return;
  }
  const char *first_kind = NULL;
  int first_err = 0;
  char first_path[4096];
  size_t command_len = strlen(command);
  for (const char *dir = search;;) {
    const char *colon = strchr(dir, ':');
    size_t dir_len = colon != NULL ? (size_t)(colon - dir) : strlen(dir);
    const char *from = dir_len == 0 ? "." : dir;  // an empty entry is the working directory
    if (dir_len == 0) dir_len = 1;
    if (dir_len + 1 + command_len < 4096) {
      memcpy(found, from, dir_len);
      found[dir_len] = '/';
      memcpy(found + dir_len + 1, command, command_len + 1);
      const char *why = unusable(found, &err);
      if (why == NULL) return;
      if (err != ENOENT && first_kind == NULL) {
        first_kind = why;
        first_err = err;
        memcpy(first_path, found, dir_len + command_len + 2);
      }
    }
    if (colon == NULL) break;
    dir = colon + 1;
  }
  if (first_kind != NULL) fail(step, first_err, first_kind, first_path);
  fail(step, ENOENT, "not-in-path", command);
}

// Looks the command up, then execs it (under the minimal init when one is open as `init_fd`).
static void exec_command(int step, const struct step *s, int init_fd) {
  char path[4096];
  look_up(step, s->text, s->search, path);
  // The status descriptor (and the minimal init's) close as the exec succeeds.
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(step, errno, NULL, NULL);
  s->argv[2] = (char *)s->text;
  if (init_fd >= 0) {
    // Blocked before their dispositions become SIG_DFL, so none is dropped on the way to jwinit.
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
  fail(step, errno, NULL, NULL);
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

static void direct_child(void *opaque) {
  const struct plan *p = opaque;
  if (jw_place_fds(p->fds, DIRECT_FDS) != 0) fail(0, errno, NULL, NULL);
  setsid();
  // As a cloned init: the job dies with the worker (see jwshim.c's child).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int init_fd = -1;
  for (int i = 0; i < p->nsteps; i++) {
    const struct step *s = &p->steps[i];
    if (s->op == OP_EXEC) exec_command(i, s, init_fd);
    int r = run_step(s, &init_fd);
    if (r < 0) fail(i, -r, NULL, NULL);
  }
  _exit(127);
}

// Starts a job directly: clone3 into new namespaces (network too with `new_net`), then the plan's
// steps and the command's exec in the child. `stdout_fd` and `stderr_fd` become the job's 1 and
// 2, /dev/null its 0, `status_fd` its 3 until the exec. Returns the child's pid or -errno
// (-EINVAL: a malformed plan); *pidfd_out receives its pidfd. A failed step is reported through
// the status pipe, not here.
int jw_spawn_direct(const char *plan, int plan_len, int stdout_fd, int stderr_fd, int status_fd,
                    int *pidfd_out, int new_net) {
  if (plan_len <= 0) return -EINVAL;
  struct plan p = {.steps = NULL, .nsteps = 0, .fds = {-1, stdout_fd, stderr_fd, status_fd}};
  int r = read_plan(plan, plan_len, &p);
  if (r < 0) return r;
  int pid = jw_clone_namespaces(direct_child, &p, new_net, pidfd_out);
  free_plan(&p);
  return pid;
}
