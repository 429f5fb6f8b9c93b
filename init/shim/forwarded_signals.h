// The signals jwinit (the minimal init of `init: true` jobs) forwards to its child. jw_exec blocks
// them when it execs jwinit: a namespace's PID 1 drops a signal it has no handler for, and one
// sent between the exec and jwinit's sigaction would be lost, while a blocked one waits.
// (The status pipe jwinit reports on: jw_report.h.)
#ifndef JW_FORWARDED_SIGNALS_H
#define JW_FORWARDED_SIGNALS_H
#include <signal.h>

static const int jw_forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
enum { JW_NFORWARDED = sizeof jw_forwarded / sizeof jw_forwarded[0] };

#endif
