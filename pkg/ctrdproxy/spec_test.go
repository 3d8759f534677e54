package ctrdproxy

import (
	"bytes"
	"testing"
)

func TestRewriteSpec(t *testing.T) {
	never := func(string) bool { return false }
	for _, tc := range []struct {
		name, in        string
		changed, bridge bool
		want            string
	}{
		{"nothing to change is kept byte for byte", `{"ociVersion":"1.0.2", "process":{"args":["sh"]}}`, false, false, `{"ociVersion":"1.0.2", "process":{"args":["sh"]}}`},
		{"setkey dropped, bridge network", `{"hooks":{"prestart":[{"path":"/proc/9/exe","args":["libnetwork-setkey","x"]}]},"linux":{"namespaces":[{"type":"network"}]}}`,
			true, true, `{"linux":{"namespaces":[{"type":"network"}]}}`},
		{"a hook of another binary stays", `{"hooks":{"prestart":[{"path":"/usr/bin/nvidia-hook","args":["libnetwork-setkey"]}]}}`, false, false,
			`{"hooks":{"prestart":[{"path":"/usr/bin/nvidia-hook","args":["libnetwork-setkey"]}]}}`},
		{"large numbers survive", `{"hooks":{"prestart":[{"path":"/proc/9/exe","args":["libnetwork-setkey"]}]},"linux":{"resources":{"memory":{"limit":9223372036854771712}}}}`,
			true, false, `{"linux":{"resources":{"memory":{"limit":9223372036854771712}}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, edit, err := rewriteSpec([]byte(tc.in), never)
			if err != nil {
				t.Fatal(err)
			}
			if edit.changed() != tc.changed || edit.bridgeNet != tc.bridge {
				t.Errorf("changed %v bridge %v, want %v %v", edit.changed(), edit.bridgeNet, tc.changed, tc.bridge)
			}
			if !bytes.Equal(out, []byte(tc.want)) {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
	if _, _, err := rewriteSpec([]byte("{"), never); err == nil {
		t.Error("a broken spec parsed")
	}
}

func TestSetBytes(t *testing.T) {
	msg := append(append(str(1, "a"), str(2, "b")...), str(1, "c")...)
	out, err := setBytes(msg, 1, []byte("z"))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(str(1, "z"), str(2, "b")...); !bytes.Equal(out, want) {
		t.Fatalf("%x, want %x", out, want)
	}
	if getString(msg, 1) != "c" {
		t.Fatal("the last value of a repeated singular field counts")
	}
	if _, err := setBytes([]byte{0xff}, 1, nil); err == nil {
		t.Fatal("a malformed message was accepted")
	}
}
