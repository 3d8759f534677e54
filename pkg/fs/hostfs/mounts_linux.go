package hostfs

import (
	"context"
	"syscall"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Mounts lists the host's mounts at and beneath a mount's root.
func (s *Server) Mounts(ctx context.Context, req *qtfsv1.MountsRequest) (*qtfsv1.MountsResponse, error) {
	return &qtfsv1.MountsResponse{Errno: int32(syscall.EOPNOTSUPP)}, nil
}
