package main

// In-process tests of the option table, the config file, precedence and the
// init, fingerprint and version commands. The relay itself is tested against
// the real binary in the main_test files.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/transport"
)

// env is a fake environment.
type env map[string]string

func (e env) get(name string) string { return e[name] }

// files is a fake file system for resolve.
type files map[string]string

func (f files) read(path string) ([]byte, error) {
	s, ok := f[path]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return []byte(s), nil
}

func flagsOf(t *testing.T, args ...string) startFlags {
	t.Helper()
	sf, err := parseFlags("start", args, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseFlags %q: %v", args, err)
	}
	return sf
}

func settingOf(t *testing.T, r *resolved, name string) setting {
	t.Helper()
	i := optionIndex(name)
	if i < 0 {
		t.Fatalf("no option %q", name)
	}
	return r.settings[i]
}

// TestPrecedence: flag > environment > file > default, for each pair, both
// in the effective value and in --print-config's source column.
func TestPrecedence(t *testing.T) {
	conf := filepath.Join("d", "smp-server.conf")
	cases := []struct {
		name      string
		args      []string
		env       env
		file      string
		quota     int
		where     string
		printLine string
	}{
		{"default", nil, nil, "", 128, "default", `quota                  = 128                      # default`},
		{"file", nil, nil, "quota = 5\n", 5, "file " + conf + ":1", "quota                  = 5                        # file " + conf + ":1"},
		{"env over file", nil, env{"SMP_QUOTA": "6"}, "quota = 5\n", 6, "env SMP_QUOTA", "# env SMP_QUOTA"},
		{"flag over env", []string{"--quota", "7"}, env{"SMP_QUOTA": "6"}, "quota = 5\n", 7, "flag --quota", "# flag --quota"},
		{"flag over file", []string{"--quota=8"}, nil, "\n\n# c\nquota = 5 # five\n", 8, "flag --quota", "# flag --quota"},
		{"empty env is unset", nil, env{"SMP_QUOTA": ""}, "quota = 5\n", 5, "file " + conf + ":1", "# file " + conf + ":1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := files{}
			if tc.file != "" {
				fsys[conf] = tc.file
			}
			r, err := resolve(flagsOf(t, append([]string{"--data", "d"}, tc.args...)...), tc.env.get, fsys.read)
			if err != nil {
				t.Fatal(err)
			}
			if r.cfg.quota != tc.quota {
				t.Errorf("quota %d, want %d", r.cfg.quota, tc.quota)
			}
			if s := settingOf(t, r, "quota"); s.where != tc.where {
				t.Errorf("quota from %q, want %q", s.where, tc.where)
			}
			var out bytes.Buffer
			r.printConfig(&out)
			var line string
			for l := range strings.SplitSeq(out.String(), "\n") {
				if strings.HasPrefix(l, "quota ") {
					line = l
				}
			}
			if !strings.Contains(line, tc.printLine) {
				t.Errorf("--print-config quota line %q, want it to contain %q\n%s", line, tc.printLine, out.String())
			}
		})
	}
}

// TestPrecedenceEveryKind: a duration, a string and an integer set in each
// of the three places at once resolve independently.
func TestPrecedenceEveryKind(t *testing.T) {
	fsys := files{"/etc/smp.conf": "listen = \"127.0.0.1:6000\"\nmessage-ttl = \"1h\"\nmax-conns = 10\ndata = \"/var/x\"\n"}
	e := env{"SMP_CONFIG": "/etc/smp.conf", "SMP_MESSAGE_TTL": "2h", "SMP_LOG_LEVEL": "warn"}
	r, err := resolve(flagsOf(t, "--max-conns", "20"), e.get, fsys.read)
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if c.listen != "127.0.0.1:6000" || c.messageTTL != 2*time.Hour || c.limits.MaxConns != 20 ||
		c.logLevel != "warn" || c.data != "/var/x" || c.blockSize != 8192 {
		t.Fatalf("resolved %+v", c)
	}
	if r.configPath != "/etc/smp.conf" || !r.configSeen {
		t.Fatalf("config %q seen=%v, want /etc/smp.conf read", r.configPath, r.configSeen)
	}
}

