// Package sessiontest serves the tests of package session and of its
// users: a hostfs server behind a fault proxy (Server), which cuts or
// stalls the connection and is killed and started again on the same
// port, and which stalls or slows the calls of a method on request.
package sessiontest
