/**
 * Counts one `deno test` run honestly, for tests/run.sh. Inputs: the run's console log, its JUnit
 * report (`--junit-path`), its exit status, and the test files it was asked to run. Prints
 * `N passed, N failed, N skipped` and writes `N N N` to $SUMMARY_FILE when set.
 *
 * Anything that means less ran than should counts as a failure, never as a pass:
 * - no JUnit report (the runner died, hung and was killed by `timeout`, or never started);
 * - a file it was asked to run that registers no tests (`running N tests from F`), or fewer test
 *   cases in the report than the files registered in total;
 * - an ignored test whose name does not say why (`[skipped: <reason>]`, tests/helpers/skip.ts);
 * - a non-zero exit status with no failed test, or a zero status with one.
 *
 * Usage: deno run -A tests/summarize.ts LOG JUNIT EXIT_STATUS FILE...
 */

const [logPath = "", junitPath = "", exitStatus = "1", ...files] = Deno.args;
const problems: string[] = [];

const read = (path: string): string | null => {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
};

/** "./tests/x_test.ts", "../t/tests/x_test.ts" and "tests/x_test.ts" all become "tests/x_test.ts". */
const key = (file: string): string => {
  const at = file.lastIndexOf("tests/");
  return at >= 0 ? file.slice(at) : file;
};

const unescape = (s: string): string =>
  s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");

// Registered: the runner's own count per file, before it runs them.
const registered = new Map<string, number>();
for (const m of (read(logPath) ?? "").matchAll(/^running (\d+) tests? from (\S+)$/gm)) {
  const file = key(m[2] ?? "");
  registered.set(file, (registered.get(file) ?? 0) + Number(m[1]));
}

let passed = 0, failed = 0, skipped = 0;
const junit = read(junitPath);
if (junit === null) {
  problems.push(`no JUnit report at ${junitPath}: the runner died or was killed before its end`);
  failed++;
} else {
  // Test cases are grouped by the module that called Deno.test (which may be one a test file
  // imports), so executed and registered are compared in total, and per file only for "some".
  let executed = 0;
  const suites = junit.matchAll(/<testsuite name="([^"]*)"[^>]*>([\s\S]*?)<\/testsuite>/g);
  for (const [, suiteName = "", suiteBody = ""] of suites) {
    const file = key(unescape(suiteName));
    const cases = suiteBody.matchAll(/<testcase name="([^"]*)"[^>]*>([\s\S]*?)<\/testcase>/g);
    const seen = new Set<string>();
    for (const [, rawName = "", body = ""] of cases) {
      const name = unescape(rawName);
      // Steps (t.step) are reported as "parent > step" after their parent, which counts for them.
      const parent = name.lastIndexOf(" > ");
      seen.add(name);
      if (parent > 0 && seen.has(name.slice(0, parent))) continue;
      executed++;
      if (/<failure/.test(body) || /<error/.test(body)) {
        failed++;
      } else if (/<skipped/.test(body)) {
        skipped++;
        if (!/\[skipped: .+\]$/.test(name)) {
          problems.push(`${file}: "${name}" is ignored without saying why ([skipped: reason])`);
          failed++;
        }
      } else {
        passed++;
      }
    }
  }
  for (const file of files.map(key)) {
    if ((registered.get(file) ?? 0) === 0) {
      problems.push(`${file}: registered no tests (or never started)`);
      failed++;
    }
  }
  const want = [...registered.values()].reduce((a, b) => a + b, 0);
  if (executed < want) {
    problems.push(`${want} tests registered, only ${executed} reported`);
    failed += want - executed;
  }
}

const status = Number(exitStatus);
if (status !== 0 && failed === 0) {
  problems.push(`deno test exited with status ${status} but no test failed`);
  failed = 1;
}
if (status === 0 && failed > 0) problems.push(`deno test exited 0 with ${failed} failures`);

for (const p of problems) console.error(`summary: ${p}`);
const summaryFile = Deno.env.get("SUMMARY_FILE");
if (summaryFile) Deno.writeTextFileSync(summaryFile, `${passed} ${failed} ${skipped}\n`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
Deno.exit(failed === 0 ? 0 : 1);