// TestConfigFileLocation: the default file is DATA/smp-server.conf and may
// be absent; --config and SMP_CONFIG name one that must exist.
func TestConfigFileLocation(t *testing.T) {
	none := files{}
	if r, err := resolve(flagsOf(t, "--data", "/srv/d"), env{}.get, none.read); err != nil || r.configPath != "/srv/d/smp-server.conf" || r.configSeen {
		t.Fatalf("default location: %v %+v", err, r)
	}
	if r, err := resolve(flagsOf(t), env{"SMP_DATA": "/e"}.get, none.read); err != nil || r.configPath != "/e/smp-server.conf" {
		t.Fatalf("SMP_DATA location: %v %+v", err, r)
	}
	for _, tc := range []struct {
		args []string
		env  env
	}{{[]string{"--config", "/nope.conf"}, nil}, {nil, env{"SMP_CONFIG": "/nope.conf"}}} {
		_, err := resolve(flagsOf(t, tc.args...), tc.env.get, none.read)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "config file") {
			t.Errorf("%v %v: missing explicit config: err %v, want a not-exist error", tc.args, tc.env, err)
		}
	}
}

// badValues holds a rejected value for every string option (integer and
// duration options get generic ones below).
var badValues = map[string][]string{
	"data":           {""},
	"listen":         {"5223", "host", "h:99999", "h:port"},
	"store":          {"tape", "WAL"},
	"fsync":          {"sometimes"},
	"fsync-io-uring": {"on", "OFF", ""},
	"key-type":       {"ed25519"},
	"metrics-listen": {"a:b:c", "99999", "host"},
	"log-level":      {"trace"},
	"profile":        {"gpu"},
	"profile-dir":    {""},
	"block-size":     {"4095", "5000", "131072", "8k"},
	"new-queues":     {"maybe", "ON"},
}

// contentChecked are the options any value of which is a valid setting (a
// path), rejected only for what the file holds: tested by their own tests.
var contentChecked = map[string]string{
	"creator-keys": "TestReadCreatorKeys and TestCreatorKeysFile",
}

// TestRejectBadValues: every option rejects bad values, from a flag, the
// environment or the file alike, with a message naming the option, the
// value, where it came from and what is allowed.
func TestRejectBadValues(t *testing.T) {
	for i := range options {
		o := &options[i]
		bad := badValues[o.name]
		switch {
		case len(bad) > 0:
		case o.kind == kInt:
			bad = []string{"x", "1.5", "-1"}
		case o.kind == kDuration:
			bad = []string{"0s", "-1s", "10", "soon"}
		case contentChecked[o.name] != "":
			continue
		default:
			t.Errorf("option %s has no bad values to test: add some to badValues", o.name)
			continue
		}
		for _, v := range bad {
			t.Run(o.name+"="+v, func(t *testing.T) {
				wantMsg := fmt.Sprintf("%s = %q (flag --%s): must be %s", o.name, v, o.name, o.allowed)
				_, err := resolve(flagsOf(t, "--"+o.name, v), env{}.get, files{}.read)
				if err == nil || !strings.Contains(err.Error(), wantMsg) {
					t.Fatalf("flag: err %v\nwant it to contain %q", err, wantMsg)
				}
				if v == "" {
					return // an empty variable means unset, and the file cannot hold it unquoted
				}
				_, err = resolve(flagsOf(t), env{o.envName(): v}.get, files{}.read)
				if want := fmt.Sprintf("%s = %q (env %s)", o.name, v, o.envName()); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("env: err %v\nwant it to contain %q", err, want)
				}
				line := o.name + " = " + quote(v)
				if o.kind == kInt {
					if _, _, perr := integer(v); perr != nil {
						return // not an integer the file syntax can carry: TestConfigFileErrors covers those
					}
					line = o.name + " = " + v
				}
				_, err = resolve(flagsOf(t, "--config", "/c"), env{}.get, files{"/c": "\n" + line + "\n"}.read)
				if want := fmt.Sprintf("%s = %q (file /c:2): must be %s", o.name, v, o.allowed); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("file: err %v\nwant it to contain %q", err, want)
				}
			})
		}
	}
}

