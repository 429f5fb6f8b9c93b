/** The client's version, as `jobworker version` prints it. */
export const CLIENT_VERSION = "0.7.0";
