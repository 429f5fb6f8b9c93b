/**
 * Text from callers (job ids, owners, paths, commands) as a JSON string literal that carries no
 * control character raw: JSON.stringify escapes the C0 controls but leaves DEL and the C1 controls
 * (U+0080-U+009F, CSI among them) as they are, and an ESC or CSI sequence written raw acts on the
 * terminal of whoever reads the log or the error message.
 *
 * @module
 */

/**
 * C0 and C1 controls and DEL: written raw, an ESC or CSI sequence acts on the terminal of whoever
 * reads the text, and a NUL makes a log "binary". Shared by the logger and the client's output
 * (cli/format.ts). Not global: `.test` keeps no state.
 */
// deno-lint-ignore no-control-regex
export const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** JSON text with DEL and the C1 controls as \u escapes (they can occur only inside strings). */
export function escapedControls(json: string): string {
  return json.replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** `text` quoted and escaped as JSON, DEL and the C1 controls as \u escapes too. */
export function quoted(text: string): string {
  return escapedControls(JSON.stringify(text));
}

/** Most characters of a client's value quoted back in an error message. */
const QUOTE_CHARS = 64;

/**
 * A client's value as it may appear in an error message: at most a short prefix, quoted and
 * escaped (control characters and quotes cannot forge the message), with the length of the rest.
 */
export function quote(value: string): string {
  const chars = Array.from(value);
  if (chars.length <= QUOTE_CHARS) return quoted(value);
  return `${quoted(chars.slice(0, QUOTE_CHARS).join(""))}... (${chars.length} characters)`;
}
