/**
 * ListJobs page tokens (worker/api/page_token.ts): a token continues only the listing it was made
 * for. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodePageToken, encodePageToken } from "../worker/api/page_token.ts";
import { InvalidField } from "../worker/api/validation.ts";

Deno.test("page token: round trip; filter order does not matter", () => {
  const filter = { statuses: ["FAILED", "RUNNING"] as const, owner: "alice" };
  const token = encodePageToken(42, { ...filter, statuses: [...filter.statuses] });
  assert.equal(
    decodePageToken(token, { owner: "alice", statuses: ["RUNNING", "FAILED"] }, 100),
    42,
  );
  assert.equal(decodePageToken("", {}, 100), undefined);
});

Deno.test("page token: another filter, garbage or a seq this server never gave are refused", () => {
  const token = encodePageToken(42, { owner: "alice" });
  const refused = (t: string, filter = { owner: "alice" }, last = 100) =>
    assert.throws(() => decodePageToken(t, filter, last), (e: unknown) => {
      assert.ok(e instanceof InvalidField);
      assert.equal(e.field, "pageToken");
      return true;
    });
  refused(token, { owner: "bob" });
  refused(token, { owner: "alice", statuses: ["FAILED"] } as never);
  refused(token, { owner: "alice" }, 10);
  refused("%%%");
  refused(btoa("jw1.abc.def"));
  refused(token.slice(0, -2));
});
