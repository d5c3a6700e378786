// Package floodbench measures what connections that never sign in do to the
// CoAP gateway (`ocfcloud bench coap-flood`, issue 11): a real gateway in a
// child process, a few signed-in devices working through it, then thousands
// of connections that never sign in, some sending garbage. It reports the
// gateway's memory per such connection, whether and how fast the signed-in
// devices were still served during the flood compared with before, and what
// the gateway did with the flood connections.
//
// It owns only the load and the report: the gateway and its stand-in
// backend (NATS, token endpoint) come from internal/gatewaybench, so the
// numbers are those of the production code.
package floodbench
