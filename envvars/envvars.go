// Package envvars maps a program's configuration struct to its environment variables and back,
// through the struct's caarlos0/env tags (`env:"NAME"`, `envDefault:"…"`): Parse reads the
// struct at start, Render writes one as the KEY=VALUE pairs of a child process's environment
// (devstack), Names lists the variables (the README check). Each binary's config package keeps
// its struct, its derived defaults and its Validate; only the mapping lives here.
package envvars

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Parsers read field types env has no parser of its own for, keyed by type (env's FuncMap).
type Parsers = map[reflect.Type]env.ParserFunc

// Parse reads a T from the variables lookup finds (os.LookupEnv in a binary, a map in tests).
// An empty variable counts as unset, so its envDefault applies. Every value that does not parse
// is one error naming the variable, and its field keeps the default, so that Validate does not
// report the same variable again.
func Parse[T any](lookup func(string) (string, bool), parsers Parsers) (T, []error) {
	var c T
	environment := map[string]string{}
	for _, name := range Names[T]() {
		if v, ok := lookup(name); ok {
			environment[name] = v
		}
	}
	err := env.ParseWithOptions(&c, env.Options{Environment: environment, FuncMap: parsers})
	if err == nil {
		return c, nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return c, []error{err}
	}
	// env names the Go field of a value it could not parse; the message names the variable.
	byField := map[string][]field{}
	for _, f := range fields(reflect.ValueOf(&c).Elem(), "") {
		byField[f.sf.Name] = append(byField[f.sf.Name], f)
	}
	defaults := fields(reflect.ValueOf(Defaults[T](parsers)), "")
	var problems []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) || len(byField[pe.Name]) != 1 {
			problems = append(problems, e)
			continue
		}
		f := byField[pe.Name][0]
		problems = append(problems, notParsed(f.key, environment[f.key], pe, parsers))
		for _, d := range defaults {
			if d.key == f.key {
				f.value.Set(d.value)
			}
		}
	}
	return c, problems
}

// notParsed says what a variable's value should have been: a type of the config's own (a rate
// limit, say) in its parser's words, a Go type in general ones.
func notParsed(key, value string, pe env.ParseError, parsers Parsers) error {
	t := pe.Type
	_, own := parsers[t]
	own = own || reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
	switch {
	case own:
		return fmt.Errorf("%s: %q: %w", key, value, pe.Err)
	case t == reflect.TypeFor[time.Duration]():
		return fmt.Errorf("%s: %q is not a duration (e.g. 20s, 500ms)", key, value)
	case t.Kind() == reflect.Bool:
		return fmt.Errorf("%s: %q is not true or false", key, value)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return fmt.Errorf("%s: %q is not an integer", key, value)
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return fmt.Errorf("%s: %q is not a number", key, value)
	}
	return fmt.Errorf("%s: %q: %w", key, value, pe.Err)
}

// Defaults is a T with only its envDefault tags applied. A default that does not parse is a
// programming error, which every config's tests meet first: it panics.
func Defaults[T any](parsers Parsers) T {
	var c T
	// A non-nil, empty environment: env reads the process's own for a nil one.
	if err := env.ParseWithOptions(&c, env.Options{Environment: map[string]string{}, FuncMap: parsers}); err != nil {
		panic(fmt.Sprintf("envvars: the defaults of %T: %v", c, err))
	}
	return c
}

// Names are the variables a T reads, in field order.
func Names[T any]() []string {
	var c T
	params, err := env.GetFieldParams(&c)
	if err != nil {
		panic(fmt.Sprintf("envvars: the tags of %T: %v", c, err))
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Key
	}
	return names
}

// Render writes the fields of v (a config struct) that are not zero as KEY=VALUE pairs, in
// field order, so that the program reading them back gets v, its own defaults in the zero
// fields. A value is written as the program parses it: durations as 1m30s, slices joined by
// their envSeparator (default ","), a type of the config's own through its MarshalText or
// String.
func Render(v any) ([]string, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("envvars: render %T: not a struct", v)
	}
	var pairs []string
	var errs []error
	for _, f := range fields(rv, "") {
		if f.value.IsZero() {
			continue
		}
		s, err := format(f.value, f.sf.Tag.Get("envSeparator"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.key, err))
			continue
		}
		pairs = append(pairs, f.key+"="+s)
	}
	return pairs, errors.Join(errs...)
}

func format(v reflect.Value, sep string) (string, error) {
	switch x := v.Interface().(type) {
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		return string(b), err
	case fmt.Stringer: // time.Duration among them
		return x.String(), nil
	}
	switch k := v.Kind(); {
	case k == reflect.String:
		return v.String(), nil
	case k == reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case k >= reflect.Int && k <= reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case k >= reflect.Uint && k <= reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case k == reflect.Float32 || k == reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case k == reflect.Slice:
		if sep == "" {
			sep = ","
		}
		parts := make([]string, v.Len())
		for i := range parts {
			s, err := format(v.Index(i), "")
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, sep), nil
	}
	return "", fmt.Errorf("no text form for %s", v.Type())
}

// field is one variable of a config struct: its name, its struct field and the field's value.
type field struct {
	key   string
	sf    reflect.StructField
	value reflect.Value
}

// fields walks a config struct as env does: a field tagged `env:"NAME"` is a variable, an
// untagged struct field holds more of them (with its envPrefix); `env:"-"` is skipped.
func fields(v reflect.Value, prefix string) []field {
	var out []field
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
		switch {
		case key == "-":
		case key != "":
			out = append(out, field{key: prefix + key, sf: sf, value: v.Field(i)})
		case sf.Type.Kind() == reflect.Struct:
			out = append(out, fields(v.Field(i), prefix+sf.Tag.Get("envPrefix"))...)
		}
	}
	return out
}

// Invalid is every problem of one program's configuration.
type Invalid struct {
	Program  string
	Problems []error
}

// Error is one line, so a JSON log shows every problem readably.
func (e *Invalid) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return fmt.Sprintf("invalid %s config: %s", e.Program, strings.Join(msgs, "; "))
}

func (e *Invalid) Unwrap() []error { return e.Problems }

// Check gathers problems into one *Invalid, or nil when there are none. Joined errors (another
// Invalid among them, as a Validate returns it) are flattened, so Load's parse problems and its
// Validate's read as one list under one heading.
func Check(program string, problems ...error) error {
	var flat []error
	var add func(error)
	add = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				add(e)
			}
			return
		}
		if err != nil {
			flat = append(flat, err)
		}
	}
	for _, p := range problems {
		add(p)
	}
	if len(flat) == 0 {
		return nil
	}
	return &Invalid{Program: program, Problems: flat}
}
