// Package version holds the qtfs version, set at link time with
// -ldflags "-X github.com/qtfs/qtfs/pkg/version.Version=v1.2.3".
package version

// Version is the release of this build; "dev" for untagged builds.
var Version = "dev"

// ProtocolVersion is the wire protocol version this build speaks.
const ProtocolVersion = 1
