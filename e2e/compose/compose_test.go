// Package compose_test checks the wiring of e2e/docker-compose.yml without Docker:
// the file is loaded with the compose-spec parser that docker compose itself uses,
// then every URL, host:port and mounted file of the stack is followed to the
// service or file it names. A stack that parses but points Prometheus at a port
// nobody listens on fails here instead of on an operator's laptop.
package compose_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/upstream"
)

const (
	composeFile = "../docker-compose.yml"
	repoRoot    = "../.."
)

// The services the stack needs, by role.
var (
	replicas = []string{"cardguard-1", "cardguard-2"}
	required = append([]string{"vmstorage", "vminsert", "vmselect", "redis", "lb", "prometheus", "grafana", "generator"}, replicas...)
)

func load(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithEnv([]string{}), // the host's environment must not change what is checked
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("compose file does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("service %q is missing", name)
	}
	return s
}

// listens returns the container ports a service declares (expose and ports).
func listens(s types.ServiceConfig) []int {
	var ports []int
	for _, e := range s.Expose {
		if n, err := strconv.Atoi(e); err == nil {
			ports = append(ports, n)
		}
	}
	for _, pc := range s.Ports {
		ports = append(ports, int(pc.Target))
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// flagValue returns the value of -name=value or --name=value in the command.
func flagValue(s types.ServiceConfig, name string) (string, bool) {
	for _, a := range s.Command {
		for _, prefix := range []string{"-" + name + "=", "--" + name + "="} {
			if v, ok := strings.CutPrefix(a, prefix); ok {
				return v, true
			}
		}
	}
	return "", false
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("address %q: port %v", addr, err)
	}
	return n
}

// checkListenFlag checks that the port a process is told to listen on is declared.
func checkListenFlag(t *testing.T, p *types.Project, name, flag string, def int) int {
	t.Helper()
	s := service(t, p, name)
	port := def
	if v, ok := flagValue(s, flag); ok {
		port = portOf(t, v)
	}
	if !slices.Contains(listens(s), port) {
		t.Errorf("%s listens on %d (-%s) but declares ports %v", name, port, flag, listens(s))
	}
	return port
}

// checkEndpoint checks that hostport names a service listening on that port and
// returns the service name.
func checkEndpoint(t *testing.T, p *types.Project, what, hostport string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %q is not host:port: %v", what, hostport, err)
		return ""
	}
	s, ok := p.Services[host]
	if !ok {
		t.Errorf("%s: %q names no service (services: %v)", what, hostport, p.ServiceNames())
		return ""
	}
	n, _ := strconv.Atoi(port)
	if !slices.Contains(listens(s), n) {
		t.Errorf("%s: %q: service %s listens on %v, not %d", what, hostport, host, listens(s), n)
	}
	return host
}

func checkURL(t *testing.T, p *types.Project, what, raw string) (svc string, u *url.URL) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Errorf("%s: %q is not an absolute URL", what, raw)
		return "", &url.URL{}
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	return checkEndpoint(t, p, what, hostport), u
}

// hostPath maps a path inside a service's container to the file on this machine
// that a bind mount puts there.
func hostPath(t *testing.T, s types.ServiceConfig, inContainer string) string {
	t.Helper()
	best := -1
	var src string
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		rel, err := filepath.Rel(v.Target, inContainer)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if len(v.Target) > best {
			best, src = len(v.Target), filepath.Join(v.Source, rel)
		}
	}
	if best < 0 {
		t.Fatalf("%s: nothing is mounted at %s", s.Name, inContainer)
	}
	return src
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServicesExist(t *testing.T) {
	t.Parallel()
	p := load(t)
	for _, name := range required {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %q is missing", name)
		}
	}
}

