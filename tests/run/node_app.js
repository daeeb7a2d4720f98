// An HTTP server for tests/run.rs in Node, under `baton run --ready=delay:…`: it takes its
// listener as fd 3 (systemd's socket activation, as `baton run` passes it) and never speaks
// sd_notify. It reads $APP_CONF (JSON: {"body", "mode": "ok" | "fail" | "hang"}) at start.
// SIGTERM: answer every later request with `Connection: close`; one second later (every busy
// keep-alive client has sent one more request and been told) stop accepting, close what is idle
// and exit once the connections are done. Connections still queued stay in the shared socket's
// backlog for the new generation.
"use strict";
const http = require("http");
const fs = require("fs");

if (process.env.LISTEN_PID !== String(process.pid) || process.env.LISTEN_FDS !== "1") {
  console.error(`node_app: no socket for me (LISTEN_PID=${process.env.LISTEN_PID}, pid ${process.pid})`);
  process.exit(2);
}
const conf = JSON.parse(fs.readFileSync(process.env.APP_CONF, "utf8"));
if (conf.mode === "fail") {
  console.error("node_app: this version is broken");
  process.exit(3);
}
let draining = false;
const server = http.createServer((req, res) => {
  const answer = () => {
    if (draining) res.setHeader("Connection", "close");
    res.setHeader("Content-Type", "text/plain");
    res.end(conf.body);
  };
  if (req.url === "/slow") setTimeout(answer, 1200);
  else answer();
});
server.keepAliveTimeout = 30000;
if (conf.mode !== "hang") {
  server.listen({ fd: 3 });
}
process.on("SIGTERM", () => {
  draining = true;
  setTimeout(() => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  }, 1000);
});
