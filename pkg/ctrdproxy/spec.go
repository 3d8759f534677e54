package ctrdproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// specEdit is what rewriteSpec changed, for the log.
type specEdit struct {
	droppedHooks []string // "prestart: /proc/714/exe libnetwork-setkey"
	hostNetwork  string   // the DPU namespace path that now means the host's
	bridgeNet    bool     // the container expected dockerd's bridge network
	bindSources  []string // the sources of its bind mounts, as the spec names them
}

func (e specEdit) changed() bool { return len(e.droppedHooks) > 0 || e.hostNetwork != "" }

// rewriteSpec carries an OCI runtime spec (JSON) from the DPU to the
// host: hooks that name the DPU caller's own binary by its DPU pid are
// dropped, and a network namespace path that names the DPU's own network
// namespace (isDPUNetns) is removed with its entry, so the container
// shares the host runtime's network. It returns spec unchanged when there
// is nothing to change.
func rewriteSpec(spec []byte, isDPUNetns func(string) bool) ([]byte, specEdit, error) {
	var edit specEdit
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var s map[string]any
	if err := dec.Decode(&s); err != nil {
		return nil, edit, fmt.Errorf("the OCI spec: %w", err)
	}
	if hooks, ok := s["hooks"].(map[string]any); ok {
		for kind, v := range hooks {
			list, ok := v.([]any)
			if !ok {
				continue
			}
			kept := list[:0:0]
			for _, h := range list {
				if isSetkeyHook(h) {
					m := h.(map[string]any)
					edit.droppedHooks = append(edit.droppedHooks, fmt.Sprintf("%s: %v %v", kind, m["path"], m["args"]))
					continue
				}
				kept = append(kept, h)
			}
			if len(kept) != len(list) {
				if len(kept) == 0 {
					delete(hooks, kind)
				} else {
					hooks[kind] = kept
				}
			}
		}
		if len(hooks) == 0 {
			delete(s, "hooks")
		}
	}
	if linux, ok := s["linux"].(map[string]any); ok {
		if nss, ok := linux["namespaces"].([]any); ok {
			kept := nss[:0:0]
			for _, n := range nss {
				m, _ := n.(map[string]any)
				if t, _ := m["type"].(string); t == "network" {
					p, _ := m["path"].(string)
					if p != "" && isDPUNetns(p) {
						edit.hostNetwork = p
						continue
					}
					if p == "" && len(edit.droppedHooks) > 0 {
						edit.bridgeNet = true
					}
				}
				kept = append(kept, n)
			}
			linux["namespaces"] = kept
		}
	}
	if mounts, ok := s["mounts"].([]any); ok {
		for _, m := range mounts {
			mm, _ := m.(map[string]any)
			if src, _ := mm["source"].(string); path.IsAbs(src) && isBind(mm) {
				edit.bindSources = append(edit.bindSources, src)
			}
		}
	}
	if !edit.changed() {
		return spec, edit, nil
	}
	out, err := json.Marshal(s)
	if err != nil {
		return nil, edit, fmt.Errorf("the OCI spec: %w", err)
	}
	return out, edit, nil
}

// isSetkeyHook reports whether h is dockerd's libnetwork-setkey hook:
// its own binary by pid (/proc/<pid>/exe), run with libnetwork-setkey.
func isSetkeyHook(h any) bool {
	m, ok := h.(map[string]any)
	if !ok {
		return false
	}
	args, _ := m["args"].([]any)
	if len(args) == 0 {
		return false
	}
	a0, _ := args[0].(string)
	p, _ := m["path"].(string)
	return a0 == "libnetwork-setkey" && strings.HasPrefix(p, "/proc/") && path.Base(p) == "exe"
}

// isBind reports whether an OCI mount is a bind mount.
func isBind(m map[string]any) bool {
	if t, _ := m["type"].(string); t == "bind" {
		return true
	}
	opts, _ := m["options"].([]any)
	for _, o := range opts {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