// TestRejectCrossChecks: max-outbound must hold a block of the block size in force.
func TestRejectCrossChecks(t *testing.T) {
	_, err := resolve(flagsOf(t, "--block-size", "16384", "--max-outbound", "8192"), env{}.get, files{}.read)
	if want := `max-outbound = "8192" (flag --max-outbound): must be an integer of at least block-size (16384)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want %q", err, want)
	}
	_, err = resolve(flagsOf(t, "--quota", "0", "--log-level", "loud"), env{}.get, files{}.read)
	if err == nil || !strings.Contains(err.Error(), "quota") || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("err %v: want both bad options reported", err)
	}
}

// TestMetricsListen: PORT and :PORT bind loopback; a host is kept as given.
func TestMetricsListen(t *testing.T) {
	for in, want := range map[string]string{"": "", "9100": "127.0.0.1:9100", ":0": "127.0.0.1:0",
		"0.0.0.0:9100": "0.0.0.0:9100", "[::1]:9": "[::1]:9", "localhost:9": "localhost:9"} {
		r, err := resolve(flagsOf(t, "--metrics-listen", in), env{}.get, files{}.read)
		if err != nil || r.cfg.metricsListen != want {
			t.Errorf("metrics-listen %q: %q, %v; want %q", in, r.cfg.metricsListen, err, want)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:9": true, "[::1]:9": true, "localhost:9": true,
		"0.0.0.0:9": false, "10.0.0.1:9": false, "example.com:9": false} {
		if loopback(addr) != want {
			t.Errorf("loopback(%q) = %v", addr, !want)
		}
	}
}

// TestConfigFileErrors: syntax errors, unknown keys, duplicates and values of
// the wrong kind name the file and line.
func TestConfigFileErrors(t *testing.T) {
	cases := []struct{ text, want string }{
		{"quota = 5\nqouta = 6\n", `/c:2: unknown option "qouta" (see smp-server start -h)`},
		{"max_conns = 6\n", `/c:1: unknown option "max_conns" (did you mean max-conns?)`},
		{"quota = \"5\"\n", "/c:1: quota is an integer: write it without quotes"},
		{"message-ttl = 5\n", "/c:1: message-ttl is a string: write it in double quotes"},
		{"listen = 127.0.0.1:1\n", "/c:1: listen: value \"127.0.0.1:1\" is neither"},
		{"\n\nquota 5\n", "/c:3: expected = after quota"},
		{"quota = 5\nquota = 6\n", "/c:2: quota is already set on line 1"},
		{"[server]\n", "/c:1: tables"},
		{"data = \"abc\n", "/c:1: data: unterminated string"},
		{"data = \"a\\q\"\n", `/c:1: data: unsupported escape \q`},
		{"quota = 5 6\n", `/c:1: quota: unexpected "6" after the value`},
		{"quota = true\n", "/c:1: quota: value \"true\" is neither"},
		{"= 5\n", "/c:1: expected key = value"},
		{"quota =\n", "/c:1: quota has no value"},
		{"data = \"\xff\"\n", "/c: not UTF-8"},
	}
	for _, tc := range cases {
		_, err := resolve(flagsOf(t, "--config", "/c"), env{}.get, files{"/c": tc.text}.read)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.text, err, tc.want)
		}
	}
}

// TestParseConfig: the accepted syntax.
func TestParseConfig(t *testing.T) {
	text := "# head\r\n  quota = +1_000  # n\n\tdata = \"a \\\"b\\\" \\\\ \\t\\u00e9\"\nlisten='x:1' \n\nkey_x = -3\n"
	got, err := parseConfig("f", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []entry{{"quota", "+1000", false, 2}, {"data", "a \"b\" \\ \té", true, 3}, {"listen", "x:1", true, 4}, {"key_x", "-3", false, 6}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

// FuzzParseConfig: the parser never panics, and what it accepts, written
// back with quote, parses to the same entries.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("quota = 5\ndata = \"x\\u0041\"\n# c\nlisten = 'a:1' # c\n"))
	f.Add([]byte("a = 1_2\n[t]\n"))
	f.Add(configText(&resolved{settings: defaultsOnly()}))
	f.Fuzz(func(t *testing.T, text []byte) {
		got, err := parseConfig("f", text)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, e := range got {
			v := e.value
			if e.quoted {
				v = quote(v)
			}
			fmt.Fprintf(&b, "%s = %s\n", e.key, v)
		}
		again, err := parseConfig("f", []byte(b.String()))
		if err != nil {
			t.Fatalf("rewritten %q: %v", b.String(), err)
		}
		if len(again) != len(got) {
			t.Fatalf("rewritten: %d entries, want %d", len(again), len(got))
		}
		for i := range got {
			if again[i].key != got[i].key || again[i].value != got[i].value || again[i].quoted != got[i].quoted {
				t.Fatalf("entry %d: %+v, rewritten %+v", i, got[i], again[i])
			}
		}
	})
}

func defaultsOnly() []setting {
	s := make([]setting, len(options))
	for i := range options {
		s[i] = setting{raw: options[i].def, where: "default"}
	}
	return s
}

// TestInit: init creates the directory (0700), the key and the config file
// (0600); the file lists every option, parses back to what init was given,
// and init refuses to overwrite either file.
func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	var out, errb bytes.Buffer
	if code := run([]string{"init", "--data", dir, "--key-type", "x25519", "--quota", "9"}, &out, &errb); code != 0 {
		t.Fatalf("init: %d\n%s", code, errb.String())
	}
	conf := filepath.Join(dir, "smp-server.conf")
	for path, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, conf: 0o600,
		filepath.Join(dir, "server.key"): 0o600, filepath.Join(dir, "fingerprint"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := parseConfig(conf, text)
	if err != nil {
		t.Fatalf("the written config does not parse: %v", err)
	}
	if len(entries) != len(options) {
		t.Errorf("config has %d options, want all %d", len(entries), len(options))
	}
	r, err := resolve(flagsOf(t, "--data", dir), env{}.get, readConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.quota != 9 || r.cfg.keyType != "x25519" || r.cfg.blockSize != 8192 || !r.configSeen {
		t.Errorf("config read back: %+v", r.cfg)
	}
	fp, _ := os.ReadFile(filepath.Join(dir, "fingerprint"))
	if !strings.Contains(out.String(), strings.TrimSpace(string(fp))) {
		t.Errorf("init output does not name the fingerprint %s:\n%s", fp, out.String())
	}

	key, _ := os.ReadFile(filepath.Join(dir, "server.key"))
	for _, remove := range []string{"", conf} {
		if remove != "" {
			os.Remove(remove) // the key alone still blocks init
		}
		errb.Reset()
		if code := run([]string{"init", "--data", dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "never overwrites") {
			t.Fatalf("second init: %d\n%s", code, errb.String())
		}
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "server.key")); !bytes.Equal(again, key) {
		t.Fatal("init changed an existing key")
	}
	if _, err := os.Stat(conf); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("init refused but wrote a config: %v", err)
	}
}

// TestInitConfigElsewhere: --config puts the file elsewhere; start then
// finds the data directory through it.
func TestInitConfigElsewhere(t *testing.T) {
	base := t.TempDir()
	dir, conf := filepath.Join(base, "data"), filepath.Join(base, "etc", "smp.conf")
	var out, errb bytes.Buffer
	if code := run([]string{"init", "--data", dir, "--config", conf, "--key-type", "x25519"}, &out, &errb); code != 0 {
		t.Fatalf("init: %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "smp-server start --config "+conf) {
		t.Errorf("init does not say how to start:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"start", "--config", conf, "--print-config"}, &out, &errb); code != 0 {
		t.Fatalf("print-config: %d\n%s", code, errb.String())
	}
	if want := fmt.Sprintf("data                   = %-24s # file %s:", quote(dir), conf); !strings.Contains(out.String(), want) {
		t.Errorf("--print-config:\n%s\nwant a line with %q", out.String(), want)
	}
}

// TestPrintConfigCommand: start --print-config through run, with a real
// environment variable, exits 0 without starting.
func TestPrintConfigCommand(t *testing.T) {
	t.Setenv("SMP_IDLE_TIMEOUT", "90s")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "smp-server.conf"), []byte("idle-timeout = \"1m\"\nquota = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"start", "--data", dir, "--quota", "4", "--print-config"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	for _, want := range []string{`idle-timeout           = "90s"                    # env SMP_IDLE_TIMEOUT`,
		"quota                  = 4                        # flag --quota",
		`fsync                  = "always"                 # default`} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
	n, lim, _ := transport.AutoMaxConns()
	if want := fmt.Sprintf("max-conns              = 0                        # default; automatic: %d (open-file limit %d less", n, lim); !strings.Contains(out.String(), want) {
		t.Errorf("missing %q (the effective max-conns) in\n%s", want, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "server.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("--print-config created a key")
	}
	errb.Reset()
	if code := run([]string{"start", "--data", dir, "--quota", "0"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), `quota = "0" (flag --quota): must be an integer of at least 1`) {
		t.Errorf("bad value: exit %d\n%s", code, errb.String())
	}
}