var (
	// versionTag is an explicit version: it has a digit and is not a moving tag.
	versionTag  = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)+`)
	movingTags  = []string{"latest", "stable", "mainline", "edge", "alpine", "nonroot"}
	fromLine    = regexp.MustCompile(`(?im)^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?`)
	argDefault  = regexp.MustCompile(`(?m)^ARG\s+(\w+)=(\S+)`)
	distroless  = regexp.MustCompile(`^gcr\.io/distroless/[a-z0-9-]+:(nonroot|latest)$`)
	localImages = regexp.MustCompile(`^[a-z0-9-]+:dev$`)
)

func imagePinned(ref string) error {
	if _, digest, ok := strings.Cut(ref, "@sha256:"); ok && len(digest) == 64 {
		return nil
	}
	name, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	switch {
	case tag == "":
		return fmt.Errorf("image %q has no tag (that is latest)", ref)
	case slices.Contains(movingTags, tag):
		return fmt.Errorf("image %q: tag %q moves", ref, tag)
	case !versionTag.MatchString(tag):
		return fmt.Errorf("image %q: tag %q is not a version", name, tag)
	}
	return nil
}

func TestImagesPinned(t *testing.T) {
	t.Parallel()
	p := load(t)
	for name, s := range p.Services {
		if s.Build != nil {
			// Built here: the tag names the local build, the base images are
			// checked in the Dockerfile.
			if !localImages.MatchString(s.Image) {
				t.Errorf("%s: built image %q: want <name>:dev so that it never shadows a registry image", name, s.Image)
			}
			continue
		}
		if err := imagePinned(s.Image); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	p := load(t)
	for name, s := range p.Services {
		if s.Build == nil {
			continue
		}
		df := filepath.Join(s.Build.Context, s.Build.Dockerfile)
		if abs, _ := filepath.Abs(repoRoot); s.Build.Context != abs {
			t.Errorf("%s: build context %s, want the repository root %s", name, s.Build.Context, abs)
		}
		src := string(readFile(t, df))
		args := map[string]string{}
		for _, m := range argDefault.FindAllStringSubmatch(src, -1) {
			args[m[1]] = m[2]
		}
		stages := map[string]bool{}
		for _, m := range fromLine.FindAllStringSubmatch(src, -1) {
			base := regexp.MustCompile(`\$\{?(\w+)\}?`).ReplaceAllStringFunc(m[1], func(v string) string {
				return args[strings.Trim(v, "${}")]
			})
			switch {
			case stages[base]:
			case distroless.MatchString(base):
				// Distroless publishes only moving tags; :nonroot is the variant,
				// the Debian release in the name is the version.
			default:
				if err := imagePinned(base); err != nil {
					t.Errorf("%s: FROM %s: %v", df, m[1], err)
				}
			}
			if m[2] != "" {
				stages[m[2]] = true
			}
		}
		if s.Build.Target != "" && !stages[s.Build.Target] {
			t.Errorf("%s: build target %q is not a stage of %s", name, s.Build.Target, df)
		}
	}
}

func TestMountsExist(t *testing.T) {
	t.Parallel()
	p := load(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s: bind mount source: %v", name, err)
				}
				if !v.ReadOnly {
					t.Errorf("%s: bind mount %s is writable: mount configuration read-only", name, v.Source)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %q is not declared", name, v.Source)
				}
			}
		}
	}
}

func TestVictoriaMetricsCluster(t *testing.T) {
	t.Parallel()
	p := load(t)
	checkListenFlag(t, p, "vmstorage", "httpListenAddr", 8482)
	insertPort := checkListenFlag(t, p, "vmstorage", "vminsertAddr", 8400)
	selectPort := checkListenFlag(t, p, "vmstorage", "vmselectAddr", 8401)
	checkListenFlag(t, p, "vminsert", "httpListenAddr", 8480)
	checkListenFlag(t, p, "vmselect", "httpListenAddr", 8481)
	for svc, want := range map[string]int{"vminsert": insertPort, "vmselect": selectPort} {
		node, ok := flagValue(service(t, p, svc), "storageNode")
		if !ok {
			t.Errorf("%s has no -storageNode", svc)
			continue
		}
		if host := checkEndpoint(t, p, svc+" -storageNode", node); host != "vmstorage" || portOf(t, node) != want {
			t.Errorf("%s -storageNode=%s, want vmstorage:%d", svc, node, want)
		}
	}
}

// cardguardConfig reads the policy file a replica is started with.
func cardguardConfig(t *testing.T, s types.ServiceConfig) (path string, raw map[string]any, up upstream.Config) {
	t.Helper()
	cfgPath, ok := flagValue(s, "config")
	if !ok {
		t.Fatalf("%s: no -config flag", s.Name)
	}
	path = hostPath(t, s, cfgPath)
	b := readFile(t, path)
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var doc struct {
		Upstream upstream.Config `yaml:"upstream"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return path, raw, doc.Upstream
}

// endpointsIn collects every string in a YAML document that names a host:port,
// bare or as a URL, whatever section it is in.
func endpointsIn(v any, path string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			endpointsIn(e, path+"."+k, out)
		}
	case []any:
		for i, e := range v {
			endpointsIn(e, fmt.Sprintf("%s[%d]", path, i), out)
		}
	case string:
		if u, err := url.Parse(v); err == nil && u.Host != "" && u.Port() != "" {
			out[path] = u.Host
		} else if h, p, err := net.SplitHostPort(v); err == nil && h != "" && p != "" {
			out[path] = v
		}
	}
}

