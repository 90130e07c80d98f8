package envvars

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// level is a type of the config's own: parsed by a parser, written by its String.
type level int

func (l level) String() string { return "L" + strconv.Itoa(int(l)) }

type inner struct {
	Host string `env:"HOST"`
	Port int    `env:"PORT" envDefault:"80"`
}

type sample struct {
	Name    string        `env:"T_NAME" envDefault:"anon"`
	Count   int           `env:"T_COUNT" envDefault:"3"`
	Small   int32         `env:"T_SMALL"`
	On      bool          `env:"T_ON"`
	Ratio   float64       `env:"T_RATIO"`
	Wait    time.Duration `env:"T_WAIT" envDefault:"2s"`
	Tags    []string      `env:"T_TAGS" envSeparator:";"`
	Level   level         `env:"T_LEVEL" envDefault:"L1"`
	Inner   inner         `envPrefix:"T_INNER_"`
	Skipped string        `env:"-"`
	hidden  string        // unexported: not a variable
}

var parsers = Parsers{reflect.TypeFor[level](): func(v string) (any, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(v, "L"))
	if err != nil || !strings.HasPrefix(v, "L") {
		return nil, errors.New("want L<n>")
	}
	return level(n), nil
}}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseDefaultsAndEmptyIsUnset(t *testing.T) {
	c, problems := Parse[sample](lookup(map[string]string{"T_NAME": "", "T_ON": "true", "T_TAGS": "a;b",
		"T_INNER_HOST": "h", "T_LEVEL": "L4"}), parsers)
	want := sample{Name: "anon", Count: 3, On: true, Wait: 2 * time.Second, Tags: []string{"a", "b"}, Level: 4,
		Inner: inner{Host: "h", Port: 80}}
	if len(problems) > 0 || !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v %v\nwant %+v", c, problems, want)
	}
	if d := Defaults[sample](parsers); d.Count != 3 || d.Wait != 2*time.Second || d.Level != 1 || d.Inner.Port != 80 {
		t.Fatalf("defaults %+v", d)
	}
}

// A value that does not parse is named by its variable, in its type's words, and its field
// keeps the default.
func TestParseNamesEveryBadVariable(t *testing.T) {
	c, problems := Parse[sample](lookup(map[string]string{"T_COUNT": "many", "T_SMALL": "99999999999", "T_ON": "maybe",
		"T_RATIO": "half", "T_WAIT": "soon", "T_LEVEL": "high", "T_INNER_PORT": "http"}), parsers)
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, p.Error())
	}
	for _, want := range []string{`T_COUNT: "many" is not an integer`, `T_SMALL: "99999999999" is not an integer`,
		`T_ON: "maybe" is not true or false`, `T_RATIO: "half" is not a number`,
		`T_WAIT: "soon" is not a duration (e.g. 20s, 500ms)`, `T_LEVEL: "high": want L<n>`, `T_INNER_PORT: "http" is not an integer`} {
		if !slices.Contains(msgs, want) {
			t.Errorf("problems %q lack %q", msgs, want)
		}
	}
	if len(msgs) != 7 {
		t.Errorf("%d problems, want 7: %q", len(msgs), msgs)
	}
	if c.Count != 3 || c.Wait != 2*time.Second || c.Level != 1 || c.Inner.Port != 80 {
		t.Errorf("fields that did not parse lost their defaults: %+v", c)
	}
}

// Render writes what Parse reads back, leaves zero fields to the defaults, and lists the
// variables as env does.
func TestRenderReadsBack(t *testing.T) {
	in := sample{Name: "n=1", Count: 7, Small: -2, On: true, Ratio: 0.25, Wait: 90 * time.Second,
		Tags: []string{"x", "y"}, Level: 3, Inner: inner{Host: "h"}, Skipped: "never"}
	pairs, err := Render(&in)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"T_NAME=n=1", "T_COUNT=7", "T_SMALL=-2", "T_ON=true", "T_RATIO=0.25", "T_WAIT=1m30s",
		"T_TAGS=x;y", "T_LEVEL=L3", "T_INNER_HOST=h"}
	if !slices.Equal(pairs, want) {
		t.Fatalf("pairs %q\nwant  %q", pairs, want)
	}
	m := map[string]string{}
	for _, kv := range pairs {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	out, problems := Parse[sample](lookup(m), parsers)
	in.Skipped, in.Inner.Port = "", 80
	if len(problems) > 0 || !reflect.DeepEqual(out, in) {
		t.Fatalf("read back %+v %v\nwant %+v", out, problems, in)
	}
	var keys []string
	for _, f := range fields(reflect.ValueOf(in), "") {
		keys = append(keys, f.key)
	}
	if names := Names[sample](); !slices.Equal(keys, names) {
		t.Fatalf("Render walks %q, env reads %q", keys, names)
	}
	if _, err := Render(struct {
		M map[string]int `env:"T_MAP"`
	}{M: map[string]int{"a": 1}}); err == nil || !strings.Contains(err.Error(), "T_MAP") {
		t.Fatalf("unrenderable field: %v", err)
	}
}

func TestCheckIsOneLine(t *testing.T) {
	if Check("x") != nil || Check("x", nil) != nil {
		t.Fatal("no problem is no error")
	}
	validate := Check("prog", errors.New("B is required"), errors.New("C must be 1..2"))
	err := Check("prog", fmt.Errorf("A: %q is not an integer", "z"), validate, errors.Join(errors.New("D"), nil))
	const want = `invalid prog config: A: "z" is not an integer; B is required; C must be 1..2; D`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var inv *Invalid
	if !errors.As(err, &inv) || len(inv.Problems) != 4 {
		t.Fatalf("problems %+v", inv)
	}
}
