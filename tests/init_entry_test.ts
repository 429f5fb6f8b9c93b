/**
 * `jobworker init` outside the namespaces the worker's clone makes (not PID 1): it must refuse
 * before touching a mount. Run by hand as root, `init --pooled` would otherwise make the caller's
 * mounts private and replace its /proc. The check runs in a mount namespace of its own (util-linux
 * `unshare --mount`), so that even an init without the guard changes nothing outside it.
 *
 * @module
 */
import assert from "node:assert/strict";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const SHIM = new URL("../build/libjwshim.so", import.meta.url).pathname;

/** Runs `script` under `unshare ARGS`, with $DENO, $MAIN and $SHIM set; checks init refused. */
async function assertRefused(unshareArgs: string[], script: string[]): Promise<void> {
  const out = await new Deno.Command("unshare", {
    args: [...unshareArgs, "sh", "-c", script.join("\n")],
    env: { DENO: Deno.execPath(), MAIN, SHIM },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2, `exit code (stderr: ${stderr})`);
  assert.match(stderr, /started by the worker for each job; it is not run by hand/);
  assert.equal(stdout.trim(), "proc unchanged");
}

const INIT =
  `"$DENO" run --quiet --no-config --allow-all --no-prompt --cached-only "$MAIN" init --shim "$SHIM" --pooled`;

Deno.test("init run by hand (not PID 1): refused with exit 2, /proc left as it was", async () => {
  await assertRefused(["--mount", "--propagation", "private"], [
    `before=$(grep ' /proc ' /proc/self/mountinfo)`,
    INIT,
    `code=$?`,
    `after=$(grep ' /proc ' /proc/self/mountinfo)`,
    `[ "$before" = "$after" ] && echo "proc unchanged" || echo "proc replaced"`,
    `exit $code`,
  ]);
});

// As `unshare --pid --fork jobworker init` on the host would: PID 1 of a new PID namespace, but in
// the mount namespace of the /proc it sees (here a shell that is PID 1 of an outer namespace pair,
// so the host's mounts are never at stake).
Deno.test("init made PID 1 by hand, in its caller's mount namespace: refused, /proc left as it was", async () => {
  await assertRefused(["--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"], [
    `before=$(grep ' /proc ' /proc/self/mountinfo)`,
    `unshare --pid --fork ${INIT}`,
    `code=$?`,
    `after=$(grep ' /proc ' /proc/self/mountinfo)`,
    `[ "$before" = "$after" ] && echo "proc unchanged" || echo "proc replaced"`,
    `exit $code`,
  ]);
});