func TestCardguardWiring(t *testing.T) {
	t.Parallel()
	p := load(t)
	var cfgFile string
	for _, name := range replicas {
		s := service(t, p, name)
		if s.Build == nil || s.Build.Target != "cardguard" {
			t.Errorf("%s: want built from the Dockerfile, target cardguard", name)
		}
		checkListenFlag(t, p, name, "httpListenAddr", 8490)
		if _, ok := flagValue(s, "dataDir"); !ok {
			t.Errorf("%s: no -dataDir", name)
		}
		dataDir, _ := flagValue(s, "dataDir")
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == dataDir
		}) {
			t.Errorf("%s: -dataDir %s is not a volume: snapshots would be lost with the container", name, dataDir)
		}
		path, raw, up := cardguardConfig(t, s)
		if cfgFile == "" {
			cfgFile = path
		} else if path != cfgFile {
			t.Errorf("%s loads %s, another replica %s: replicas must share one policy", name, path, cfgFile)
		}
		if _, err := upstream.New(up); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if up.Mode != upstream.ModeCluster {
			t.Errorf("%s: upstream.mode %q, want cluster", path, up.Mode)
		}
		ins, _ := checkURL(t, p, path+" upstream.insert_url", up.InsertURL)
		sel, _ := checkURL(t, p, path+" upstream.select_url", up.SelectURL)
		if ins != "vminsert" || sel != "vmselect" {
			t.Errorf("%s: insert_url %s and select_url %s, want the vminsert and vmselect services", path, up.InsertURL, up.SelectURL)
		}
		// Whatever else the policy names (Redis, ...) must exist too.
		eps := map[string]string{}
		endpointsIn(raw, "", eps)
		for where, hp := range eps {
			host := checkEndpoint(t, p, path+" "+where, hp)
			if host != "" && !dependsOn(s, host) {
				t.Errorf("%s: the policy uses %s (%s) but the service does not depend on it", name, host, where)
			}
		}
		if _, ok := raw["state"]; ok {
			if !slices.ContainsFunc(mapsValues(eps), func(hp string) bool { return strings.HasPrefix(hp, "redis:") }) {
				t.Errorf("%s: the state section does not point at the redis service", path)
			}
		}
	}
}

func mapsValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

var (
	nginxListen = regexp.MustCompile(`(?m)^\s*listen\s+(?:[^\s;]*:)?(\d+)[^;]*;`)
	nginxServer = regexp.MustCompile(`(?m)^\s*server\s+([\w.-]+:\d+)[^;]*;`)
	nginxProxy  = regexp.MustCompile(`(?m)^\s*proxy_pass\s+http://([\w.-]+)\s*;`)
	nginxUp     = regexp.MustCompile(`(?m)^\s*upstream\s+([\w.-]+)\s*\{`)
	nginxBody   = regexp.MustCompile(`(?m)^\s*client_max_body_size\s+(\d+)m\s*;`)
)

func TestLoadBalancer(t *testing.T) {
	t.Parallel()
	p := load(t)
	lb := service(t, p, "lb")
	conf := string(readFile(t, hostPath(t, lb, "/etc/nginx/nginx.conf")))
	m := nginxListen.FindStringSubmatch(conf)
	if m == nil {
		t.Fatal("nginx.conf: no listen directive")
	}
	if port, _ := strconv.Atoi(m[1]); !slices.Contains(listens(lb), port) {
		t.Errorf("nginx listens on %d, the lb service declares %v", port, listens(lb))
	}
	var backends []string
	for _, m := range nginxServer.FindAllStringSubmatch(conf, -1) {
		backends = append(backends, checkEndpoint(t, p, "nginx.conf upstream server", m[1]))
	}
	slices.Sort(backends)
	if !slices.Equal(backends, replicas) {
		t.Errorf("nginx balances over %v, want every replica %v", backends, replicas)
	}
	for _, r := range replicas {
		if !dependsOn(lb, r) {
			t.Errorf("lb does not depend on %s", r)
		}
	}
	up, pass := nginxUp.FindStringSubmatch(conf), nginxProxy.FindStringSubmatch(conf)
	if up == nil || pass == nil || up[1] != pass[1] {
		t.Errorf("nginx.conf: proxy_pass %v does not use upstream %v", pass, up)
	}
	// Remote-write bodies are up to 32 MiB; nginx's default is 1 MiB.
	if m := nginxBody.FindStringSubmatch(conf); m == nil {
		t.Error("nginx.conf: no client_max_body_size: nginx would refuse writes over 1 MiB")
	} else if n, _ := strconv.Atoi(m[1]); n < 32 {
		t.Errorf("nginx.conf: client_max_body_size %dm is below cardguard's 32 MiB", n)
	}
}

