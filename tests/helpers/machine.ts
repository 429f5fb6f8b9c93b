/** Facts about the machine the tests run on that change how much load a test can ask for. */

/**
 * True inside User-mode Linux, where tests/run_cgroup_v2.sh runs the v2 part: system calls are
 * about 70x slower and there is one CPU, so load tests run smaller there (saying so in their
 * names). The runner sets JOBWORKER_UML=1 in the guest.
 */
export const UNDER_UML = Deno.env.get("JOBWORKER_UML") === "1";