// TestServerLine: the server line of an invitation (SPEC §9).
func TestServerLine(t *testing.T) {
	cases := []struct{ host, listen, want, err string }{
		{"", "127.0.0.1:5223", "127.0.0.1", ""},
		{"", "192.0.2.1:7000", "192.0.2.1:7000", ""},
		{"relay.example", "0.0.0.0:5223", "relay.example", ""},
		{"relay.example:443", "0.0.0.0:5223", "relay.example:443", ""},
		{"relay.example:5223", "0.0.0.0:7000", "relay.example", ""},
		{"2001:db8::1", "[::]:5223", "[2001:db8::1]", ""},
		{"[2001:db8::1]:9", "[::]:5223", "[2001:db8::1]:9", ""},
		{"", "0.0.0.0:5223", "", "give --host"},
		{"", "[::]:5223", "", "give --host"},
		{"", ":5223", "", "give --host"},
		{"relay.example", "127.0.0.1:0", "", "port 0"},
		{"bad host", "127.0.0.1:1", "", "hostname"},
	}
	for _, tc := range cases {
		got, err := serverLine(tc.host, tc.listen)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q %q: %q, %v; want an error with %q", tc.host, tc.listen, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q %q: %q, %v; want %q", tc.host, tc.listen, got, err, tc.want)
		}
	}
}