// cardguardWritePath matches the remote-write paths cardguard serves.
var cardguardWritePath = regexp.MustCompile(`^(/insert/\d+(:\d+)?/prometheus/api/v1/(write|push)|(/prometheus)?/api/v1/(write|push))$`)

func TestPrometheus(t *testing.T) {
	t.Parallel()
	p := load(t)
	s := service(t, p, "prometheus")
	cfgPath, ok := flagValue(s, "config.file")
	if !ok {
		t.Fatal("prometheus: no --config.file")
	}
	ownPort := checkListenFlag(t, p, "prometheus", "web.listen-address", 9090)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
		RemoteWrite []struct {
			URL             string `yaml:"url"`
			ProtobufMessage string `yaml:"protobuf_message"`
			QueueConfig     struct {
				RetryOnHTTP429 bool `yaml:"retry_on_http_429"`
			} `yaml:"queue_config"`
		} `yaml:"remote_write"`
	}
	path := hostPath(t, s, cfgPath)
	if err := yaml.Unmarshal(readFile(t, path), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RemoteWrite) == 0 {
		t.Fatalf("%s: no remote_write", path)
	}
	for _, rw := range cfg.RemoteWrite {
		svc, u := checkURL(t, p, path+" remote_write.url", rw.URL)
		if svc != "lb" {
			t.Errorf("%s: remote_write to %s, want the load balancer", path, rw.URL)
		}
		if !cardguardWritePath.MatchString(u.Path) {
			t.Errorf("%s: remote_write path %q is not a cardguard write path", path, u.Path)
		}
		if !rw.QueueConfig.RetryOnHTTP429 {
			t.Errorf("%s: remote_write %s without queue_config.retry_on_http_429: batches over a rate limit would be dropped", path, rw.URL)
		}
		if rw.ProtobufMessage != "" && rw.ProtobufMessage != "prometheus.WriteRequest" {
			t.Errorf("%s: protobuf_message %q", path, rw.ProtobufMessage)
		}
	}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				if strings.HasPrefix(target, "localhost:") {
					if portOf(t, target) != ownPort {
						t.Errorf("%s: job %s scrapes %s, Prometheus listens on %d", path, sc.JobName, target, ownPort)
					}
					continue
				}
				scraped[checkEndpoint(t, p, path+" job "+sc.JobName, target)] = true
			}
		}
	}
	for _, want := range append([]string{"generator"}, replicas...) {
		if !scraped[want] {
			t.Errorf("%s: %s is not scraped", path, want)
		}
	}
	gen := service(t, p, "generator")
	checkListenFlag(t, p, "generator", "httpListenAddr", 9100)
	if gen.Build == nil || gen.Build.Target != "generator" {
		t.Error("generator: want built from the Dockerfile, target generator")
	}
}

