/**
 * Validity periods of certificates.
 *
 * @module
 */

/** Milliseconds in a day. */
export const DAY_MS = 86_400_000;

/** How far before "now" a new certificate starts, to tolerate clocks that lag a little. */
export const BACKDATE_MS = 5 * 60_000;

/** The longest validity accepted, in days (100 years). */
export const MAX_VALID_DAYS = 36_500;

/** A validity period as the issuing functions accept it. */
export interface ValidityOptions {
  /** Start of validity; default now minus five minutes. */
  notBefore?: Date | undefined;
  /** End of validity; default `notBefore` plus `validDays`. Exclusive with `validDays`. */
  notAfter?: Date | undefined;
  /** Length of validity in whole days from now. Exclusive with `notAfter`. */
  validDays?: number | undefined;
}

/** A resolved validity period. */
export interface Validity {
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
  /** Whether `notAfter` was derived from a number of days (rather than given as a date). */
  derived: boolean;
}

/**
 * Resolves the validity period of a new certificate.
 *
 * @throws {TypeError} If both `notAfter` and `validDays` are given, or a date is invalid.
 * @throws {RangeError} If `validDays` is not a whole number of days in 1..36500, or the period
 * ends before it starts.
 */
export function resolveValidity(
  options: ValidityOptions,
  defaultDays: number,
  now: Date = new Date(),
): Validity {
  if (options.notAfter !== undefined && options.validDays !== undefined) {
    throw new TypeError("Give either notAfter or validDays, not both");
  }
  checkDays(options.validDays ?? defaultDays);
  const notBefore = options.notBefore ?? new Date(now.getTime() - BACKDATE_MS);
  const derived = options.notAfter === undefined;
  const notAfter = options.notAfter ??
    new Date(now.getTime() + (options.validDays ?? defaultDays) * DAY_MS);
  for (const [label, date] of [["notBefore", notBefore], ["notAfter", notAfter]] as const) {
    if (Number.isNaN(date.getTime())) {
      throw new TypeError(`The ${label} date is invalid`);
    }
  }
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new RangeError(
      `The validity ends (${notAfter.toISOString()}) before it starts (${notBefore.toISOString()})`,
    );
  }
  return { notBefore, notAfter, derived };
}

/**
 * Checks a number of days of validity.
 *
 * @throws {RangeError} If it is not a whole number in 1..36500.
 */
export function checkDays(days: number): void {
  if (!Number.isInteger(days) || days < 1 || days > MAX_VALID_DAYS) {
    throw new RangeError(
      `The validity in days must be a whole number from 1 to ${MAX_VALID_DAYS}, got ${days}`,
    );
  }
}
