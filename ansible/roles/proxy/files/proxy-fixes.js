// Installed by the Ansible proxy role (canonical copy:
// etc/configurable-http-proxy/ in the repo) and preloaded into
// configurable-http-proxy with NODE_OPTIONS=--require=<this file> (the proxy is
// an ES module; node >= 22.12 requires it here and imports the same instance).
// tests/integration/test_malformed_paths.py and test_account_abuse.py (the
// delayed logins' 429) fail without them.
//
// 1. configurable-http-proxy (5.3.0 as 4.6.3) finds a route with
// decodeURIComponent(pathname), which throws URIError on a path whose percent
// escapes are not UTF-8 ("/%ff"); the proxy answers that with a 500 for every
// path, the hub's and every lab's. Such a path is the client's error: answer
// 400 (through the same error target, the hub's error page) before routing;
// a websocket upgrade gets a bare 400.
"use strict";

const proxyModule = require.resolve("configurable-http-proxy/lib/configproxy.js", {
  paths: ["/opt/configurable-http-proxy/lib/node_modules"],
});
const { ConfigurableProxy } = require(proxyModule);

function decodablePath(requestUrl) {
  try {
    // the very expression targetForReq evaluates
    decodeURIComponent(new URL(requestUrl, "http://example.com").pathname);
    return true;
  } catch (e) {
    if (e instanceof URIError) return false;
    throw e;
  }
}

const handleProxy = ConfigurableProxy.prototype.handleProxy;
ConfigurableProxy.prototype.handleProxy = function (kind, req, res, ...rest) {
  if (decodablePath(req.url)) {
    return handleProxy.call(this, kind, req, res, ...rest);
  }
  if (kind === "ws") {
    // a websocket upgrade hands over the bare socket: handleProxyError would
    // write its error page there without a status line (nginx: "upstream sent
    // no valid HTTP/1.0 header"), so answer with a plain HTTP response
    res.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  } else {
    this.handleProxyError(400, kind, req, res);
  }
  return Promise.resolve();
};

// 2. configurable-http-proxy 5.3 reaches a unix-socket target (the hub's
// /run/jupyterhub/hub.sock) without an agent: one connection per request,
// closed by the hub after its answer. A fast answer to a POST (a 429 for a
// delayed login, a 405) then races the proxy's last write on that socket,
// which fails with EPIPE on a unix socket (TCP would swallow it), and the
// client gets the proxy's 503 instead of the hub's answer. The keep-alive
// agent it already uses for TCP targets keeps the connection open.
const proxyOptsForTarget = ConfigurableProxy.prototype.proxyOptsForTarget;
ConfigurableProxy.prototype.proxyOptsForTarget = function (target) {
  const options = proxyOptsForTarget.call(this, target);
  if (options.target.socketPath) {
    options.agent = this.httpAgent;
  }
  return options;
};
