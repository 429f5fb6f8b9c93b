// What jwshim.c shares with jwdirect.c (hidden: not part of the library's FFI surface).
#ifndef JWSHIM_H
#define JWSHIM_H
#include <signal.h>
#include <stdint.h>

#define JW_HIDDEN __attribute__((visibility("hidden")))

// The decimal digits of `value` into `out` (room for 11), NUL-terminated; returns their count.
JW_HIDDEN int jw_format_uint(char *out, unsigned value);

// Every disposition back to SIG_DFL, then `mask` (or nothing) as the signal mask.
JW_HIDDEN void jw_reset_signals(const sigset_t *mask);
JW_HIDDEN void jw_reset_signals_unblocked(void);

// The steps of a job's start (exported for init's FFI too; see jwshim.c).
int jw_make_mounts_private(void);
int jw_mount_proc(void);
int jw_set_hostname(const char *name);
int jw_loopback_up(void);
int jw_open_path(const char *path);
int jw_private_dev(void);
int jw_mask(const char *path);
int jw_bind_readonly(const char *path);
int jw_make_readonly(const char *path, int recursive);
int jw_limit_capabilities(uint64_t keep, int inheritable);
int jw_set_user(uint32_t uid, uint32_t gid, const uint32_t *groups, int ngroups);
int jw_no_new_privs(void);
int jw_chdir(const char *dir);
int jw_join_cgroup(const char *procs_file);
int32_t jw_file_batch(const uint8_t *ops, int32_t ops_len, int32_t count, int32_t stop_at_failure,
                      int32_t *results, uint8_t *out, int32_t out_len);
#endif
