// Package transportmetrics is the Prometheus side of package transport:
// Handshakes counts the server's connection handshakes in
// qtfs_transport_handshakes_total{transport,result}. It lives apart so
// that clients linking transport (rexec, exec'd for every runc call) do
// not link Prometheus; it does not import transport, whose tests use it.
package transportmetrics