// TestFingerprintCommand: fingerprint prints the key's fingerprint and the
// server line, and fails clearly without a key.
func TestFingerprintCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"fingerprint", "--data", dir, "--host", "r.example"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "no server key") {
		t.Fatalf("without a key: exit %d\n%s", code, errb.String())
	}
	if code := run([]string{"init", "--data", dir, "--key-type", "x25519", "--listen", "127.0.0.1:7001"}, &out, &errb); code != 0 {
		t.Fatalf("init: %s", errb.String())
	}
	fp, _ := os.ReadFile(filepath.Join(dir, "fingerprint"))
	out.Reset()
	if code := run([]string{"fingerprint", "--data", dir}, &out, &errb); code != 0 {
		t.Fatalf("fingerprint: %d\n%s", code, errb.String())
	}
	if want := "fingerprint: " + string(fp) + "server: 127.0.0.1:7001\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
	out.Reset()
	if code := run([]string{"fingerprint", "--data", dir, "--quiet"}, &out, &errb); code != 0 || out.String() != string(fp) {
		t.Fatalf("fingerprint --quiet: exit %d, output %q, want the fingerprint line alone %q", code, out.String(), fp)
	}
}

// TestEnvWarnings: an SMP_ variable one edit away from an option is named
// with the option it probably meant; options, the smp CLI's variables and
// unrelated names are not.
func TestEnvWarnings(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want string // the suggested option's variable, or "" for no warning
	}{
		{"SMP_QOUTA=5", "SMP_QUOTA"},         // two letters swapped
		{"SMP_QUOT=5", "SMP_QUOTA"},          // one dropped
		{"SMP_QUOTAS=5", "SMP_QUOTA"},        // one added
		{"SMP_MAX_CONNZ=5", "SMP_MAX_CONNS"}, // one changed
		{"SMP_QUOTA=5", ""},
		{"SMP_SERVER=127.0.0.1:5223", ""},
		{"SMP_FINGERPRINT=x", ""},
		{"SMP_STATE=a.json", ""},
		{"SMP_CONFIG=a.conf", ""},
		{"SMP_SOMETHING_ELSE=1", ""},
		{"PATH=/bin", ""},
	} {
		got := envWarnings([]string{tc.env})
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s: unexpected warning %q", tc.env, got)
		case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], "did you mean "+tc.want+"?")):
			t.Errorf("%s: warnings %q, want one suggesting %s", tc.env, got, tc.want)
		}
	}
	t.Setenv("SMP_QOUTA", "5")
	var out, errb bytes.Buffer
	if code := run([]string{"start", "--data", t.TempDir(), "--print-config"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "# warning: environment variable SMP_QOUTA is not an option and is ignored; did you mean SMP_QUOTA?\n") {
		t.Errorf("--print-config does not warn about SMP_QOUTA: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// TestMakeBuildRevision: make build records the commit in both binaries even
// when GOFLAGS turns VCS stamping off, and smp-server version shows it.
func TestMakeBuildRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries with make")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): make build has no commit to record", err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	bin := t.TempDir()
	cmd := exec.Command("make", "-C", root, "build", "BIN="+bin)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(bin, "smp-server"), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "revision " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) {
		t.Fatalf("smp-server version:\n%s\nwant a line starting %q", out, want)
	}
	if _, err := os.Stat(filepath.Join(bin, "smp")); err != nil {
		t.Fatalf("make build did not build smp: %v", err)
	}
}

// TestVersionCommand: version names the build, Go and the protocol.
func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "smp-server ") || !strings.Contains(out.String(), "\ngo go1.") ||
		!strings.Contains(out.String(), "\nprotocol SMP/1, transport version 2\n") {
		t.Fatalf("version output:\n%s", out.String())
	}
}

