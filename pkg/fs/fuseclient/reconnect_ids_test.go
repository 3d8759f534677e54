package fuseclient

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestIDFieldsCoverEveryRequest holds idFields to the service descriptor:
// every request of the FileSystem service that names a mount or handles
// (a uint64 field named mount, handle or handle_*) has them translated
// after a reconnect, and nothing else is. A request the table forgets
// would carry the session's own ids to the server.
func TestIDFieldsCoverEveryRequest(t *testing.T) {
	sd := qtfsv1.File_qtfs_v1_qtfs_proto.Services().ByName("FileSystem")
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		md := ms.Get(i)
		if md.IsStreamingClient() || md.IsStreamingServer() {
			continue
		}
		t.Run(string(md.Name()), func(t *testing.T) {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			msg := mt.New()
			want := map[uint64]string{}
			fields := msg.Descriptor().Fields()
			for j := 0; j < fields.Len(); j++ {
				f := fields.Get(j)
				name := string(f.Name())
				if f.Kind() != protoreflect.Uint64Kind || f.IsList() ||
					name != "mount" && name != "handle" && !strings.HasPrefix(name, "handle_") {
					continue
				}
				v := uint64(100 + j)
				msg.Set(f, protoreflect.ValueOfUint64(v))
				want[v] = name
			}
			mount, handles := idFields(msg.Interface())
			got := map[uint64]string{}
			if mount != nil {
				got[*mount] = "mount"
			}
			for _, h := range handles {
				got[*h] = "handle"
			}
			if len(got) != len(want) {
				t.Fatalf("idFields names %d ids, the request has %d (%v)", len(got), len(want), want)
			}
			for v, name := range want {
				if _, ok := got[v]; !ok {
					t.Errorf("idFields misses field %s", name)
				}
			}
		})
	}
}
