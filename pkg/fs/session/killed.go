package session

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// sigkillBit is SIGKILL in the signal masks of /proc/<pid>/status.
const sigkillBit = 1 << (9 - 1)

// killedCall is an RPC made for a caller (CallOptions.For), which the
// watchdog cancels once the caller's request was interrupted and the
// caller is being killed (nobody waits for the answer any more; the server
// stops the operation).
type killedCall struct {
	caller Caller
	start  time.Time
	cancel context.CancelFunc

	mu     sync.Mutex
	killed bool
}

func (k *killedCall) wasKilled() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}

// callers tracks the RPCs made for callers.
type callers struct {
	mu    sync.Mutex
	calls map[*killedCall]struct{}
}

func (c *callers) add(k *killedCall) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[*killedCall]struct{}{}
	}
	c.calls[k] = struct{}{}
	c.mu.Unlock()
}

func (c *callers) remove(k *killedCall) {
	c.mu.Lock()
	delete(c.calls, k)
	c.mu.Unlock()
}

// reap cancels the calls older than after whose caller's request was
// interrupted and whose caller has a SIGKILL pending (the kernel turns
// every fatal signal into one).
func (c *callers) reap(procDir string, after time.Duration, log *zap.Logger) {
	now := time.Now()
	var interrupted []*killedCall
	c.mu.Lock()
	for k := range c.calls {
		if now.Sub(k.start) < after {
			continue
		}
		select {
		case <-k.caller.Interrupted:
			interrupted = append(interrupted, k)
		default:
		}
	}
	c.mu.Unlock()
	for _, k := range interrupted {
		if !dying(procDir, k.caller.Pid) {
			continue
		}
		k.mu.Lock()
		k.killed = true
		k.mu.Unlock()
		k.cancel()
		log.Info("qtfs call cancelled: its caller was killed", zap.Uint32("pid", k.caller.Pid),
			zap.Duration("after", now.Sub(k.start)))
	}
}

// dying reports whether thread pid has SIGKILL pending (for itself or
// its thread group), i.e. it is being killed.
func dying(procDir string, pid uint32) bool {
	if pid == 0 {
		return false
	}
	data, err := os.ReadFile(procDir + "/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		// Gone already: nobody waits.
		return os.IsNotExist(err)
	}
	return pendingKill(data)
}

// pendingKill parses a status file: SIGKILL in the SigPnd or ShdPnd mask,
// or a process that is a zombie already.
func pendingKill(status []byte) bool {
	if i := bytes.Index(status, []byte("\nState:")); i >= 0 {
		st := bytes.TrimLeft(status[i+len("\nState:"):], " \t")
		if len(st) > 0 && (st[0] == 'Z' || st[0] == 'X') {
			return true
		}
	}
	for _, key := range []string{"\nSigPnd:", "\nShdPnd:"} {
		i := bytes.Index(status, []byte(key))
		if i < 0 {
			continue
		}
		line := status[i+len(key):]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		mask, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 64)
		if err == nil && mask&sigkillBit != 0 {
			return true
		}
	}
	return false
}
