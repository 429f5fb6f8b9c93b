/**
 * Text from callers (job ids, owners, paths, commands) as a JSON string literal that carries no
 * control character raw: JSON.stringify escapes the C0 controls but leaves DEL and the C1 controls
 * (U+0080-U+009F, CSI among them) as they are, and an ESC or CSI sequence written raw acts on the
 * terminal of whoever reads the log or the error message.
 *
 * @module
 */

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
