/** The worker's version, as GetServerInfo reports it. */
export const VERSION = "0.6.0";
