/**
 * Stop signals parked for a reload's exec (jwshim.c: jw_park_stops): a SIGTERM that arrives while
 * parked does not reach Deno, stays pending on the thread that execs, and is still pending (and
 * blocked) in the program that thread execs; unparked instead, it reaches Deno's listener.
 * Each case runs in a child Deno process, since it signals itself.
 *
 * Run: `deno test -A tests/stop_parking_test.ts` (needs `make shim`).
 *
 * @module
 */
import assert from "node:assert/strict";

const FFI = new URL("../init/shim/ffi.ts", import.meta.url).href;
const SHIM = new URL("../build/libjwshim.so", import.meta.url).pathname;
const SIGTERM_BIT = 1n << 14n;

/** Runs `body` in a child with `shim` (parked) and `heard` (the listener's calls) in scope. */
async function child(body: string): Promise<string> {
  const script = `
    import { Shim } from "${FFI}";
    const shim = new Shim("${SHIM}");
    let heard = 0;
    Deno.addSignalListener("SIGTERM", () => heard++);
    shim.parkStops();
    Deno.kill(Deno.pid, "SIGTERM");
    await new Promise((r) => setTimeout(r, 200));
    const mask = (name) => BigInt("0x" + new RegExp(name + ":\\\\s*(\\\\w+)")
      .exec(Deno.readTextFileSync("/proc/thread-self/status"))[1]);
    ${body}
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, `child failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

function field(text: string, name: string): bigint {
  const m = new RegExp(`${name}:\\s*(\\w+)`).exec(text);
  assert.ok(m, `${name} in ${text}`);
  return BigInt(`0x${m[1]}`);
}

Deno.test("parked: a SIGTERM waits, pending on this thread; unparked, Deno hears it", async () => {
  const out = await child(`
    console.log("heard while parked", heard);
    console.log("SigPnd:", mask("SigPnd").toString(16));
    console.log("unparked", shim.unparkStops());
    await new Promise((r) => setTimeout(r, 200));
    console.log("heard after", heard);
  `);
  assert.match(out, /heard while parked 0/);
  assert.ok((field(out, "SigPnd") & SIGTERM_BIT) !== 0n, "pending on the thread that parked");
  assert.match(out, /unparked 15/);
  assert.match(out, /heard after 1/);
});

Deno.test("parked: a SIGTERM crosses execve, blocked and pending", async () => {
  const out = await child(`
    const libc = Deno.dlopen("libc.so.6", {
      execv: { parameters: ["buffer", "buffer"], result: "i32" },
    });
    const c = (s) => new TextEncoder().encode(s + "\\0");
    const args = ["/bin/grep", "-E", "^(SigPnd|ShdPnd|SigBlk)", "/proc/self/status"].map(c);
    const argv = new BigUint64Array(args.length + 1);
    args.forEach((a, i) => argv[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a))));
    libc.symbols.execv(args[0], new Uint8Array(argv.buffer));
    console.log("execv failed");
  `);
  assert.ok((field(out, "SigBlk") & SIGTERM_BIT) !== 0n, `blocked after the exec: ${out}`);
  const pending = field(out, "SigPnd") | field(out, "ShdPnd");
  assert.ok((pending & SIGTERM_BIT) !== 0n, `pending after the exec: ${out}`);
});
