package web

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// Names of the files kept in KEEL_HOME.
const (
	SettingsName = "web.json"
	TokenName    = "web.token"
)

// DefaultListen is where `keel web` listens unless told otherwise, the
// port pm2 web uses.
const DefaultListen = "127.0.0.1:9615"

// Settings is the listener's setting, kept in KEEL_HOME across daemon
// restarts and resurrect.
type Settings struct {
	On     bool   `json:"on"`
	Listen string `json:"listen"`
}

// LoadSettings reads home's setting; none kept is Settings{} (off).
func LoadSettings(home string) (Settings, error) {
	path := filepath.Join(home, SettingsName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("reading the web setting: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return Settings{}, fmt.Errorf("reading the web setting %s: %w", path, err)
	}
	return s, nil
}

// SaveSettings writes home's setting atomically, 0600.
func SaveSettings(home string, s Settings) error {
	b, _ := json.Marshal(s)
	path := filepath.Join(home, SettingsName)
	if err := renameio.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the web setting: %w", err)
	}
	return nil
}

// LoadOrCreateToken returns home's login token, making one of 128 random
// bits (32 hex digits, in a 0600 file) if there is none.
func LoadOrCreateToken(home string) (string, error) {
	path := filepath.Join(home, TokenName)
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) == 32 {
			if _, err := hex.DecodeString(tok); err == nil {
				return tok, nil
			}
		}
		// A damaged token file is replaced: the old token never worked.
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the web token: %w", err)
	}
	var raw [16]byte
	rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	if err := renameio.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving the web token: %w", err)
	}
	return tok, nil
}

// CheckListen validates a --listen address: host:port with a numeric port.
// It reports whether the host is loopback-only (127.0.0.0/8, ::1,
// localhost); anything else exposes the actions to the network.
func CheckListen(addr string) (loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--listen %q: want host:port, like %s: %w", addr, DefaultListen, err)
	}
	if port == "" {
		return false, fmt.Errorf("--listen %q: no port", addr)
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false, fmt.Errorf("--listen %q: port %q is not a number", addr, port)
		}
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// URL is the dashboard's address for a listener bound at addr, with the
// token in the fragment (which browsers never send to a server or put in
// a Referer).
func URL(addr, token string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/#token=" + token
}
