// The signals jwinit (the minimal init of `init: true` jobs) forwards to its child. jw_exec blocks
// them when it execs jwinit: a namespace's PID 1 drops a signal it has no handler for, and one
// sent between the exec and jwinit's sigaction would be lost, while a blocked one waits.
//
// Also where the starter of an `init: true` job (jwstart, or init through jw_exec) leaves the status
// pipe open across the exec of jwinit: jwinit hands it to its child, close-on-exec, and the child
// reports there why the command could not be exec'd ({"minimalInit":"execve","errno":e}), so that
// the job is refused at CreateJob as it would be without jwinit. Every other descriptor above 2 is
// closed by that exec, so an open descriptor here is always the status pipe.
#ifndef JW_FORWARDED_SIGNALS_H
#define JW_FORWARDED_SIGNALS_H
#include <signal.h>

#define JW_INIT_STATUS_FD 4

static const int jw_forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
enum { JW_NFORWARDED = sizeof jw_forwarded / sizeof jw_forwarded[0] };

#endif