func TestGrafana(t *testing.T) {
	t.Parallel()
	p := load(t)
	s := service(t, p, "grafana")
	port := 3000
	if v := s.Environment["GF_SERVER_HTTP_PORT"]; v != nil {
		port, _ = strconv.Atoi(*v)
	}
	if !slices.Contains(listens(s), port) {
		t.Errorf("grafana listens on %d, declares %v", port, listens(s))
	}

	// Datasources: every one is cardguard through the load balancer.
	dsFiles, _ := filepath.Glob(filepath.Join(hostPath(t, s, "/etc/grafana/provisioning/datasources"), "*.yml"))
	if len(dsFiles) == 0 {
		t.Fatal("no datasource provisioning files")
	}
	uids := map[string]bool{}
	for _, f := range dsFiles {
		var ds struct {
			Datasources []struct {
				Name, UID, Type, URL string
			} `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(readFile(t, f), &ds); err != nil {
			t.Fatal(err)
		}
		for _, d := range ds.Datasources {
			if d.Type != "prometheus" {
				t.Errorf("%s: datasource %q type %q, want prometheus", f, d.Name, d.Type)
			}
			svc, u := checkURL(t, p, f+" datasource "+d.Name, d.URL)
			if svc != "lb" {
				t.Errorf("%s: datasource %q points at %s, want the load balancer", f, d.Name, d.URL)
			}
			if u.Path != "" && !regexp.MustCompile(`^/select/\d+(:\d+)?/prometheus$`).MatchString(u.Path) {
				t.Errorf("%s: datasource %q path %q: want none (default tenant) or /select/<tenant>/prometheus", f, d.Name, u.Path)
			}
			uids[d.UID] = true
		}
	}
	for _, r := range []string{"lb"} {
		if !dependsOn(s, r) {
			t.Errorf("grafana does not depend on %s", r)
		}
	}

	// Dashboards: the provider's path is mounted and holds the dashboards, which
	// use provisioned datasources and metrics cardguard exports.
	provFiles, _ := filepath.Glob(filepath.Join(hostPath(t, s, "/etc/grafana/provisioning/dashboards"), "*.yml"))
	if len(provFiles) == 0 {
		t.Fatal("no dashboard provisioning files")
	}
	known := exportedMetrics(t)
	var dashboards int
	for _, f := range provFiles {
		var prov struct {
			Providers []struct {
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		if err := yaml.Unmarshal(readFile(t, f), &prov); err != nil {
			t.Fatal(err)
		}
		for _, pr := range prov.Providers {
			files, _ := filepath.Glob(filepath.Join(hostPath(t, s, pr.Options.Path), "*.json"))
			for _, df := range files {
				dashboards++
				checkDashboard(t, df, uids, known)
			}
		}
	}
	if dashboards == 0 {
		t.Error("no dashboard is provisioned")
	}
	if v := s.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; v != nil {
		if _, err := os.Stat(hostPath(t, s, *v)); err != nil {
			t.Errorf("home dashboard: %v", err)
		}
	}
}

var metricName = regexp.MustCompile(`\bcardguard_[a-z0-9_]+`)

// exportedMetrics finds the cardguard_* names defined in the Go sources.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(repoRoot, "internal"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		for _, m := range regexp.MustCompile(`"(cardguard_[a-z0-9_]+)"`).FindAllStringSubmatch(string(readFile(t, path)), -1) {
			known[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(known) == 0 {
		t.Fatal("no cardguard_ metric found in the sources")
	}
	return known
}

func checkDashboard(t *testing.T, path string, uids, known map[string]bool) {
	t.Helper()
	var d any
	if err := json.Unmarshal(readFile(t, path), &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs int
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ds, ok := v["datasource"].(map[string]any); ok {
				if uid, _ := ds["uid"].(string); !uids[uid] && !strings.HasPrefix(uid, "$") {
					t.Errorf("%s: datasource uid %q is not provisioned", path, uid)
				}
			}
			if e, ok := v["expr"].(string); ok {
				exprs++
				for _, name := range metricName.FindAllString(e, -1) {
					base := name
					for _, suf := range []string{"_bucket", "_sum", "_count"} {
						base = strings.TrimSuffix(base, suf)
					}
					if !known[name] && !known[base] {
						t.Errorf("%s: %s is not a metric cardguard exports", path, name)
					}
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(d)
	if exprs == 0 {
		t.Errorf("%s: no queries", path)
	}
}

func TestHostPorts(t *testing.T) {
	t.Parallel()
	p := load(t)
	seen := map[string]string{}
	for name, s := range p.Services {
		for _, pc := range s.Ports {
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %s published on %q: bind the demo to 127.0.0.1", name, pc.Published, pc.HostIP)
			}
			if other, ok := seen[pc.Published]; ok {
				t.Errorf("host port %s published by %s and %s", pc.Published, name, other)
			}
			seen[pc.Published] = name
		}
	}
	for _, want := range []string{"lb", "grafana", "prometheus"} {
		if len(service(t, p, want).Ports) == 0 {
			t.Errorf("%s is not reachable from the host", want)
		}
	}
}

// TestHeaderMatchesStack keeps the comment at the top of the compose file honest:
// every URL it shows is published on that port by the service that serves it.
func TestHeaderMatchesStack(t *testing.T) {
	t.Parallel()
	p := load(t)
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, composeFile))))
	published := map[string]bool{}
	for _, s := range p.Services {
		for _, pc := range s.Ports {
			published[pc.Published] = true
		}
	}
	re := regexp.MustCompile(`http://localhost:(\d+)`)
	var n int
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		for _, m := range re.FindAllStringSubmatch(line, -1) {
			n++
			if !published[m[1]] {
				t.Errorf("header shows %s but no service publishes port %s", m[0], m[1])
			}
		}
	}
	if n == 0 {
		t.Error("the header shows no URL")
	}
}

func dependsOn(s types.ServiceConfig, other string) bool {
	_, ok := s.DependsOn[other]
	return ok
}
