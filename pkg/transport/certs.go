package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Certificate lifetimes WritePKI and IssueCert use unless told otherwise.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 825 * 24 * time.Hour
	// clockSkew backdates NotBefore so peers whose clocks lag a little
	// (a DPU that just booted) accept a fresh certificate.
	clockSkew = time.Hour
)

// File names in a PKI directory.
const (
	CAFileName         = "ca.pem"
	CAKeyFileName      = "ca-key.pem"
	ServerCertFileName = "server.pem"
	ServerKeyFileName  = "server-key.pem"
	ClientCertFileName = "client.pem"
	ClientKeyFileName  = "client-key.pem"
)

// PKIOptions says what WritePKI creates.
type PKIOptions struct {
	// CAName is the CA's common name; default "qtfs CA".
	CAName string
	// ServerNames are the server certificate's names: IP literals become
	// IP SANs, the rest DNS SANs; the first is also its common name.
	// Default: localhost, 127.0.0.1, ::1.
	ServerNames []string
	// ClientNames are the common names of the client certificates. The
	// first one's files are client.pem and client-key.pem; every further
	// NAME gets client-NAME.pem and client-NAME-key.pem. Default: "qtfs-client".
	ClientNames []string
	// Validity is the lifetime of the server and client certificates;
	// default DefaultCertValidity.
	Validity time.Duration
	// Expired issues the server and client certificates already expired
	// (the CA stays valid), for tests.
	Expired bool
}

