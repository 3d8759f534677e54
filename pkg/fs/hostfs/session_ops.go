package hostfs

import (
	"context"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/version"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Handshake opens (or resets) the session of the calling connection.
func (s *Server) Handshake(ctx context.Context, req *qtfsv1.HandshakeRequest) (*qtfsv1.HandshakeResponse, error) {
	cs := connFrom(ctx)
	if cs == nil {
		return nil, status.Error(codes.FailedPrecondition,
			"hostfs: connection not bound to a session: the grpc.Server needs hostfs ServerOptions")
	}
	if req.GetProtocolVersion() == 0 {
		return nil, status.Error(codes.InvalidArgument, "hostfs: handshake: protocol_version 0 is not a version")
	}
	client := req.GetClient()
	if len(client) > 256 {
		client = client[:256]
	}
	s.mu.RLock()
	closed := s.closed
	exports := make([]*qtfsv1.ExportInfo, 0, len(s.exports))
	for _, ex := range s.exports {
		exports = append(exports, &qtfsv1.ExportInfo{Path: []byte(ex.path), ReadOnly: ex.readOnly, FsKind: ex.kind})
	}
	s.mu.RUnlock()
	if closed {
		return nil, status.Error(codes.FailedPrecondition, "hostfs: server closed")
	}
	sess := s.newSession(client)
	cs.mu.Lock()
	if cs.ended {
		cs.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "hostfs: connection ended")
	}
	old := cs.sess
	if old == nil && !s.admitSession() {
		cs.mu.Unlock()
		s.met.refusal("max_sessions")
		s.limitLog.log(s.log, "max_sessions", zap.String("peer", cs.peer), zap.String("client", client),
			zap.Int("max", s.limits.MaxSessions))
		return nil, status.Errorf(codes.ResourceExhausted, "hostfs: too many sessions (the server allows %d): ENFILE", s.limits.MaxSessions)
	}
	cs.sess = sess
	cs.mu.Unlock()
	if old != nil {
		old.release()
		s.log.Info("session reset by a new handshake", zap.Uint64("old_session", old.id))
	}
	v := req.GetProtocolVersion()
	if v > version.ProtocolVersion {
		v = version.ProtocolVersion
	}
	s.log.Info("session opened", zap.Uint64("session", sess.id), zap.String("peer", cs.peer),
		zap.String("client", client), zap.Uint32("protocol_version", v))
	resp := &qtfsv1.HandshakeResponse{
		ProtocolVersion: v,
		Server:          s.name,
		Features: []qtfsv1.Feature{
			qtfsv1.Feature_FEATURE_OPEN_READ_INLINE,
			qtfsv1.Feature_FEATURE_READDIR_PLUS,
			qtfsv1.Feature_FEATURE_LOCKS,
			qtfsv1.Feature_FEATURE_CALL_STREAM,
		},
		Exports:         exports,
		MaxMessageBytes: uint32(s.maxData),
	}
	if s.callChannels {
		if t := s.channelToken(ctx, cs); t != nil {
			resp.Features = append(resp.Features, qtfsv1.Feature_FEATURE_CALL_CHANNEL)
			resp.CallChannelToken = t
		}
	}
	return resp, nil
}
