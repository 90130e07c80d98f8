package cloudformation

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/tvvote/voting/envvars"
	"github.com/tvvote/voting/workers/processor/processorconfig"
	"github.com/tvvote/voting/workers/results/resultsconfig"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// libraryVars are read by a library under a program rather than by its config struct.
var libraryVars = map[string]string{
	// pgx, like libpq, takes the password from PGPASSWORD when the database URL has none, so the
	// password comes from Secrets Manager and never sits in a task definition.
	"PGPASSWORD": "pgx",
}

// entrypointPrefixes are variables an image's entrypoint consumes before its program starts:
// the control plane image's secretfiles writes SECRETFILE_<NAME> to /run/secrets/<name>.
var entrypointPrefixes = map[string]string{"controlplane": "SECRETFILE_"}

// program is what one container runs: the variables it may be given and its own start-up check.
type program struct {
	names []string
	load  func(lookup func(string) (string, bool)) error
}

func programs(t *testing.T) map[string]program {
	t.Helper()
	return map[string]program{
		"controlplane": {envvars.Names[xdsconfig.Config](), func(l func(string) (string, bool)) error {
			_, err := xdsconfig.Load(l)
			return err
		}},
		"processor": {envvars.Names[processorconfig.Config](), func(l func(string) (string, bool)) error {
			_, err := processorconfig.Load(l)
			return err
		}},
		"results": {envvars.Names[resultsconfig.Config](), func(l func(string) (string, bool)) error {
			_, err := resultsconfig.Load(l)
			return err
		}},
		"envoy": envoyProgram(t),
	}
}

