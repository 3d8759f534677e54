// Package config gives every qtfs command one way to take its settings:
// a YAML file, QTFS_* environment variables and command-line flags that
// all name the same settings, with flags winning over the environment and
// the environment over the file.
//
// A command declares its flags on a flag.FlagSet whose values point into
// a settings struct with yaml tags; Load fills that struct from the file,
// then the environment, then the arguments. The YAML key of a flag is its
// name with "-" replaced by "_", and its environment variable is QTFS_
// followed by the key in upper case (--tls-cert, tls_cert, QTFS_TLS_CERT).
// A repeatable flag (StringList) given by a higher source replaces what a
// lower source gave instead of adding to it.
//
// Unknown YAML keys are errors that name the file, the line and the key,
// so a typo never silently falls back to a default.
package config
