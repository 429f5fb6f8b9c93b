/**
 * Resolves who a job runs as from the host's user and group databases (/etc/passwd, /etc/group):
 * "root", a user name, "uid", "uid:gid", "name:group". Supplementary groups are the user's groups
 * in the group database (with its primary group); a uid that has no entry gets none, its own uid
 * as gid unless one is given (not gid 0 as Docker does: group root opens files a job should not
 * see), and HOME=/.
 */
import type { JobUser } from "../../init/spec.ts";

export interface ResolvedUser extends JobUser {
  /** The user's name, when the database has one. */
  name: string | null;
  /** Home directory from the database, else "/". */
  home: string;
}

/** A user or group that does not exist or cannot be a job's; the message says which. */
export class UnknownUser extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnknownUser";
  }
}

export interface UserDatabase {
  passwd: string;
  group: string;
}

/** The highest id a job may have: (uid_t)-1 means "no change" to the kernel. */
const MAX_ID = 0xfffffffe;
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*\$?$/;

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

function lines(text: string): string[][] {
  return text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#")).map((l) =>
    l.split(":")
  );
}

function parsePasswd(text: string): PasswdEntry[] {
  return lines(text).filter((f) => f.length >= 7).map((f) => ({
    name: f[0]!,
    uid: Number(f[2]),
    gid: Number(f[3]),
    home: f[5] || "/",
  }));
}

function parseGroup(text: string): GroupEntry[] {
  return lines(text).filter((f) => f.length >= 4).map((f) => ({
    name: f[0]!,
    gid: Number(f[2]),
    members: f[3]!.split(",").map((m) => m.trim()).filter(Boolean),
  }));
}

function id(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > MAX_ID) {
    throw new UnknownUser(`${what} ${text} is out of range (0..${MAX_ID})`);
  }
  return n;
}

/** A database file as last read: what its stat said then, and what it held. */
interface CachedFile<T> {
  key: string;
  entries: T[];
}

const passwdCache = new Map<string, CachedFile<PasswdEntry>>();
const groupCache = new Map<string, CachedFile<GroupEntry>>();

/**
 * settledMs: how long ago a file must have changed for its parse to be kept (tests lower it). A
 * change shows in the stat, except a rewrite in place that keeps the size within the same tick of
 * the file system's clock (Deno's ctime has whole seconds only, and a tool may set mtime back);
 * so a file changed this recently before it was read is read again at every call until older.
 */
export const userDatabaseCache = { settledMs: 2000 };

/**
 * The entries of one database file, parsed again only when its stat changed: a stat per call is
 * enough because an edit in place (vipw, sed -i's write, an append) changes mtime/ctime/size and a
 * replacement (useradd, sed -i, an editor's rename) changes the inode, and the stat is taken
 * before the read, so a change during the read leaves an old key and is read again next time. A
 * missing or unreadable file is empty and not kept (a file that comes back is read).
 */
function readEntries<T>(
  path: string,
  cache: Map<string, CachedFile<T>>,
  parse: (text: string) => T[],
): T[] {
  let key: string;
  let changedAt: number;
  try {
    const st = Deno.statSync(path);
    changedAt = Math.max(st.mtime?.getTime() ?? Infinity, st.ctime?.getTime() ?? Infinity);
    key = `${st.dev}:${st.ino}:${st.size}:${st.mtime?.getTime()}:${st.ctime?.getTime()}`;
  } catch {
    cache.delete(path);
    return [];
  }
  const cached = cache.get(path);
  if (cached && cached.key === key) return cached.entries;
  let entries: T[];
  try {
    entries = parse(Deno.readTextFileSync(path));
  } catch {
    cache.delete(path);
    return [];
  }
  if (Date.now() - changedAt >= userDatabaseCache.settledMs) cache.set(path, { key, entries });
  else cache.delete(path);
  return entries;
}

function readDatabase(db: UserDatabase): { users: PasswdEntry[]; groups: GroupEntry[] } {
  return {
    users: readEntries(db.passwd, passwdCache, parsePasswd),
    groups: readEntries(db.group, groupCache, parseGroup),
  };
}

/** Resolves `spec` ("root", "name", "uid", "uid:gid", "name:group"); throws UnknownUser. */
export function resolveUser(
  spec: string,
  db: UserDatabase = { passwd: "/etc/passwd", group: "/etc/group" },
): ResolvedUser {
  const [userPart = "", groupPart, ...extra] = spec.split(":");
  if (extra.length > 0 || userPart === "" || groupPart === "") {
    throw new UnknownUser(`"${spec}" is not a user name, "uid" or "uid:gid"`);
  }
  const { users, groups } = readDatabase(db);
  let entry: PasswdEntry | undefined;
  let uid: number;
  if (/^\d+$/.test(userPart)) {
    uid = id(userPart, "uid");
    entry = users.find((u) => u.uid === uid);
  } else {
    if (!NAME.test(userPart)) throw new UnknownUser(`"${userPart}" is not a valid user name`);
    entry = users.find((u) => u.name === userPart);
    if (!entry) throw new UnknownUser(`no user "${userPart}" in /etc/passwd`);
    uid = entry.uid;
  }
  let gid = entry?.gid ?? uid;
  if (groupPart !== undefined) {
    if (/^\d+$/.test(groupPart)) {
      gid = id(groupPart, "gid");
    } else {
      const group = groups.find((g) => g.name === groupPart);
      if (!group) throw new UnknownUser(`no group "${groupPart}" in /etc/group`);
      gid = group.gid;
    }
  }
  const supplementary = new Set<number>();
  if (entry) {
    if (groupPart === undefined) supplementary.add(entry.gid);
    for (const g of groups) if (g.members.includes(entry.name)) supplementary.add(g.gid);
  }
  return {
    uid,
    gid,
    groups: [...supplementary].sort((a, b) => a - b),
    name: entry?.name ?? null,
    home: entry?.home ?? "/",
  };
}