// envoyProgram is the edge container: Envoy with the module (GODEBUG, which must turn the cgo
// check off, GOMAXPROCS and VOTEFILTER_PPROF_ADDR, README "Configuration") started by the
// image's entrypoint, whose own variables are read from the script itself.
func envoyProgram(t *testing.T) program {
	t.Helper()
	script, err := os.ReadFile("../docker/envoy-entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"GODEBUG", "GOMAXPROCS", "VOTEFILTER_PPROF_ADDR"}
	var required []string
	for _, m := range regexp.MustCompile(`\$\{(EDGE_[A-Z_]+)(:\?)?`).FindAllStringSubmatch(string(script), -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
		if m[2] != "" {
			required = append(required, m[1])
		}
	}
	if len(required) == 0 {
		t.Fatal("envoy-entrypoint.sh: no required EDGE_ variable found; the pattern no longer matches the script")
	}
	return program{names, func(l func(string) (string, bool)) error {
		var missing []string
		if v, _ := l("GODEBUG"); !strings.Contains(v, "cgocheck=0") {
			missing = append(missing, "GODEBUG=cgocheck=0")
		}
		for _, name := range required {
			if v, _ := l(name); v == "" {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return &envvars.Invalid{Program: "envoy", Problems: []error{errString("missing " + strings.Join(missing, ", "))}}
		}
		return nil
	}}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestContainerEnvironments reads every task definition of the regional template and checks each
// container's variables against its program, then runs the program's Load on them (parameters
// at their defaults, other intrinsics as placeholders, the first branch of every Fn::If).
func TestContainerEnvironments(t *testing.T) {
	tpl := load(t, "regional.yaml")
	progs := programs(t)
	seen := map[string]bool{}
	for _, c := range tpl.containers(t) {
		seen[c.name] = true
		p, ok := progs[c.name]
		if !ok {
			t.Errorf("%s: container %q runs no known program", c.task, c.name)
			continue
		}
		for name := range c.env {
			if pre := entrypointPrefixes[c.name]; pre != "" && strings.HasPrefix(name, pre) {
				continue
			}
			if !slices.Contains(p.names, name) && libraryVars[name] == "" {
				t.Errorf("%s/%s sets %s, which the program does not read", c.task, c.name, name)
			}
		}
		lookup := func(name string) (string, bool) {
			v, ok := c.env[name]
			return v, ok && v != ""
		}
		if err := p.load(lookup); err != nil {
			t.Errorf("%s/%s: the program would refuse this environment: %v", c.task, c.name, err)
		}
	}
	for name := range progs {
		if !seen[name] {
			t.Errorf("no task definition runs %s", name)
		}
	}
}

// TestEdgeAgreesWithTheNLB: the control plane's listener settings must match what stands in
// front of Envoy (README, "The client address"), and the secret files it names must be the ones
// the edge image writes.
func TestEdgeAgreesWithTheNLB(t *testing.T) {
	tpl := load(t, "regional.yaml")
	var cp container
	for _, c := range tpl.containers(t) {
		if c.name == "controlplane" {
			cp = c
		}
	}
	tg := tpl.resource(t, "EdgeTargets")
	proxy := ""
	for _, attr := range seq(get(get(tg, "Properties"), "TargetGroupAttributes")) {
		if tpl.value(get(attr, "Key")) == "proxy_protocol_v2.enabled" {
			proxy = tpl.value(get(attr, "Value"))
		}
	}
	if proxy != "true" || cp.env["XDS_PROXY_PROTOCOL"] != "true" || cp.env["XDS_TRUSTED_HOPS"] != "0" {
		t.Errorf("NLB proxy_protocol_v2.enabled=%q, XDS_PROXY_PROTOCOL=%q, XDS_TRUSTED_HOPS=%q: want true, true, 0",
			proxy, cp.env["XDS_PROXY_PROTOCOL"], cp.env["XDS_TRUSTED_HOPS"])
	}
	script, err := os.ReadFile("../docker/envoy-entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "secrets=/run/secrets\n") {
		t.Fatal("envoy-entrypoint.sh no longer writes its secrets under /run/secrets")
	}
	for name, file := range map[string]string{"XDS_POW_SECRET_FILE": "pow-secret", "XDS_SITEVERIFY_SECRET_FILE": "siteverify-secret",
		"XDS_REDIS_AUTH_FILE": "redis-auth"} {
		if want := "/run/secrets/" + file; cp.env[name] != want {
			t.Errorf("%s=%q, the edge image writes %s", name, cp.env[name], want)
		}
		if !strings.Contains(string(script), `"$secrets/`+file+`"`) {
			t.Errorf("envoy-entrypoint.sh does not write $secrets/%s", file)
		}
	}
}

// TestADSMutualTLS: the control plane serves ADS over mutual TLS from files its image's
// entrypoint writes from Secrets Manager, and the edge's entrypoint is given its client
// certificate.
func TestADSMutualTLS(t *testing.T) {
	tpl := load(t, "regional.yaml")
	var cp, edge container
	for _, c := range tpl.containers(t) {
		switch c.name {
		case "controlplane":
			cp = c
		case "envoy":
			edge = c
		}
	}
	for _, name := range []string{"XDS_GRPC_TLS_CERT_FILE", "XDS_GRPC_TLS_KEY_FILE", "XDS_GRPC_CLIENT_CA_FILE"} {
		file, ok := strings.CutPrefix(cp.env[name], "/run/secrets/")
		if !ok {
			t.Errorf("%s=%q is not a file the entrypoint writes under /run/secrets", name, cp.env[name])
			continue
		}
		secret := "SECRETFILE_" + strings.ToUpper(strings.ReplaceAll(file, "-", "_"))
		if _, ok := cp.env[secret]; !ok {
			t.Errorf("%s=%q but the control plane container has no %s", name, cp.env[name], secret)
		}
	}
	for _, name := range []string{"EDGE_XDS_TLS_CERT", "EDGE_XDS_TLS_KEY", "EDGE_XDS_TLS_CA"} {
		if _, ok := edge.env[name]; !ok {
			t.Errorf("the edge container has no %s", name)
		}
	}
	df, err := os.ReadFile("../docker/controlplane.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(df), `ENTRYPOINT ["/usr/local/bin/secretfiles", "/usr/local/bin/controlplane"]`) {
		t.Error("the control plane image does not start through secretfiles")
	}
}

type template struct {
	root   *yaml.Node
	params map[string]string
	types  map[string]string // resource name → type
}

type container struct {
	task, name string
	env        map[string]string
}

func load(t *testing.T, path string) *template {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	tpl := &template{root: doc.Content[0], params: map[string]string{}, types: map[string]string{}}
	for name, r := range pairs(get(tpl.root, "Resources")) {
		tpl.types[name] = get(r, "Type").Value
	}
	for name, p := range pairs(get(tpl.root, "Parameters")) {
		if d := get(p, "Default"); d != nil {
			tpl.params[name] = d.Value
		} else {
			tpl.params[name] = "param-" + name
		}
	}
	return tpl
}

func (tpl *template) resource(t *testing.T, name string) *yaml.Node {
	t.Helper()
	r := get(get(tpl.root, "Resources"), name)
	if r == nil {
		t.Fatalf("no resource %s", name)
	}
	return r
}

func (tpl *template) containers(t *testing.T) []container {
	t.Helper()
	var out []container
	for task, r := range pairs(get(tpl.root, "Resources")) {
		if tpl.value(get(r, "Type")) != "AWS::ECS::TaskDefinition" {
			continue
		}
		for _, cd := range seq(get(get(r, "Properties"), "ContainerDefinitions")) {
			c := container{task: task, name: tpl.value(get(cd, "Name")), env: map[string]string{}}
			for _, e := range seq(get(cd, "Environment")) {
				c.env[tpl.value(get(e, "Name"))] = tpl.value(get(e, "Value"))
			}
			for _, s := range seq(get(cd, "Secrets")) {
				if s = tpl.branch(s); s != nil {
					// A secret's value is only known at run time; long enough for any check.
					c.env[tpl.value(get(s, "Name"))] = "secret-from-secrets-manager"
				}
			}
			if len(c.env) == 0 {
				t.Errorf("%s/%s: no environment found", task, c.name)
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		t.Fatal("no task definitions found")
	}
	return out
}

// branch is the node an !If stands for (its first, fuller branch), nil for AWS::NoValue.
func (tpl *template) branch(n *yaml.Node) *yaml.Node {
	for n != nil && n.Tag == "!If" {
		n = n.Content[1]
	}
	if n != nil && n.Tag == "!Ref" && n.Value == "AWS::NoValue" {
		return nil
	}
	return n
}

var subVar = regexp.MustCompile(`\$\{([^}]+)\}`)

// value is a node's string as CloudFormation would make it: parameters take their defaults,
// pseudo parameters a plausible value, other resources' attributes a placeholder.
func (tpl *template) value(n *yaml.Node) string {
	n = tpl.branch(n)
	if n == nil {
		return ""
	}
	switch n.Tag {
	case "!Ref":
		return tpl.ref(n.Value, nil)
	case "!Sub":
		s, vars := n.Value, map[string]string{}
		if n.Kind == yaml.SequenceNode {
			s = n.Content[0].Value
			for k, v := range pairs(n.Content[1]) {
				vars[k] = tpl.value(v)
			}
		}
		return subVar.ReplaceAllStringFunc(s, func(m string) string { return tpl.ref(m[2:len(m)-1], vars) })
	case "!GetAtt":
		return "attr-" + strings.ReplaceAll(n.Value, ".", "-")
	}
	if n.Kind != yaml.ScalarNode || strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		return "intrinsic-" + strings.TrimPrefix(n.Tag, "!")
	}
	return n.Value
}

func (tpl *template) ref(name string, vars map[string]string) string {
	if v, ok := vars[name]; ok {
		return v
	}
	if v, ok := tpl.params[name]; ok {
		return v
	}
	switch name {
	case "AWS::Region":
		return "eu-west-1"
	case "AWS::AccountId":
		return "123456789012"
	case "AWS::Partition":
		return "aws"
	}
	if strings.HasSuffix(name, ".Port") {
		return "6379"
	}
	// What a Ref of such a resource returns.
	if tpl.types[name] == "AWS::SQS::Queue" {
		return "https://sqs.eu-west-1.amazonaws.com/123456789012/" + name
	}
	return "ref-" + strings.ReplaceAll(name, ".", "-")
}

func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func pairs(n *yaml.Node) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil || n.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[n.Content[i].Value] = n.Content[i+1]
	}
	return out
}

func seq(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

// TestParameterFiles: every key of infra/params names a parameter of its template, and every
// parameter without a default is given.
func TestParameterFiles(t *testing.T) {
	files, err := filepath.Glob("../params/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no parameter files: %v", err)
	}
	for _, f := range files {
		tplName := "regional.yaml"
		if filepath.Base(f) == "global.json" {
			tplName = "global.yaml"
		}
		tpl := load(t, tplName)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var kv []struct{ ParameterKey, ParameterValue string }
		if err := json.Unmarshal(data, &kv); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		given := map[string]bool{}
		for _, p := range kv {
			given[p.ParameterKey] = true
			if _, ok := tpl.params[p.ParameterKey]; !ok {
				t.Errorf("%s: %s is no parameter of %s", f, p.ParameterKey, tplName)
			}
		}
		for name, p := range pairs(get(tpl.root, "Parameters")) {
			if get(p, "Default") == nil && !given[name] {
				t.Errorf("%s: %s has no default and is not given", f, name)
			}
		}
	}
}
