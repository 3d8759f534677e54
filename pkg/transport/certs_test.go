package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verify(ca, leaf *x509.Certificate, usage x509.ExtKeyUsage, name string) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: name})
	return err
}

func TestWriteTestPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := WriteTestPKI(dir, []string{"host1", "192.0.2.10", "::1"}, []string{"dpu1", "dpu2"}); err != nil {
		t.Fatal(err)
	}
	files := map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600,
		"server.pem": 0o644, "server-key.pem": 0o600,
		"client.pem": 0o644, "client-key.pem": 0o600,
		"client-dpu2.pem": 0o644, "client-dpu2-key.pem": 0o600,
	}
	for name, mode := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA {
		t.Fatal("ca.pem is not a CA")
	}
	srv := readCert(t, filepath.Join(dir, "server.pem"))
	if srv.Subject.CommonName != "host1" {
		t.Errorf("server CN %q", srv.Subject.CommonName)
	}
	if len(srv.DNSNames) != 1 || srv.DNSNames[0] != "host1" {
		t.Errorf("server DNS SANs %v", srv.DNSNames)
	}
	if len(srv.IPAddresses) != 2 || !srv.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) || !srv.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("server IP SANs %v", srv.IPAddresses)
	}
	pub, ok := srv.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("server key is %T, want ECDSA P-256", srv.PublicKey)
	}
	for _, tc := range []struct {
		name  string
		file  string
		usage x509.ExtKeyUsage
		host  string
		cn    string
	}{
		{"server by name", "server.pem", x509.ExtKeyUsageServerAuth, "host1", "host1"},
		{"server by IP", "server.pem", x509.ExtKeyUsageServerAuth, "192.0.2.10", "host1"},
		{"first client", "client.pem", x509.ExtKeyUsageClientAuth, "", "dpu1"},
		{"second client", "client-dpu2.pem", x509.ExtKeyUsageClientAuth, "", "dpu2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := readCert(t, filepath.Join(dir, tc.file))
			if err := verify(ca, c, tc.usage, tc.host); err != nil {
				t.Fatal(err)
			}
			if c.Subject.CommonName != tc.cn {
				t.Fatalf("CN %q, want %q", c.Subject.CommonName, tc.cn)
			}
			if c.NotBefore.After(time.Now()) || c.NotAfter.Before(time.Now().Add(300*24*time.Hour)) {
				t.Fatalf("validity %v - %v", c.NotBefore, c.NotAfter)
			}
		})
	}
	// The client certificate is no server certificate.
	if err := verify(ca, readCert(t, filepath.Join(dir, "client.pem")), x509.ExtKeyUsageServerAuth, ""); err == nil {
		t.Error("client.pem verifies as a server certificate")
	}
	// Key pairs load as TLS certificates.
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
		t.Error(err)
	}
	// A second run must not replace the CA.
	err := WriteTestPKI(dir, nil, nil)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteTestPKI: %v, want an 'exists' error", err)
	}
	if again := readCert(t, filepath.Join(dir, "ca.pem")); !again.Equal(ca) {
		t.Fatal("ca.pem was replaced")
	}
}

func TestIssueCertAndOptions(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := WritePKI(dirA, PKIOptions{CAName: "CA A"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := WritePKI(dirB, PKIOptions{CAName: "CA B"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := WritePKI(t.TempDir(), PKIOptions{CAName: "CA C", Expired: true})
	if err != nil {
		t.Fatal(err)
	}
	caA, caB, caC := readCert(t, a.CA), readCert(t, b.CA), readCert(t, c.CA)
	if caA.Equal(caB) {
		t.Fatal("two PKIs share a CA")
	}

	expired, _, err := IssueCert(dirA, "old-client", CertOptions{CommonName: "old", Client: true, Expired: true})
	if err != nil {
		t.Fatal(err)
	}
	extra, extraKey, err := IssueCert(dirA, "srv2", CertOptions{Hosts: []string{"elsewhere.example"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(extra, extraKey); err != nil {
		t.Fatal(err)
	}

	var invalid x509.CertificateInvalidError
	tests := []struct {
		name  string
		ca    *x509.Certificate
		file  string
		usage x509.ExtKeyUsage
		host  string
		check func(error) bool
	}{
		{"default server names", caA, a.ServerCert, x509.ExtKeyUsageServerAuth, "localhost", func(e error) bool { return e == nil }},
		{"default server IP", caA, a.ServerCert, x509.ExtKeyUsageServerAuth, "::1", func(e error) bool { return e == nil }},
		{"other CA's client", caA, b.ClientCert, x509.ExtKeyUsageClientAuth, "", func(e error) bool { return errors.As(e, &x509.UnknownAuthorityError{}) }},
		{"expired option, client", caC, c.ClientCert, x509.ExtKeyUsageClientAuth, "", func(e error) bool { return errors.As(e, &invalid) && invalid.Reason == x509.Expired }},
		{"expired option, server", caC, c.ServerCert, x509.ExtKeyUsageServerAuth, "localhost", func(e error) bool { return errors.As(e, &invalid) && invalid.Reason == x509.Expired }},
		{"issued expired", caA, expired, x509.ExtKeyUsageClientAuth, "", func(e error) bool { return errors.As(e, &invalid) && invalid.Reason == x509.Expired }},
		{"issued server", caA, extra, x509.ExtKeyUsageServerAuth, "elsewhere.example", func(e error) bool { return e == nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.ca, readCert(t, tc.file), tc.usage, tc.host)
			if !tc.check(err) {
				t.Fatalf("verify: %v", err)
			}
		})
	}

	for _, bad := range []struct {
		name string
		dir  string
		file string
		o    CertOptions
		want string
	}{
		{"no usage", dirA, "x", CertOptions{CommonName: "x"}, "Server or Client"},
		{"no name", dirA, "x", CertOptions{Client: true}, "common name or hosts"},
		{"bad file name", dirA, "../x", CertOptions{CommonName: "x", Client: true}, "cannot be a file name"},
		{"exists", dirA, "old-client", CertOptions{CommonName: "x", Client: true}, "exists"},
		{"no CA", t.TempDir(), "x", CertOptions{CommonName: "x", Client: true}, "no such file"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, _, err := IssueCert(bad.dir, bad.file, bad.o)
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Fatalf("IssueCert: %v, want an error with %q", err, bad.want)
			}
		})
	}
}