// PKIFiles are the paths WritePKI wrote.
type PKIFiles struct {
	Dir                   string
	CA, CAKey             string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// ServerSecurity is a Security for a server using these files.
func (p PKIFiles) ServerSecurity() Security {
	return Security{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CA}
}

// ClientSecurity is a Security for a client using the first client
// certificate.
func (p PKIFiles) ClientSecurity() Security {
	return Security{CertFile: p.ClientCert, KeyFile: p.ClientKey, CAFile: p.CA}
}

// WriteTestPKI creates, in dir, a new CA (ca.pem, ca-key.pem), a server
// certificate for serverNames (server.pem, server-key.pem) and client
// certificates for clientNames (client.pem, client-key.pem for the first),
// all ECDSA P-256. It is meant for first installs and tests; see WritePKI.
func WriteTestPKI(dir string, serverNames []string, clientNames []string) error {
	_, err := WritePKI(dir, PKIOptions{ServerNames: serverNames, ClientNames: clientNames})
	return err
}

// WritePKI creates a CA, a server certificate and client certificates in
// dir (made 0700 if missing) as o says. It never overwrites a file: a
// second CA for the same directory would silently orphan every certificate
// the first one signed. Keys are written 0600, certificates 0644. Another
// CA is another directory.
func WritePKI(dir string, o PKIOptions) (PKIFiles, error) {
	if o.CAName == "" {
		o.CAName = "qtfs CA"
	}
	if len(o.ServerNames) == 0 {
		o.ServerNames = []string{"localhost", "127.0.0.1", "::1"}
	}
	if len(o.ClientNames) == 0 {
		o.ClientNames = []string{"qtfs-client"}
	}
	for _, n := range o.ClientNames[1:] {
		if !safeFileName(n) {
			return PKIFiles{}, fmt.Errorf("transport: pki: client name %q cannot be part of a file name", n)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PKIFiles{}, fmt.Errorf("transport: pki: %w", err)
	}
	f := PKIFiles{
		Dir:        dir,
		CA:         filepath.Join(dir, CAFileName),
		CAKey:      filepath.Join(dir, CAKeyFileName),
		ServerCert: filepath.Join(dir, ServerCertFileName),
		ServerKey:  filepath.Join(dir, ServerKeyFileName),
		ClientCert: filepath.Join(dir, ClientCertFileName),
		ClientKey:  filepath.Join(dir, ClientKeyFileName),
	}
	ca, err := newCA(o.CAName)
	if err != nil {
		return PKIFiles{}, err
	}
	if err := writePair(f.CA, f.CAKey, ca.der, ca.key); err != nil {
		return PKIFiles{}, err
	}
	leaf := CertOptions{Validity: o.Validity, Expired: o.Expired}
	srv := leaf
	srv.CommonName, srv.Hosts, srv.Server = o.ServerNames[0], o.ServerNames, true
	if err := ca.issueTo(f.ServerCert, f.ServerKey, srv); err != nil {
		return PKIFiles{}, err
	}
	for i, n := range o.ClientNames {
		cli := leaf
		cli.CommonName, cli.Client = n, true
		cert, key := f.ClientCert, f.ClientKey
		if i > 0 {
			cert, key = filepath.Join(dir, "client-"+n+".pem"), filepath.Join(dir, "client-"+n+"-key.pem")
		}
		if err := ca.issueTo(cert, key, cli); err != nil {
			return PKIFiles{}, err
		}
	}
	return f, nil
}

// CertOptions describes one certificate IssueCert makes.
type CertOptions struct {
	CommonName string
	// Hosts become subject alternative names: IP literals as IP SANs,
	// the rest as DNS SANs.
	Hosts []string
	// Server and Client choose the extended key usages (server auth,
	// client auth); at least one must be set.
	Server, Client bool
	// Validity is the lifetime; default DefaultCertValidity.
	Validity time.Duration
	// Expired makes a certificate whose validity ended a day ago.
	Expired bool
}

// IssueCert signs a new certificate with the CA in dir (ca.pem,
// ca-key.pem) and writes it to dir/NAME.pem and dir/NAME-key.pem, which
// must not exist yet. It returns the two paths. Tests use it for an
// expired certificate from the right CA, or a second client identity.
func IssueCert(dir, name string, o CertOptions) (certFile, keyFile string, err error) {
	if !safeFileName(name) {
		return "", "", fmt.Errorf("transport: pki: name %q cannot be a file name", name)
	}
	ca, err := loadCAFiles(filepath.Join(dir, CAFileName), filepath.Join(dir, CAKeyFileName))
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := ca.issueTo(certFile, keyFile, o); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

type certAuthority struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func newCA(name string) (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: generate key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(DefaultCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: parse CA: %w", err)
	}
	return &certAuthority{cert: cert, der: der, key: key}, nil
}

func loadCAFiles(certFile, keyFile string) (*certAuthority, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: %w", err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: %w", err)
	}
	cblock, _ := pem.Decode(cb)
	if cblock == nil || cblock.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("transport: pki: %s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: %s: %w", certFile, err)
	}
	kblock, _ := pem.Decode(kb)
	if kblock == nil || kblock.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("transport: pki: %s holds no PEM private key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("transport: pki: %s: %w", keyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("transport: pki: %s: want an ECDSA key, got %T", keyFile, k)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("transport: pki: %s is not a CA certificate", certFile)
	}
	return &certAuthority{cert: cert, der: cblock.Bytes, key: key}, nil
}

func (ca *certAuthority) issueTo(certFile, keyFile string, o CertOptions) error {
	der, key, err := ca.issue(o)
	if err != nil {
		return err
	}
	return writePair(certFile, keyFile, der, key)
}

func (ca *certAuthority) issue(o CertOptions) ([]byte, *ecdsa.PrivateKey, error) {
	if !o.Server && !o.Client {
		return nil, nil, errors.New("transport: pki: a certificate needs Server or Client usage")
	}
	if o.CommonName == "" && len(o.Hosts) == 0 {
		return nil, nil, errors.New("transport: pki: a certificate needs a common name or hosts")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: pki: generate key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	now := time.Now()
	notBefore, notAfter := now.Add(-clockSkew), now.Add(validity)
	if o.Expired {
		notBefore, notAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if o.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range o.Hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: pki: sign %q: %w", o.CommonName, err)
	}
	return der, key, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("transport: pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// writePair writes a certificate (0644) and its key (0600), refusing to
// replace existing files.
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("transport: pki: marshal key: %w", err)
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("transport: pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("transport: pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("transport: pki: write %s: %w", path, err)
	}
	return nil
}

// safeFileName accepts names made of letters, digits, '.', '_' and '-',
// not starting with '.' or '-'.
func safeFileName(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
