package hostfs

import (
	"context"
	"crypto/rand"
	"net"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/transport"
)

// maxChannelsPerConn bounds the call channels bound to one connection at
// once: a client keeps up to 4 (one per call it makes at once), and the
// rest cover channels it closed that the server has not yet seen end.
const maxChannelsPerConn = 8

// channelToken returns the call channel token of cs, made at its first
// handshake, and records the principal channels must match. ctx is the
// Handshake call's.
func (s *Server) channelToken(ctx context.Context, cs *connState) []byte {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil // an in-process connection: no channels
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch {
	case cs.ended:
		return nil
	case cs.token != "":
		return []byte(cs.token)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	cs.token, cs.principal = string(b), transport.PeerPrincipal(p.AuthInfo)
	s.tokenMu.Lock()
	s.tokens[cs.token] = cs
	s.tokenMu.Unlock()
	return b
}

// ServeChannel serves a call channel (see transport.SplitChannels): it is
// bound to the connection whose token it presents when its peer is the
// same principal, and then runs that connection's session's calls until
// either ends. It closes conn before it returns.
func (s *Server) ServeChannel(conn net.Conn, info credentials.AuthInfo) {
	who := transport.PeerPrincipal(info)
	err := s.calls.ServeChannel(conn, func(token []byte) (context.Context, func(), error) {
		return s.bindChannel(conn, info, who, token)
	})
	if err != nil {
		s.log.Debug("call channel ended", zap.String("peer", who), zap.Error(err))
	}
}

func (s *Server) bindChannel(conn net.Conn, info credentials.AuthInfo, who string, token []byte) (context.Context, func(), error) {
	s.tokenMu.Lock()
	cs := s.tokens[string(token)]
	s.tokenMu.Unlock()
	refuse := func(reason, msg string) (context.Context, func(), error) {
		s.met.refusal(reason)
		s.limitLog.log(s.log, reason, zap.String("peer", who), zap.String("why", msg))
		return nil, nil, status.Error(codes.PermissionDenied, msg)
	}
	if cs == nil {
		return refuse("channel_token", "no connection has this call channel token (it ended, or the server restarted)")
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch {
	case cs.ended:
		return refuse("channel_token", "the connection of this call channel token ended")
	case cs.principal != who:
		return refuse("channel_peer", "the call channel's peer is not the one of the connection its token belongs to")
	case len(cs.channels) >= maxChannelsPerConn:
		s.met.refusal("max_channels")
		return nil, nil, status.Errorf(codes.ResourceExhausted, "hostfs: the connection has %d call channels already", len(cs.channels))
	}
	cs.channels[conn] = struct{}{}
	ctx := withConn(peer.NewContext(context.Background(), &peer.Peer{Addr: conn.RemoteAddr(), LocalAddr: conn.LocalAddr(), AuthInfo: info}), cs)
	done := func() {
		cs.mu.Lock()
		delete(cs.channels, conn)
		cs.mu.Unlock()
	}
	return ctx, done, nil
}

// endChannels forgets cs's token and closes its channels; cs.mu is held.
func (s *Server) endChannels(cs *connState) {
	if cs.token != "" {
		s.tokenMu.Lock()
		delete(s.tokens, cs.token)
		s.tokenMu.Unlock()
	}
	for c := range cs.channels {
		c.Close()
	}
}
