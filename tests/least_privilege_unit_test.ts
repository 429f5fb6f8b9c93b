/**
 * Unit tests of the pieces of issue 10 that need no worker: user resolution against a user
 * database, the revocation file's format, and reading a process's SIGTERM disposition.
 *
 * @module
 */
import assert from "node:assert/strict";
import { resolveUser, UnknownUser } from "../worker/runtime/users.ts";
import { normalizeSerial, parseRevoked, RevocationFileError } from "../worker/auth/revocation.ts";
import { handlesSigterm } from "../worker/jobs/pid1_term.ts";

const dir = await Deno.makeTempDir({ prefix: "jobworker-test-users-" });
const db = { passwd: `${dir}/passwd`, group: `${dir}/group` };
await Deno.writeTextFile(
  db.passwd,
  "root:x:0:0:root:/root:/bin/bash\n" +
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n" +
    "svc:x:998:997::/var/lib/svc:/usr/sbin/nologin\n",
);
await Deno.writeTextFile(
  db.group,
  "root:x:0:\nalice:x:1000:\ndocker:x:999:alice,svc\naudio:x:29:alice\nsvc:x:997:\n",
);

Deno.test("users: names, uids and groups from the database", () => {
  assert.deepEqual(resolveUser("root", db), {
    uid: 0,
    gid: 0,
    groups: [0],
    name: "root",
    home: "/root",
  });
  assert.deepEqual(resolveUser("alice", db), {
    uid: 1000,
    gid: 1000,
    groups: [29, 999, 1000],
    name: "alice",
    home: "/home/alice",
  });
  // A uid with an entry is that user; with a group given, that is the primary group.
  assert.deepEqual(resolveUser("998", db).groups, [997, 999]);
  assert.deepEqual(resolveUser("1000:docker", db), {
    uid: 1000,
    gid: 999,
    groups: [29, 999],
    name: "alice",
    home: "/home/alice",
  });
  // A uid without an entry: its own number as gid, no supplementary groups, HOME=/.
  assert.deepEqual(resolveUser("4321", db), {
    uid: 4321,
    gid: 4321,
    groups: [],
    name: null,
    home: "/",
  });
  assert.deepEqual(resolveUser("4321:5", db).gid, 5);
});

Deno.test("users: what cannot be a job's user is refused with a reason", () => {
  const refused = (spec: string, pattern: RegExp) =>
    assert.throws(() => resolveUser(spec, db), (e: Error) => {
      assert.ok(e instanceof UnknownUser);
      assert.match(e.message, pattern);
      return true;
    });
  refused("bob", /no user "bob"/);
  refused("alice:nogroup", /no group "nogroup"/);
  refused("4294967295", /out of range/);
  refused("1:2:3", /not a user name/);
  refused(":5", /not a user name/);
  refused("5:", /not a user name/);
  refused("a b", /not a valid user name/);
});

Deno.test("revocation: hex serials in the forms openssl prints", () => {
  assert.equal(normalizeSerial("00:0a:Bc"), "ABC");
  assert.equal(normalizeSerial("0"), "0");
  const set = parseRevoked("# comment\n0A:bc  \n\n1f # trailing comment\n", "f");
  assert.deepEqual([...set].sort(), ["1F", "ABC"]);
  assert.throws(() => parseRevoked("12\nxyz\n", "revoked.txt"), (e: Error) => {
    assert.ok(e instanceof RevocationFileError);
    assert.match(e.message, /revoked\.txt:2: "xyz"/);
    return true;
  });
});

Deno.test("pid1_term: reads whether a process catches or ignores SIGTERM", async () => {
  const run = (script: string) =>
    new Deno.Command("bash", { args: ["-c", script], stdout: "null" }).spawn();
  const plain = run("exec sleep 5");
  const trapping = run("trap 'exit 0' TERM; sleep 5 & wait");
  const ignoring = run("trap '' TERM; exec sleep 5");
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(handlesSigterm(plain.pid), false);
    assert.equal(handlesSigterm(trapping.pid), true);
    assert.equal(handlesSigterm(ignoring.pid), true);
  } finally {
    for (const p of [plain, trapping, ignoring]) {
      p.kill("SIGKILL");
      await p.status;
    }
  }
  assert.equal(handlesSigterm(plain.pid), null);
});

Deno.test("cleanup", () => Deno.removeSync(dir, { recursive: true }));
