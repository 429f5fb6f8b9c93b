/** The client's version: the program's one version (client and worker ship as one executable). */
export { VERSION as CLIENT_VERSION } from "../worker/version.ts";
