// Preloaded into configurable-http-proxy (`node --import` this file, then CHP's own command line):
// keep-alive connections to http+unix targets.
//
// CHP 5.3 gives http+unix targets no agent, so node-http-proxy opens a connection per request and
// sends "Connection: close". The server answers and closes at once; when it does so before node's
// final, empty write of the request, that write fails with EPIPE and the proxy answers 503 in place
// of the server's own answer. It happens to requests the server refuses fast (about 1 in 100 of
// the guard's 403s). With a keep-alive agent the server keeps the connection open.
//
// The bin imports the same module file, so the class patched here is the one it runs.
import http from "node:http";
import { realpathSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const bin = realpathSync(process.argv[1]);
const { ConfigurableProxy } = await import(pathToFileURL(resolve(dirname(bin), "../lib/configproxy.js")).href);

const unixAgent = new http.Agent({ keepAlive: true });
const proxyOptsForTarget = ConfigurableProxy.prototype.proxyOptsForTarget;
ConfigurableProxy.prototype.proxyOptsForTarget = function (target) {
  const options = proxyOptsForTarget.call(this, target);
  if (options.target.socketPath) {
    options.agent = unixAgent;
  }
  return options;
};
