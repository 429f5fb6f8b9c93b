/**
 * Reads the worker's log lines in any LOG_FORMAT (logfmt by default, json, text) for tests that
 * look for a message or a field, so they do not depend on one format's spelling.
 */

export interface LogLine {
  time: string;
  level: string;
  msg: string;
  /** The other fields as written: strings in logfmt and text, JSON values in json. */
  fields: Record<string, unknown>;
}

// key=value pairs where a value is bare or a JSON-quoted string (how worker/log/logger.ts quotes).
const PAIR = /\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)/y;

function logfmtPairs(text: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  PAIR.lastIndex = 0;
  while (PAIR.lastIndex < text.length) {
    const m = PAIR.exec(text);
    if (!m) return /^\s*$/.test(text.slice(PAIR.lastIndex)) ? out : undefined;
    out[m[1]!] = m[2]!.startsWith('"') ? JSON.parse(m[2]!) as string : m[2]!;
  }
  return out;
}

/** The line parsed, or undefined when it is not a log line of the worker. */
export function parseLogLine(line: string): LogLine | undefined {
  if (line.startsWith("{")) {
    try {
      const { time, level, msg, ...fields } = JSON.parse(line) as Record<string, unknown>;
      if (typeof msg !== "string") return undefined;
      return { time: String(time), level: String(level), msg, fields };
    } catch {
      return undefined;
    }
  }
  if (line.startsWith("time=")) {
    const pairs = logfmtPairs(line);
    if (!pairs || pairs.msg === undefined) return undefined;
    const { time, level, msg, ...fields } = pairs;
    return { time: time ?? "", level: level ?? "", msg, fields };
  }
  // text: `time LEVEL message key=value...` (the message has no '=' of its own).
  const text = /^(\S+) ([A-Z]+) +(.*?)((?:\s+[^\s=]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*))*)$/.exec(line);
  if (!text) return undefined;
  const fields = logfmtPairs(text[4]!);
  if (!fields) return undefined;
  return { time: text[1]!, level: text[2]!.toLowerCase(), msg: text[3]!, fields };
}

/** The lines among `logs` whose message is `msg`. */
export function linesWithMessage(logs: readonly string[], msg: string): LogLine[] {
  return logs.map(parseLogLine).filter((l): l is LogLine => l?.msg === msg);
}
