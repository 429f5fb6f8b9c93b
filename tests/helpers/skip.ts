/**
 * Skips that say why. A test that cannot run here is registered with `ignore` and a name ending in
 * `[skipped: <reason>]`, so the summary counts it and the log tells why (tests/summarize.ts fails
 * any ignored test without a reason). On CI (`CI=true`) a skip that CI should never need (a missing
 * program `make test-tools` installs, not being root, the v2 IO test's disk) is registered as a
 * failing test instead: green on CI means the test ran.
 */

export interface Skip {
  reason: string;
  /** True only where CI itself cannot provide the condition (e.g. denort cannot be downloaded). */
  allowedOnCI: boolean;
}

/** True when running under CI (`CI=true`, as `.ci/run` and most CI services set it). */
export function onCI(): boolean {
  return (Deno.env.get("CI") ?? "").toLowerCase() === "true";
}

/** A skip with `reason` when `condition` is false; undefined (run the test) when it holds. */
export function unless(
  condition: boolean,
  reason: string,
  options: { allowedOnCI?: boolean } = {},
): Skip | undefined {
  return condition ? undefined : { reason, allowedOnCI: options.allowedOnCI ?? false };
}

/** The test definition to register: `def` itself, visibly skipped, or failing on CI. */
export function withSkip(def: Deno.TestDefinition, skip: Skip | undefined): Deno.TestDefinition {
  if (skip === undefined) return def;
  if (onCI() && !skip.allowedOnCI) {
    return {
      ...def,
      ignore: false,
      fn: () => {
        throw new Error(`CI must run this test, but here: ${skip.reason}`);
      },
    };
  }
  return { ...def, name: `${def.name} [skipped: ${skip.reason}]`, ignore: true };
}

/** True when `name` is a program on PATH. */
export function hasProgram(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** A test of a shared live worker (no sanitizers: the worker outlives each test), maybe skipped. */
export const loadTest = (name: string, fn: () => Promise<void>, skip?: Skip) =>
  Deno.test(withSkip({ name, sanitizeOps: false, sanitizeResources: false, fn }, skip));
