/**
 * Unit tests of the pieces of issue 10 that need no worker: user resolution against a user
 * database, the revocation file's format, and reading a process's SIGTERM disposition.
 *
 * @module
 */
import assert from "node:assert/strict";
import { resolveUser, UnknownUser, userDatabaseCache } from "../worker/runtime/users.ts";
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

// The parsed databases are kept between calls (a parse of /etc/passwd per CreateJob cost the
// worker's loop), so these check that every kind of change is seen by the next call.
Deno.test("users: a change of the database files is seen by the next resolution", async () => {
  const d = await Deno.makeTempDir({ prefix: "jobworker-test-users-cache-" });
  const db = { passwd: `${d}/passwd`, group: `${d}/group` };
  const saved = userDatabaseCache.settledMs;
  // Kept at once, so only the stat's key tells a change (the settling is tested below).
  userDatabaseCache.settledMs = 0;
  const pause = () => new Promise((r) => setTimeout(r, 20));
  try {
    await Deno.writeTextFile(db.passwd, "alice:x:1000:1000::/home/alice:/bin/sh\n");
    await Deno.writeTextFile(db.group, "alice:x:1000:\n");
    assert.equal(resolveUser("alice", db).uid, 1000);
    assert.throws(() => resolveUser("bob", db), /no user "bob"/);
    assert.throws(() => resolveUser("alice:staff", db), /no group "staff"/);
    // An append (size, mtime).
    await pause();
    await Deno.writeTextFile(db.passwd, "bob:x:1001:1001::/home/bob:/bin/sh\n", { append: true });
    await Deno.writeTextFile(db.group, "staff:x:50:bob\n", { append: true });
    assert.deepEqual(resolveUser("bob", db), {
      uid: 1001,
      gid: 1001,
      groups: [50, 1001],
      name: "bob",
      home: "/home/bob",
    });
    assert.equal(resolveUser("alice:staff", db).gid, 50);
    // A rewrite in place of the same size (mtime only).
    await pause();
    const sized = Deno.statSync(db.passwd).size;
    await Deno.writeTextFile(
      db.passwd,
      "alice:x:1000:1000::/home/alice:/bin/sh\nbib:x:1001:1001::/home/bib:/bin/sh\n",
    );
    assert.equal(Deno.statSync(db.passwd).size, sized);
    assert.equal(resolveUser("bib", db).uid, 1001);
    assert.throws(() => resolveUser("bob", db), /no user "bob"/);
    // A replacement by rename of the same size and mtime (the inode tells).
    const before = Deno.statSync(db.passwd);
    await Deno.writeTextFile(
      `${d}/passwd.new`,
      "alice:x:1000:1000::/home/alice:/bin/sh\ndan:x:1001:1001::/home/dan:/bin/sh\n",
    );
    assert.equal(Deno.statSync(`${d}/passwd.new`).size, before.size);
    await Deno.utime(`${d}/passwd.new`, before.atime!, before.mtime!);
    await Deno.rename(`${d}/passwd.new`, db.passwd);
    assert.equal(resolveUser("dan", db).uid, 1001);
    assert.throws(() => resolveUser("bib", db), /no user "bib"/);
    // A file that disappears: no users (a uid still resolves, without a name), then comes back.
    await Deno.remove(db.passwd);
    assert.throws(() => resolveUser("alice", db), /no user "alice"/);
    assert.deepEqual(resolveUser("1000", db).name, null);
    await Deno.writeTextFile(db.passwd, "erin:x:1002:1002::/home/erin:/bin/sh\n");
    assert.equal(resolveUser("erin", db).uid, 1002);
    assert.equal(resolveUser("1002", db).name, "erin");
  } finally {
    userDatabaseCache.settledMs = saved;
    await Deno.remove(d, { recursive: true });
  }
});

Deno.test("users: a same-size rewrite that keeps mtime, just after a read, is seen", async () => {
  // Deno's ctime has whole seconds and a tool may set mtime back: a file that changed within the
  // settling time is read again, so this change (same inode, size and mtime; ctime most likely
  // in the same second) is seen.
  const d = await Deno.makeTempDir({ prefix: "jobworker-test-users-racy-" });
  const db = { passwd: `${d}/passwd`, group: `${d}/group` };
  try {
    await Deno.writeTextFile(db.passwd, "frank:x:1000:1000::/home/frank:/bin/sh\n");
    const before = Deno.statSync(db.passwd);
    assert.equal(resolveUser("frank", db).uid, 1000);
    await Deno.writeTextFile(db.passwd, "grace:x:1000:1000::/home/grace:/bin/sh\n");
    await Deno.utime(db.passwd, before.atime!, before.mtime!);
    assert.equal(resolveUser("grace", db).uid, 1000);
    assert.throws(() => resolveUser("frank", db), /no user "frank"/);
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});

Deno.test("revocation: hex serials in the forms openssl prints", () => {
  assert.equal(normalizeSerial("00:0a:Bc"), "ABC");
  assert.equal(normalizeSerial("0"), "0");
  const set = parseRevoked("# comment\n0A:bc  \n\n1f # trailing comment\n", "f");
  assert.deepEqual([...set].sort(), ["1F", "ABC"]);
  // What `openssl x509 -noout -serial` prints, pasted as it is (README: "as openssl x509 -serial
  // prints them"); it was refused as "not a hex serial".
  const pasted = parseRevoked("serial=5E3672506D1572450D290F3CAC65B0A2\n", "f");
  assert.deepEqual([...pasted], ["5E3672506D1572450D290F3CAC65B0A2"]);
  assert.throws(() => parseRevoked("serial=\n", "f"), /f:1: "serial=" is not a hex serial/);
  assert.deepEqual([...parseRevoked("serial=0a:bc # c\n", "f")], ["ABC"]);
  // Colons alone were taken, as an empty serial.
  for (const bad of [":", "serial=:", "0a::bc", ":0a", "0a:"]) {
    assert.throws(
      () => parseRevoked(`1f\n${bad}\n`, "f"),
      new RegExp(`^RevocationFileError: f:2: "${bad}" is not a hex serial$`),
      bad,
    );
  }
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