// TestCapOptions: the relay-wide caps take byte counts past 2³¹ (the config
// file's underscores included), 0 turns a cap off (the engine's -1), and the
// defaults are the engine's.
func TestCapOptions(t *testing.T) {
	r, err := resolve(flagsOf(t), env{}.get, files{}.read)
	if err != nil {
		t.Fatal(err)
	}
	if l := r.cfg.engineLimits(); l.MaxStoredBytes != engine.DefaultLimits.MaxStoredBytes ||
		l.MaxQueues != engine.DefaultLimits.MaxQueues || l.UnsecuredTTL != engine.DefaultLimits.UnsecuredTTL {
		t.Fatalf("default limits %+v, want the engine's defaults", l)
	}
	r, err = resolve(flagsOf(t, "--config", "/c", "--max-queues", "0"), env{"SMP_UNSECURED_TTL": "36h"}.get,
		files{"/c": "max-stored-bytes = 17_179_869_184\nmax-queues = 5\n"}.read)
	if err != nil {
		t.Fatal(err)
	}
	if l := r.cfg.engineLimits(); l.MaxStoredBytes != 16<<30 || l.MaxQueues != -1 || l.UnsecuredTTL != 36*time.Hour {
		t.Fatalf("limits %+v: want 16 GiB, no queue cap and 36h", l)
	}
}

// TestReadCreatorKeys: the creator-keys file format (SPEC §5, §2 signature
// keys): blanks and # comments skipped, CRLF allowed, each bad line an error
// naming the file and line, a file with no key an empty (not nil) set, and
// through resolve an error that names the option.
func TestReadCreatorKeys(t *testing.T) {
	ed, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	k := base64.StdEncoding.EncodeToString(ed.PublicSPKI())
	for _, tc := range []struct {
		name, text string
		n          int
		err        string
	}{
		{"one key", "# ops team\n\n  " + k + "\t\r\n", 1, ""},
		{"no key", "# nobody yet\n", 0, ""},
		{"empty", "", 0, ""},
		{"not base64", "# x\n" + k + "!\n", 0, "F:2: not base64"},
		{"unpadded", strings.TrimRight(k, "="), 0, "F:1: not base64"},
		{"not a key", "aGVsbG8=\n", 0, "F:1: not an Ed25519 or RSA"},
		{"twice", k + "\n#\n" + k + "\n", 0, "F:3: the same key as line 1"},
	} {
		keys, err := readCreatorKeys("F", func(string) ([]byte, error) { return []byte(tc.text), nil })
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
		case tc.err == "" && (err != nil || keys == nil || len(keys) != tc.n):
			t.Errorf("%s: %d keys (nil %v), err %v; want %d keys", tc.name, len(keys), keys == nil, err, tc.n)
		}
	}
	sf := startFlags{set: map[string]string{"creator-keys": "/nonexistent/keys"}}
	_, err = resolve(sf, func(string) string { return "" }, func(string) ([]byte, error) { return nil, fs.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), `creator-keys = "/nonexistent/keys" (flag --creator-keys)`) {
		t.Fatalf("a missing creator-keys file: %v", err)
	}
	r, err := resolve(startFlags{set: map[string]string{"new-queues": "off"}}, func(string) string { return "" }, nil)
	if err != nil || !r.cfg.engineLimits().NewQueuesClosed || r.cfg.engineLimits().CreatorKeys != nil {
		t.Fatalf("new-queues off, no creator-keys: %+v, %v", r.cfg.engineLimits(), err)
	}
}
